"""`lgvit train --task detect|segment`, and `lgvit eval` and `lgvit predict` of its checkpoints: a short run
learns (against the untrained model on the same val scenes), resume equality for a detector, the report, the
errors."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_train import StopAfter

from lgvit.cli import main
from lgvit.data import FashionScenes, SceneConfig
from lgvit.training.checkpoint import load_checkpoint, seed_all
from lgvit.training.config import TrainConfig, parse_model_kwargs
from lgvit.training.distributed import Dist
from lgvit.training.engine import StepOptions
from lgvit.training.loop import train, val_loader
from lgvit.training.tasks import make_task

TINY = "embed_dim=16 depths=(1,1,1) num_heads=(1,2,4)"  # a 3-stage GC ViT of 0.2 M parameters
FAST = dict(
    model_kwargs=TINY,
    fpn=32,
    scene_size=64,
    val_scenes=16,
    batch_size=8,
    threads=1,
    lr=3e-3,
    warmup_epochs=0.2,
    drop_path=0.0,
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _untrained(cfg: TrainConfig) -> dict:
    """The metrics of the model the run starts from (same seed, same val scenes), before any step."""
    task = make_task(cfg)
    data = task.data()
    seed_all(cfg.seed)
    overrides = {**parse_model_kwargs(cfg.model_kwargs), "num_classes": 11, "in_chans": 1, "drop_path_rate": 0.0}
    model = task.model(overrides, data)
    loader = val_loader(data.val, 16, 0, Dist(), task.collate(data))
    return task.evaluate(model, loader, 11, StepOptions(torch.device("cpu")), Dist())


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory: pytest.TempPathFactory):
    cfg = TrainConfig(
        task="detect",
        detector="retinanet",
        output=str(tmp_path_factory.mktemp("det")),
        train_scenes=64,
        epochs=2,
        ema_decay=0.9,
        **FAST,
    )
    return cfg, train(cfg, command="lgvit train --task detect (test)")


def test_a_short_detection_run_beats_the_untrained_detector_and_reports(detection_run) -> None:
    cfg, result = detection_run
    before = _untrained(cfg)
    history, out = result.history, result.output
    assert result.completed and [r["epoch"] for r in history] == [1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.best["map50"] == max(max(r["val_map50"], r["ema_map50"]) for r in history)
    assert result.best["map50"] > before["map50"] + 2  # measured: 0.0 untrained, 16-18 after 1-2 epochs
    assert result.best["map"] > before["map"]
    for name in ("last.pt", "best.pt", "metrics.csv", "metrics.jsonl", "curves.png", "predictions.png"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "![predictions](predictions.png)" in summary and f"**{result.best['map50']:.2f}**" in summary
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_map50"] for r in rows] == [r["val_map50"] for r in history]


def test_eval_of_the_best_detection_checkpoint_gives_its_metrics(detection_run, tmp_path: Path, capsys) -> None:
    _, result = detection_run
    ckpt = str(result.output / "best.pt")
    assert main(["eval", "--checkpoint", ckpt, "--output", str(tmp_path), "--batch-size", "16"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["task"] == "detect" and report["images"] == 16
    for k in ("map", "map50", "map75", "mar100"):
        assert report[k] == pytest.approx(result.best[k], abs=1e-6), k
    assert f"map50 {report['map50']:.2f}" in printed and (tmp_path / "eval_predictions.png").is_file()
    scene = tmp_path / "scene.png"
    image, target = FashionScenes(split="val", config=SceneConfig(min_side=32, max_side=64))[0]
    Image.fromarray((image[0] * 255).round().byte().numpy()).save(scene)
    assert (
        main(["predict", str(scene), str(tmp_path / "none.png"), "--checkpoint", ckpt, "--output", str(tmp_path)]) == 2
    )
    captured = capsys.readouterr()
    assert f"{scene}: " in captured.out and "none.png" in captured.err and (tmp_path / "scene_pred.png").is_file()


def test_a_short_segmentation_run_beats_the_untrained_segmenter(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = TrainConfig(
        task="segment", output=str(tmp_path), train_scenes=64, epochs=2, ema_decay=0.0, val_every=2, **FAST
    )
    before = _untrained(cfg)
    result = train(cfg)
    last = result.history[-1]  # measured: mIoU 4.1 and pixel accuracy 28% untrained, 9.8 and 55% after 2 epochs
    assert "val_miou" not in result.history[0] and (tmp_path / "curves.png").is_file()  # --val-every 2
    assert last["val_miou"] > before["miou"] + 2 and last["val_pixel_acc"] > before["pixel_acc"]
    assert last["val_loss"] < before["loss"]
    assert (tmp_path / "predictions.png").is_file() and result.best["miou"] == max(
        r["val_miou"] for r in result.history if "val_miou" in r
    )
    scene = tmp_path / "scene.png"
    Image.fromarray((FashionScenes(split="val")[0][0][0] * 255).round().byte().numpy()).save(scene)
    assert main(["predict", str(scene), "--checkpoint", str(tmp_path / "best.pt")]) == 0
    assert "background" in capsys.readouterr().out and (tmp_path / "predict" / "scene_pred.png").is_file()


def test_a_stopped_and_resumed_detection_run_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    cfg = TrainConfig(
        task="detect", train_scenes=16, epochs=2, ema_decay=0.9, **{**FAST, "val_scenes": 4, "batch_size": 4}
    )
    straight = train(replace(cfg, output=str(tmp_path / "a")))
    stopped = train(replace(cfg, output=str(tmp_path / "b")), stop=StopAfter(2))  # 2 of epoch 1's 4 steps
    assert not stopped.completed
    assert (load_checkpoint(tmp_path / "b" / "last.pt")["epoch"], stopped.history) == (0, [])
    resumed = train(replace(cfg, output=str(tmp_path / "b"), resume="auto"))
    assert resumed.completed
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_map"] == b["val_map"] and a["ema_map"] == b["ema_map"]
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    with pytest.raises(ValueError, match="--detector fasterrcnn, not retinanet"):
        train(replace(cfg, output=str(tmp_path / "b"), detector="retinanet", resume="auto"))


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = TrainConfig(task="detect", output=str(tmp_path), train_scenes=8, epochs=1, **FAST)
    with pytest.raises(ValueError, match="--detector 'yolo' is not one lgvit trains: choose one of fasterrcnn"):
        train(replace(cfg, detector="yolo"))
    with pytest.raises(ValueError, match="--task 'pose' is not a task lgvit trains: choose one of classify"):
        train(replace(cfg, task="pose"))
    with pytest.raises(ValueError, match="deit_fmnist is a single-scale model"):
        train(replace(cfg, model="deit_fmnist", model_kwargs=None))
    with pytest.raises(ValueError, match="--mixup and --cutmix mix classification labels"):
        train(replace(cfg, mixup=0.2))
    with pytest.raises(ValueError, match="FCOS's head normalises with GroupNorm"):
        train(replace(cfg, detector="fcos"))
    with pytest.raises(ValueError, match="at least 28"):
        train(replace(cfg, scene_size=20))
    with pytest.raises(SystemExit):
        main(["train", "--task", "detect", "--detector", "yolo"])
    assert "invalid choice: 'yolo'" in capsys.readouterr().err
    assert main(["train", "--task", "segment", "--data", str(tmp_path), "--output", str(tmp_path / "r")]) == 2
    assert "neither Fashion-MNIST IDX files (for the scenes) nor a dense folder" in capsys.readouterr().err
