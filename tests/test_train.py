"""`lgvit train / eval / predict`: learning, resume equality, DDP sync, reports and clear errors."""

import errno
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from test_data import SHAPES, make_idx_dir, make_image_folder, pattern_images

from lgvit import CheckpointError, create_model
from lgvit.cli import main
from lgvit.data import AugmentConfig, build_data
from lgvit.tools.flops import count_macs
from lgvit.training.checkpoint import load_checkpoint
from lgvit.training.config import TrainConfig
from lgvit.training.distributed import Dist
from lgvit.training.ema import ModelEma
from lgvit.training.engine import StepOptions, evaluate
from lgvit.training.loop import SignalStop, train, train_sampler

FAST = dict(batch_size=32, threads=1, workers=0, lr=3e-3, warmup_epochs=0.2, ema_decay=0.9, drop_path=0.0)


@pytest.fixture(scope="module")
def shapes_idx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_idx_dir(tmp_path_factory.mktemp("idx") / "shapes", 256, 128)


@pytest.fixture(scope="module")
def trained(shapes_idx: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 3-epoch run on the generated IDX files (shared by the eval and predict tests)."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(data=str(shapes_idx), output=str(out), epochs=3, **FAST)
    return train(cfg, command="lgvit train (test)")


def test_training_learns_and_reports(trained) -> None:
    history, out = trained.history, trained.output
    assert trained.completed and [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["val_top1"] >= 90  # 4 classes: chance is 25%
    assert history[-1]["train_loss"] < history[0]["train_loss"] and history[-1]["train_acc"] > history[0]["train_acc"]
    assert trained.best["top1"] == max(max(r["val_top1"], r["ema_top1"]) for r in history)
    for name in ("last.pt", "best.pt", "metrics.csv", "metrics.jsonl", "curves.png", "confusion.png", "summary.md"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_top1"] for r in rows] == [r["val_top1"] for r in history]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert [e.value for e in events.Scalars("val_top1")] == pytest.approx([r["val_top1"] for r in history])
    summary = (out / "summary.md").read_text()
    assert "lgvit train (test)" in summary and f"{trained.best['top1']:.2f}%" in summary and "vertical" in summary
    assert all(r["epoch_seconds"] > 0 and r["val_seconds"] > 0 for r in history)
    minutes = sum(r["epoch_seconds"] for r in history) / 60, sum(r["val_seconds"] for r in history) / 60
    assert f"training {minutes[0]:.1f} min + validation {minutes[1]:.1f} min" in summary


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


class StopAfter:
    """Asks to stop after `n` polls (optimizer steps), like a SIGINT would."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self) -> bool:
        self.n -= 1
        return self.n <= 0


SPEED_OPTIONS = dict(amp="bf16", channels_last=True, val_every=2)  # issue 19's speed flags (compile aside)


@pytest.mark.parametrize(
    ("stop_steps", "speed"),
    [(3, {}), (7, {}), (3, SPEED_OPTIONS)],  # mid-epoch and at the end of epoch 1 (7 batches of 32)
    ids=["mid-epoch", "epoch-end", "mid-epoch-speed-options"],
)
def test_resume_equals_uninterrupted(shapes_idx: Path, tmp_path: Path, stop_steps: int, speed: dict) -> None:
    cfg = TrainConfig(
        data=str(shapes_idx),
        epochs=2,
        augment="trivial",
        erase_prob=0.5,
        mixup=0.2,
        cutmix=1.0,
        val_split=32,
        **FAST,
        **speed,
    )  # the batched augmentation (the default for IDX data), a held-out validation split and the speed options
    straight = train(replace(cfg, output=str(tmp_path / "a")))
    stopped = train(replace(cfg, output=str(tmp_path / "b")), stop=StopAfter(stop_steps))
    assert not stopped.completed
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")  # weights_only=True
    assert (ckpt["epoch"], ckpt["step"]) == (0, stop_steps)  # a stop on the last batch is saved before evaluation
    resumed = train(replace(cfg, output=str(tmp_path / "b"), resume="auto"))
    assert resumed.completed
    keys = ("train_loss", "val_loss", "ema_top1")
    assert [[r.get(k) for k in keys] for r in straight.history] == [[r.get(k) for k in keys] for r in resumed.history]
    assert ("val_loss" in straight.history[0]) == (cfg.val_every == 1)  # --val-every 2 skips epoch 1's validation
    final_a, final_b = _state(straight.model), _state(resumed.model)
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_image_folder_training_counts_corrupt(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "tree", per_class=8)
    cfg = TrainConfig(data=str(root), output=str(tmp_path / "run"), epochs=1, img_size=32, in_chans=3, **FAST)
    with pytest.warns(UserWarning, match="broken.jpg"):
        result = train(replace(cfg, batch_size=8, augment="randaug"))
    assert result.completed and 0 <= result.history[0]["val_top1"] <= 100
    assert "1 unreadable files skipped" in (tmp_path / "run" / "summary.md").read_text()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["classes"] == sorted(SHAPES)


def _ddp_worker(rank: int, ports: list[int], data: str, out: str) -> None:
    """Rank `rank` of: one epoch straight (out/a), the same stopped after 2 of its 4 steps, then resumed (out/b)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1")
    cfg = TrainConfig(data=data, epochs=1, **{**FAST, "ema_decay": 0.0})
    ds = build_data(data, 28, 1).train
    indices = list(train_sampler(ds, Dist(rank, 2), cfg.seed, 0))
    runs = {}
    for port, (name, folder, stop, resume) in zip(
        ports,
        (("straight", "a", None, None), ("stopped", "b", StopAfter(2), None), ("resumed", "b", None, "auto")),
        strict=True,
    ):
        os.environ["MASTER_PORT"] = str(port)
        result = train(replace(cfg, output=str(Path(out) / folder), resume=resume), stop=stop)
        runs[name] = {"state": result.model.state_dict(), "history": result.history}
    torch.save({"indices": indices, **runs}, Path(out) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_shards_data_syncs_weights_and_resumes_every_rank(shapes_idx: Path, tmp_path: Path) -> None:
    ports = [_free_port() for _ in range(3)]
    mp.spawn(_ddp_worker, args=(ports, str(shapes_idx), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(r0["indices"]) == len(r1["indices"]) == 128 and not set(r0["indices"]) & set(r1["indices"])
    straight = r0["straight"]["state"]
    assert all(torch.equal(straight[k], r1["straight"]["state"][k]) for k in straight)
    saved = load_checkpoint(tmp_path / "a" / "last.pt")  # written by rank 0 only
    assert all(torch.equal(saved["model"][k], straight[k]) for k in saved["model"])
    assert saved["world"] == 2 and len(saved["rng"]) == 2 and len(saved["history"]) == 1
    resumed = r0["resumed"]
    assert all(torch.equal(resumed["state"][k], straight[k]) for k in straight)
    # the interrupted epoch's train loss and accuracy too: every rank's partial sums were saved and restored
    (a,), (b,) = r0["straight"]["history"], resumed["history"]
    assert (a["train_loss"], a["train_acc"]) == (b["train_loss"], b["train_acc"])


def test_eval_command(trained, shapes_idx: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = trained.output / "best.pt"
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(shapes_idx), "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert abs(report["top1"] - trained.best["top1"]) < 1e-9 and report["images"] == 128
    assert report["loss"] == pytest.approx(trained.best["loss"], rel=1e-5)  # normalised by the train split's stats
    assert f"top-1 {report['top1']:.2f}%" in out and "| square |" in out
    assert (tmp_path / "eval_confusion.png").stat().st_size > 1000


def test_predict_command(trained, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images, labels = pattern_images(4, size=60, seed=5)
    paths = []
    for i, (arr, mode) in enumerate(zip(images, ("RGB", "L", "RGBA", "P"), strict=True)):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(arr).convert(mode).save(paths[-1])
    code = main(["predict", "--checkpoint", str(trained.output / "best.pt"), "--topk", "2", *map(str, paths)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 4
    for line, path in zip(lines, paths, strict=True):
        head, preds = line.split(": ", 1)
        assert head == str(path) and len(preds.split(", ")) == 2 and preds.split(" ")[0] in SHAPES
    predicted = [line.split(": ", 1)[1].split(" ")[0] for line in lines]
    assert sum(p == SHAPES[label] for p, label in zip(predicted, labels, strict=True)) >= 3


def test_cli_errors(trained, shapes_idx: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["train", "--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--augment", "autoaug"])
    best = str(trained.output / "best.pt")
    args = ["--data", str(shapes_idx), "--output", str(trained.output), "--resume", best]
    assert main(["train", "--model", "gcvit_xxtiny", *args]) == 2
    assert "resume with the same --model" in capsys.readouterr().err
    other = make_image_folder(tmp_path / "tree", per_class=1, corrupt=False)
    (other / "val" / "top").rename(other / "val" / "zigzag")
    (other / "train" / "top").rename(other / "train" / "zigzag")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["eval", "--checkpoint", best, "--data", str(other)]) == 2
    assert "same classes" in capsys.readouterr().err
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "plain.pt")
    assert main(["predict", "--checkpoint", str(tmp_path / "plain.pt"), best]) == 2
    assert "not an `lgvit train` checkpoint" in capsys.readouterr().err
    assert main(["predict", "--pretrained", best, "--model", "gcvit_fmnist", best]) == 2  # 4 classes, not 10
    assert "wrong shape (2): head.fc.bias" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="does not fit"):
        from lgvit.tools.inference import from_checkpoint

        ckpt = load_checkpoint(best)
        ckpt["model"].pop("head.fc.weight")
        if ckpt["ema"] is not None:  # best.pt may hold the EMA's weights (best.weights == 'ema')
            ckpt["ema"]["module"].pop("head.fc.weight")
        torch.save(ckpt, tmp_path / "cut.pt")
        from_checkpoint(str(tmp_path / "cut.pt"))


@pytest.mark.parametrize("name", ["swin_fmnist", "maxvit_fmnist", "deit_fmnist", "localvit_fmnist"])
def test_small_family_configs_learn_at_equal_compute(name: str, shapes_idx: Path, tmp_path: Path) -> None:
    macs = count_macs(create_model(name), (1, 28, 28))
    assert 0.8 < macs / count_macs(create_model("gcvit_fmnist"), (1, 28, 28)) < 1.2
    result = train(TrainConfig(model=name, data=str(shapes_idx), output=str(tmp_path), epochs=4, **FAST))
    first, last = result.history[0], result.history[-1]
    # the loss, not val accuracy: 16 steps barely move MaxViT's TF-momentum (0.01) BatchNorm statistics,
    # and a patch-4 DeiT needs more than 1000 images to beat chance
    assert last["train_loss"] < 0.95 * first["train_loss"]


def test_model_kwargs_reach_the_model_and_its_checkpoint(shapes_idx: Path, tmp_path: Path) -> None:
    kwargs = "embed_dim=16 img_size=32"  # a native size override also sets the data's size
    cfg = TrainConfig(data=str(shapes_idx), output=str(tmp_path), epochs=1, model_kwargs=kwargs, **FAST)
    result = train(cfg)
    assert result.model.stem.conv1.out_channels == 16
    from lgvit.tools.inference import from_checkpoint

    loaded = from_checkpoint(str(tmp_path / "best.pt"))
    assert (loaded.model.stem.conv1.out_channels, loaded.img_size) == (16, 32)
    with pytest.raises(ValueError, match="resume with the same"):
        train(replace(cfg, model_kwargs="embed_dim=24", resume="auto"))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        train(replace(cfg, model_kwargs="embed_dim"))


def test_train_takes_its_ema_evaluation_and_data_as_parameters(shapes_idx: Path, tmp_path: Path) -> None:
    data = build_data(str(shapes_idx), 32, 3, AugmentConfig())  # not gcvit_fmnist's native 28 px and 1 channel
    data.train = torch.utils.data.Subset(data.train, range(64))  # 2 batches of 32, not the folder's 8
    data.classes = ["a", "b", "c", "d"]
    emas, calls = [], []

    def make_ema(model: torch.nn.Module, decay: float) -> ModelEma:
        emas.append(ModelEma(model, decay))
        return emas[-1]

    def evaluate_and_record(model, loader, num_classes, opts, d) -> dict:
        calls.append((model, evaluate(model, loader, num_classes, opts, d)))
        return calls[-1][1]

    cfg = TrainConfig(data=str(tmp_path / "unread"), output=str(tmp_path / "run"), epochs=2, **FAST)
    result = train(cfg, ema=make_ema, evaluate=evaluate_and_record, data=data)
    assert len(emas) == 1 and emas[0].decay == cfg.ema_decay and emas[0].updates == 4  # 2 epochs of 2 steps
    assert [m is emas[0].module for m, _ in calls] == [False, True, False, True]  # model, then EMA, each epoch
    assert [r["val_top1"] for r in result.history] == [calls[0][1]["top1"], calls[2][1]["top1"]]
    assert [r["ema_top1"] for r in result.history] == [calls[1][1]["top1"], calls[3][1]["top1"]]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["classes"] == ["a", "b", "c", "d"] and ckpt["data"]["img_size"] == 32
    assert ckpt["model_overrides"]["in_chans"] == 3 and ckpt["ema"]["updates"] == 4


def test_signal_requests_a_stop() -> None:
    with SignalStop() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_ema_averages_batchnorm_statistics_and_copies_counters() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    ema = ModelEma(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    model.train()(torch.randn(8, 1, 6, 6) * 3 + 2)  # moves the running statistics, counts a batch
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    d = min(0.9, 2 / 11)  # the warm-up decay of the first update
    current = model.state_dict()
    for key, value in ema.module.state_dict().items():
        if value.is_floating_point():
            expected = before[key] + (1 - d) * (current[key] - before[key])
            torch.testing.assert_close(value, expected, msg=key)
        else:
            assert torch.equal(value, current[key]), key
    assert not torch.allclose(ema.module[1].running_mean, current["1.running_mean"])


# --- bad input and faults (issue 15): each fails on the code before it --------------------------------------


class Poisoned(torch.utils.data.Dataset):
    """`ds` with NaN images at `bad` indices, or everywhere once `everywhere` is set."""

    def __init__(self, ds: torch.utils.data.Dataset, bad: set[int]) -> None:
        self.ds, self.bad, self.everywhere = ds, bad, False

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        x, y = self.ds[i]
        return (x * float("nan") if self.everywhere or i in self.bad else x), y


def _small_bundle(shapes_idx: Path, n_train: int = 128, bad: set[int] = frozenset()):
    data = build_data(str(shapes_idx), 28, 1, AugmentConfig())
    data.train = Poisoned(torch.utils.data.Subset(data.train, range(n_train)), set(bad))
    data.val = torch.utils.data.Subset(data.val, range(64))
    return data


def _finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_model_kwargs_may_not_contradict_the_data_or_a_flag(shapes_idx: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(data=str(shapes_idx), output=str(tmp_path / "run"), epochs=1, **FAST)
    with pytest.raises(ValueError, match=r"num_classes=10 conflicts with num_classes=4 .*--num-classes 10"):
        train(replace(cfg, model_kwargs="num_classes=10"))
    assert not (tmp_path / "run").exists()  # refused before the model was built
    with pytest.raises(ValueError, match=r"in_chans=3 conflicts with in_chans=1 .*--in-chans 3"):  # before the data
        train(replace(cfg, data=str(tmp_path / "not-read"), model_kwargs="in_chans=3"))
    with pytest.raises(ValueError, match=r"drop_path_rate=0.2 conflicts with --drop-path 0.0"):
        train(replace(cfg, data=str(tmp_path / "not-read"), model_kwargs="drop_path_rate=0.2"))
    with pytest.raises(ValueError, match=r"num_classes=5 conflicts with --num-classes 6"):
        train(replace(cfg, num_classes=6, model_kwargs="num_classes=5"))
    same = train(replace(cfg, model_kwargs="num_classes=4 in_chans=1"), data=_small_bundle(shapes_idx, 64))
    assert same.completed and same.model.num_classes == 4


@pytest.mark.parametrize("amp", ["none", "fp16"])  # fp16: beside the GradScaler, which skips inf gradients itself
def test_a_nan_batch_is_skipped_and_the_weights_stay_finite(shapes_idx: Path, tmp_path: Path, amp: str) -> None:
    data = _small_bundle(shapes_idx, bad={5})  # one NaN image: one of the 4 batches per epoch has a NaN loss
    cfg = TrainConfig(output=str(tmp_path), epochs=2, amp=amp, **FAST)
    result = train(cfg, data=data)
    assert result.completed and _finite(result.model)
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in result.history)
    assert load_checkpoint(tmp_path / "last.pt")["ema"]["updates"] == 6  # 8 steps, 2 skipped


def test_a_diverged_run_stops_and_keeps_the_last_good_checkpoint(
    shapes_idx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = _small_bundle(shapes_idx)
    calls = []

    def evaluate_then_poison(model, loader, num_classes, opts, d) -> dict:  # from epoch 2 on, every loss is NaN
        calls.append(1)
        data.train.everywhere = len(calls) >= 2  # after the model's and the EMA's evaluation of epoch 1
        return evaluate(model, loader, num_classes, opts, d)

    cfg = TrainConfig(output=str(tmp_path / "run"), epochs=3, **FAST)
    with pytest.raises(RuntimeError, match=r"3 optimizer steps in a row \(epoch 2, batch 3 of 4.*last good .*--lr"):
        train(cfg, evaluate=evaluate_then_poison, data=data)
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(tmp_path / "run" / name)
        assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    data.train.everywhere = True  # and through the command line: exit 2, one line naming the step and the fix
    monkeypatch.setattr("lgvit.training.loop.train_data", lambda cfg: data)
    assert main(["train", "--output", str(tmp_path / "cli"), "--batch-size", "32", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "lgvit train: error: the training loss" in err and "(epoch 1, batch 3 of 4" in err
    assert "no checkpoint was saved" in err and "--lr (this run: 0.003)" in err and "Traceback" not in err


def test_a_huge_learning_rate_stops_the_run_without_a_nan_checkpoint(shapes_idx: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(output=str(tmp_path), epochs=2, **{**FAST, "lr": 1e9})  # used to save an all-NaN best.pt
    with pytest.raises(RuntimeError, match=r"epoch 1, batch \d of 4.*no checkpoint was saved.*1e\+09"):
        train(cfg, data=_small_bundle(shapes_idx))
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "last.pt").exists()


def test_a_nan_evaluation_never_becomes_best(shapes_idx: Path, tmp_path: Path) -> None:
    calls = []

    def nan_in_epoch_2(model, loader, num_classes, opts, d) -> dict:
        calls.append(1)
        result = evaluate(model, loader, num_classes, opts, d)
        return result | {"loss": float("nan"), "top1": 100.0} if len(calls) == 2 else result

    cfg = TrainConfig(output=str(tmp_path), epochs=2, **{**FAST, "ema_decay": 0.0})
    result = train(cfg, evaluate=nan_in_epoch_2, data=_small_bundle(shapes_idx, 64))
    assert result.history[1]["val_top1"] == 100.0 and result.best["epoch"] == 1
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_evaluate_checks_the_head_against_the_classes() -> None:
    x, y = torch.randn(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    loader = [(x, y)]
    for width in (6, 3):  # an always-wrong 6-wide head predicting class 5 used to count as 100% right
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, width))
        torch.nn.init.zeros_(model[1].weight)
        with torch.no_grad():
            model[1].bias.copy_(torch.arange(width, dtype=torch.float))
        with pytest.raises(ValueError, match=rf"outputs \({width},\) scores per image but the data has 4 classes"):
            evaluate(model, loader, 4, StepOptions(torch.device("cpu")), Dist())


def test_a_larger_head_than_the_classes_trains_and_reports(shapes_idx: Path, tmp_path: Path) -> None:
    result = train(TrainConfig(output=str(tmp_path), epochs=1, num_classes=6, **FAST), data=_small_bundle(shapes_idx))
    assert result.completed and result.best["confusion"].shape == (6, 6) and len(result.best["per_class"]) == 6
    assert "| square |" in (tmp_path / "summary.md").read_text()


def test_output_that_is_a_file_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("x")
    cfg = TrainConfig(data=str(tmp_path / "not-read"), output=str(tmp_path / "file"), **FAST)
    with pytest.raises(ValueError, match=r"--output .*file is a file, not a folder"):
        train(cfg)
    with pytest.raises(ValueError, match=r"file is a file, so no folder can be made there"):
        train(replace(cfg, output=str(tmp_path / "file" / "run")))
    assert main(["train", "--data", str(tmp_path / "not-read"), "--output", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Files cannot be created in `folder`, as in a read-only folder (a chmod would not stop root)."""
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)


def test_a_read_only_output_is_refused_before_any_work(
    shapes_idx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluations = []

    def counting(*args) -> dict:
        evaluations.append(1)
        return evaluate(*args)

    out = tmp_path / "run"
    out.mkdir()
    _read_only(monkeypatch, out)
    cfg = TrainConfig(data=str(shapes_idx), output=str(out), epochs=1, **FAST)
    with pytest.raises(ValueError, match=rf"cannot write in {out} \(Permission denied\).*another --output"):
        train(cfg, evaluate=counting)  # used to train an epoch, then fail at the first save
    with pytest.raises(ValueError, match="cannot write in"):  # a resume too, before it reads last.pt
        train(replace(cfg, resume="auto"), evaluate=counting)
    _read_only(monkeypatch, tmp_path)  # a run folder still to be made in a read-only parent
    with pytest.raises(ValueError, match=rf"cannot write in {tmp_path} "):
        train(replace(cfg, output=str(tmp_path / "new")), evaluate=counting)
    assert not evaluations


def test_a_full_disk_is_a_clear_error(
    shapes_idx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def full(payload: dict, path: Path) -> None:
        raise OSError(errno.ENOSPC, f"cannot write {path}: no space left on device (the disk may be full)")

    monkeypatch.setattr("lgvit.training.loop.save_atomic", full)
    monkeypatch.setattr("lgvit.training.loop.train_data", lambda cfg: _small_bundle(shapes_idx, 64))
    args = ["train", "--output", str(tmp_path), "--epochs", "1", "--batch-size", "32", "--threads", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"lgvit train: error: cannot write {tmp_path / 'last.pt'}: no space left" in err
    with pytest.raises(OSError, match="disk may be full"):
        main([*args, "--debug"])


def test_a_run_removes_the_temp_files_a_killed_write_left(shapes_idx: Path, tmp_path: Path) -> None:
    stale = tmp_path / f".last.pt.{'ab' * 16}.tmp"  # what a kill during a checkpoint write leaves
    stale.write_bytes(b"\0" * 1024)
    kept = tmp_path / ".notes.tmp"  # not an lgvit temp name: left alone
    kept.write_text("mine")
    result = train(TrainConfig(output=str(tmp_path), epochs=1, **FAST), data=_small_bundle(shapes_idx, 64))
    assert result.completed and not stale.exists() and kept.read_text() == "mine"
    assert not list(tmp_path.glob(".*.*.tmp"))


def test_compile_flag_compiles_the_model_with_dynamic_shapes(
    shapes_idx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the last, smaller batch and the evaluation batches must reuse the graph: dynamic=True, not a recompile each
    calls = []

    def record(model, **options):
        calls.append(options)
        return model  # run eagerly: the wiring is under test here, not the compiler

    monkeypatch.setattr(torch, "compile", record)
    result = train(TrainConfig(output=str(tmp_path), epochs=1, compile=True, **FAST), data=_small_bundle(shapes_idx))
    assert result.completed and calls == [{"dynamic": True}]


def test_a_compiled_training_step_gives_the_eager_losses(shapes_idx: Path, tmp_path: Path) -> None:
    """`--compile` for real (inductor, dynamic shapes), on a one-stage GC ViT (a local and a global-query block):
    an epoch from the same seed gives eager's train and val losses and weights, within float rounding. Its cold
    compile, training and evaluation graphs, takes about 2 minutes of one core."""
    from torch._dynamo.utils import counters

    kwargs = "embed_dim=8 depths=(2,) num_heads=(1,) window_sizes=(7,)"
    cfg = TrainConfig(model_kwargs=kwargs, epochs=1, **FAST)
    eager = train(replace(cfg, output=str(tmp_path / "eager")), data=_small_bundle(shapes_idx, 64))
    torch._dynamo.reset()
    counters.clear()
    compiled = train(replace(cfg, output=str(tmp_path / "compiled"), compile=True), data=_small_bundle(shapes_idx, 64))
    assert counters["stats"]["unique_graphs"] >= 1  # inductor compiled it: it did not fall back to eager
    assert compiled.completed
    for key in ("train_loss", "val_loss", "ema_loss"):
        assert compiled.history[0][key] == pytest.approx(eager.history[0][key], rel=1e-4), key
    a, b = _state(eager.model), _state(compiled.model)
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


_FAULTS_PER_ALLOCATION = """
import resource, sys, torch
from lgvit.training.distributed import hold_freed_memory
if sys.argv[1] == "hold":
    assert hold_freed_memory()
for _ in range(3):  # the heap settles within two allocations
    torch.empty(16 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(16 << 20).fill_(1.0)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10 / ((64 << 20) // resource.getpagesize()))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_new_page_faults():
    """After hold_freed_memory (which `lgvit train` calls on the CPU), a freed 64 MB tensor's memory is reused
    by the next one. By glibc's defaults it is unmapped on free, and each new one faults in all its pages. Each
    is measured in a fresh interpreter: a long-lived test worker's fragmented heap can place a small block in
    the freed one and make a few allocations fault anyway."""

    def faults(mode: str) -> float:  # page faults per allocation, as a share of its pages
        cmd, root = [sys.executable, "-c", _FAULTS_PER_ALLOCATION, mode], Path(__file__).resolve().parents[1]
        run = subprocess.run(cmd, cwd=root, capture_output=True, text=True)  # lgvit importable from any cwd
        assert run.returncode == 0, run.stderr
        return float(run.stdout)

    assert faults("default") > 0.9
    assert faults("hold") < 0.35  # a fresh heap still faults in one allocation in ten, now and then
