"""Loading weights: real trainers' files load without running code, bad files get clear errors, saved files
carry their config, preprocessing and class names, and the hub fails fast when it cannot be reached."""

import argparse
import json
import os
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_
from PIL import Image

import lgvit
from lgvit import CheckpointError
from lgvit.cli import main
from lgvit.registry import FAMILIES
from lgvit.tools.inference import from_checkpoint
from lgvit.training.checkpoint import FORMAT, load_checkpoint

SMALL = {
    "gcvit_xxtiny": (dict(depths=(1, 1, 1, 1)), 64),
    "swin_tiny": (dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)), 64),
    "localvit_tiny": (dict(depth=1, embed_dim=64, num_heads=2), 224),
}


def _model(name: str, seed: int = 0) -> torch.nn.Module:
    return randomize_(lgvit.create_model(name, **SMALL[name][0]), seed).eval()


def _official(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights in its family's reference (official) layout, through the converter."""
    return FAMILIES[model.spec.family].converter.to_official(model.state_dict())


def _optimizer_state(model: torch.nn.Module) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 32, 32) if model.spec.family != "vit" else torch.randn(1, 3, 224, 224)).sum().backward()
    opt.step()
    model.zero_grad()
    return opt.state_dict()


def _timm_saver_file(model: torch.nn.Module, ema: torch.nn.Module) -> dict:
    """What timm's CheckpointSaver (NVlabs GCVit train.py) writes, EMA on."""
    args = argparse.Namespace(
        model="gcvit_xxtiny", num_classes=1000, input_size=None, mean=None, std=None, lr=None, lr_base=0.1,
        opt="adamw", opt_betas=None, sched="cosine", decay_milestones=[90, 180], scale=[0.08, 1.0],
        ratio=(0.75, 1.3333333333333333), model_ema=True, model_ema_decay=0.9998, amp=True, device="cuda:0",
    )  # fmt: skip
    return {
        "epoch": 299,
        "arch": "gcvit_xxtiny",
        "state_dict": _official(model),
        "optimizer": _optimizer_state(_model("gcvit_xxtiny", 7)),
        "version": 2,
        "args": args,
        "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "metric": 81.25,
        "state_dict_ema": _official(ema),
    }


def _deit_main_file(model: torch.nn.Module, ema: torch.nn.Module) -> dict:
    """What DeiT's main.py (LocalViT's trainer) writes, EMA on."""
    args = argparse.Namespace(
        batch_size=256, epochs=300, model="localvit_tiny_mlp4_act3_r192", input_size=224, drop_path=0.1,
        model_ema=True, opt_betas=None, lr=5e-4, lr_noise=None, mixup=0.8, cutmix_minmax=None, device="cuda",
        data_path="/datasets/imagenet", distributed=True, world_size=8,
    )  # fmt: skip
    sched = {"base_values": [5e-4], "t_initial": 300, "warmup_t": 5, "noise_range_t": None, "t_in_epochs": True}
    return {
        "model": _official(model),
        "optimizer": _optimizer_state(_model("localvit_tiny", 7)),
        "lr_scheduler": sched,
        "epoch": 299,
        "model_ema": _official(ema),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        "args": args,
    }


def _logits(model: torch.nn.Module) -> torch.Tensor:
    size = SMALL[model.spec.name][1]
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize(("name", "build"), [("gcvit_xxtiny", _timm_saver_file), ("localvit_tiny", _deit_main_file)])
def test_official_trainer_files_load_raw_or_ema(tmp_path: Path, name: str, build) -> None:
    raw, ema = _model(name, 0), _model(name, 1)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(build(raw, ema), path)
    overrides = SMALL[name][0]
    loaded = lgvit.create_model(name, pretrained=str(path), **overrides)
    assert torch.equal(_logits(loaded), _logits(raw))
    loaded_ema = lgvit.create_model(name, pretrained=str(path), pretrained_ema=True, **overrides)
    assert torch.equal(_logits(loaded_ema), _logits(ema))
    fresh = lgvit.create_model(name, **overrides)
    assert lgvit.load_weights(fresh, path, ema=True).format == "official"
    assert torch.equal(_logits(fresh), _logits(ema))


def test_swin_files_load_and_its_training_config_is_refused_by_name(tmp_path: Path, monkeypatch) -> None:
    name, overrides = "swin_tiny", SMALL["swin_tiny"][0]
    raw = _model(name)
    released = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": _official(raw)}, released)  # the released files: the weights only
    assert torch.equal(_logits(lgvit.create_model(name, pretrained=str(released), **overrides)), _logits(raw))
    with pytest.raises(CheckpointError, match=r"no EMA weights.*\['model'\]"):
        lgvit.create_model(name, pretrained=str(released), pretrained_ema=True, **overrides)

    # Swin's main.py also pickles its yacs CfgNode (a dict subclass): stand in for yacs to write one
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    node = type("CfgNode", (dict,), {"__module__": "yacs.config"})
    config.CfgNode = node
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", config)
    cfg = node(MODEL=node(TYPE="swin", NAME="swin_tiny_patch4_window7_224"), OUTPUT="output")
    trained = tmp_path / "ckpt_epoch_299.pth"
    torch.save({"model": _official(raw), "optimizer": {}, "max_accuracy": 81.2, "epoch": 299, "config": cfg}, trained)
    with pytest.raises(CheckpointError, match=r"refused.*yacs\.config\.CfgNode.*could run code"):
        lgvit.create_model(name, pretrained=str(trained), **overrides)


class _Evil:
    """Unpickling this runs code: it creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_pickle_that_runs_code_is_refused_everywhere(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": lgvit.create_model("gcvit_xxtiny").state_dict(), "x": _Evil(marker)}, path)
    refused = r"refused to load .*builtins\.exec.*could run code"
    entry_points = [
        lambda: lgvit.read_state_dict(path),
        lambda: lgvit.load_weights(lgvit.create_model("gcvit_xxtiny"), path),
        lambda: lgvit.create_model("gcvit_xxtiny", pretrained=str(path)),
        lambda: load_checkpoint(path),
    ]
    for load in entry_points:
        with pytest.raises(CheckpointError, match=refused):
            load()
    assert main(["convert", str(path), str(tmp_path / "out.safetensors"), "--model", "gcvit_xxtiny"]) == 2
    assert "builtins.exec" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_training_checkpoint_loader_takes_the_namespace_too(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    torch.save({"format": FORMAT, "model": {}, "args": argparse.Namespace(lr=0.1, betas=(0.9, 0.999))}, path)
    assert load_checkpoint(path)["args"].betas == (0.9, 0.999)


def test_pretrained_true_without_tags_raises_and_native_cfg() -> None:
    for name in ("pvt_tiny", "tnt_tiny", "gcvit_fmnist"):
        with pytest.raises(ValueError, match=f"{name} has no pretrained weights.*pretrained=None"):
            lgvit.create_model(name, pretrained=True)
    with pytest.raises(FileNotFoundError, match="it has no pretrained tags"):
        lgvit.create_model("pvt_tiny", pretrained="in1k")
    with pytest.raises(FileNotFoundError, match="its tags: in1k"):
        lgvit.create_model("gcvit_xxtiny", pretrained="in22k")
    cfg = lgvit.create_model("gcvit_fmnist").pretrained_cfg
    assert cfg["input_size"] == (1, 28, 28) and cfg["mean"] is None and cfg["std"] is None
    assert cfg["num_classes"] == 10 and cfg["label_names"] is None
    assert lgvit.create_model("gcvit_xxtiny").pretrained_cfg["mean"] == (0.485, 0.456, 0.406)  # its in1k tag's


def test_weights_with_nan_or_inf_warn(tmp_path: Path) -> None:
    model = lgvit.create_model("gcvit_xxtiny", **SMALL["gcvit_xxtiny"][0])
    sd = model.state_dict()
    sd["head.fc.bias"][0], sd["stem.conv1.weight"][0, 0, 0, 0] = float("nan"), float("inf")
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.warns(RuntimeWarning, match=r"2 of \d+ tensors hold NaN or inf \((stem.conv1.weight|head.fc.bias)"):
        lgvit.load_weights(model, tmp_path / "nan.pth")
    torch.save(lgvit.create_model("gcvit_xxtiny", **SMALL["gcvit_xxtiny"][0]).state_dict(), tmp_path / "ok.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lgvit.load_weights(model, tmp_path / "ok.pth")


def test_bad_files_get_clear_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("empty.pth").touch()
    Path("page.pth").write_text("<html>404</html>\n")
    Path("ckpt").mkdir()
    cases = [
        ("empty.pth", CheckpointError, "is empty"),
        ("page.pth", CheckpointError, "not a checkpoint: it starts with b'<html>"),
        ("ckpt/nope.pth", FileNotFoundError, "no such file: ckpt/nope.pth"),
        ("ckpt/nope", FileNotFoundError, "no such file"),  # its folder exists: a path, not a hub id
        ("./nope", FileNotFoundError, "no such file"),
        ("ckpt", CheckpointError, "is a folder"),
    ]
    for source, error, message in cases:
        start = time.monotonic()
        with pytest.raises(error, match=message):
            lgvit.create_model("gcvit_xxtiny", pretrained=source)
        assert time.monotonic() - start < 2  # never a hub lookup
    assert main(["convert", "/nonexistent.pth", "out.safetensors", "--model", "gcvit_xxtiny"]) == 2
    assert "no such file: /nonexistent.pth" in capsys.readouterr().err
    assert main(["convert", "empty.pth", "out.safetensors", "--model", "gcvit_xxtiny"]) == 2
    assert "is empty" in capsys.readouterr().err


def test_convert_checks_the_destination_first(tmp_path: Path, capsys) -> None:
    src = tmp_path / "w.pth"
    torch.save(lgvit.create_model("gcvit_xxtiny").state_dict(), src)
    assert main(["convert", str(src), str(tmp_path), "--model", "gcvit_xxtiny"]) == 2
    assert "is a folder: give the output file's name" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "w.safetensors")]) == 2  # plain weights do not say their model
    assert "say which model it is with --model NAME" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        (locked / "probe").touch()  # root writes anywhere: use a file system nobody can write
        (locked / "probe").unlink()
        locked = Path("/sys")
    except PermissionError:
        pass
    assert main(["convert", str(src), str(locked / "sub" / "w.safetensors"), "--model", "gcvit_xxtiny"]) == 2
    assert f"{locked} is not writable" in capsys.readouterr().err


def test_saved_file_rebuilds_config_preprocessing_and_class_names(tmp_path: Path) -> None:
    model = randomize_(lgvit.create_model("gcvit_fmnist", num_classes=5, in_chans=1)).eval()
    names = ["ankle boot", "bag", "coat", "dress", "pullover"]
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.28,), "std": (0.35,), "label_names": names}
    path = tmp_path / "fmnist5.safetensors"
    lgvit.save_weights(model, path)
    again = lgvit.create_model("gcvit_fmnist", pretrained=str(path)).eval()  # no num_classes passed
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    cfg = again.pretrained_cfg
    assert cfg["label_names"] == names and cfg["mean"] == (0.28,) and cfg["input_size"] == (1, 28, 28)
    tuned = lgvit.create_model("gcvit_fmnist", pretrained=str(path), num_classes=3)  # overrides win
    assert tuned.num_classes == 3 and tuned.pretrained_cfg["label_names"] is None


def _training_checkpoint(path: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """An `lgvit train` checkpoint (the layout of training/loop.py `_payload`) whose EMA weights validated best."""
    overrides = {"num_classes": 3, "in_chans": 1, "drop_path_rate": 0.0}
    raw = randomize_(lgvit.create_model("gcvit_fmnist", **overrides), 0).eval()
    ema = randomize_(lgvit.create_model("gcvit_fmnist", **overrides), 1).eval()
    data = {"img_size": 28, "in_chans": 1, "mean": (0.3,), "std": (0.4,), "kind": "folder", "crop_pct": 0.875}
    payload = {
        "format": FORMAT,
        "model_name": "gcvit_fmnist",
        "model_overrides": overrides,
        "classes": ["cat", "dog", "fox"],
        "data": {**data, "interpolation": "bicubic"},
        "train_config": {"data": str(path.parent)},
        "model": raw.state_dict(),
        "ema": {"module": ema.state_dict(), "updates": 10},
        "epoch": 3,
        "best": {"top1": 50.0, "weights": "ema"},
    }
    torch.save(payload, path)
    return raw, ema


def test_convert_training_checkpoint_keeps_best_weights_classes_and_preprocessing(tmp_path: Path, capsys) -> None:
    src, dst = tmp_path / "best.pt", tmp_path / "best.safetensors"
    raw, ema = _training_checkpoint(src)
    assert main(["convert", str(src), str(dst)]) == 0
    assert "(ema weights" in capsys.readouterr().out
    converted = lgvit.create_model("gcvit_fmnist", pretrained=str(dst)).eval()
    loaded = from_checkpoint(str(src), "auto")  # what `predict --checkpoint` uses
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(converted(x), loaded.model(x)) and torch.equal(converted(x), ema(x))
    cfg = converted.pretrained_cfg
    assert cfg["label_names"] == loaded.classes == ["cat", "dog", "fox"]
    assert cfg["input_size"] == (loaded.in_chans, loaded.img_size, loaded.img_size)
    assert (cfg["mean"], cfg["std"], cfg["crop_pct"]) == (loaded.mean, loaded.std, loaded.crop_pct)
    assert cfg["interpolation"] == getattr(loaded, "interpolation", "bilinear")
    with pytest.raises(CheckpointError, match=r"(?s)wrong shape.*`lgvit train` checkpoint of gcvit_fmnist.*convert"):
        lgvit.create_model("gcvit_fmnist", pretrained=str(src))  # 10 classes and 1 channel by default
    assert main(["convert", str(src), str(dst), "--weights", "model"]) == 0
    assert "(model weights" in capsys.readouterr().out
    with torch.no_grad():
        assert torch.equal(lgvit.create_model("gcvit_fmnist", pretrained=str(dst)).eval()(x), raw(x))


_HUB_SCRIPT = """
import json, sys, time
import lgvit
out = {}
for source in sys.argv[1:]:
    start = time.monotonic()
    try:
        lgvit.create_model("gcvit_xxtiny", pretrained=source)
        out[source] = ["ok", time.monotonic() - start]
    except Exception as e:
        out[source] = [f"{type(e).__name__}: {e}", time.monotonic() - start]
print(json.dumps(out))
"""


def _hub_cache(home: Path) -> None:
    """A local hub cache holding 'lgvit-test/cached' (model.safetensors of gcvit_xxtiny)."""
    repo = home / "hub" / "models--lgvit-test--cached"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    lgvit.save_weights(lgvit.create_model("gcvit_xxtiny"), repo / "snapshots" / commit / "model.safetensors")


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_hub_fails_fast_once_offline_and_uses_the_cache(tmp_path: Path, env: dict) -> None:
    _hub_cache(tmp_path)
    environ = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "0", **env}
    environ.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    sources = ["in1k", "hf-hub:lgvit-test/cached"]
    proc = subprocess.run(
        [sys.executable, "-c", _HUB_SCRIPT, *sources], env=environ, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    error, seconds = result["in1k"]
    assert seconds < 5 and "Retrying" not in proc.stderr
    expected = "Offline (HF_HUB_OFFLINE is set)" if "HF_HUB_OFFLINE" in env else "cannot reach the Hugging Face hub"
    assert error.startswith("CheckpointError") and expected in error
    assert result["hf-hub:lgvit-test/cached"][0] == "ok"


def test_predict_takes_the_ema_weights_of_a_pretrained_file_on_request(tmp_path: Path, capsys) -> None:
    """`predict --pretrained FILE --weights ema` predicts as a file holding only those EMA weights does."""
    raw, ema = (randomize_(lgvit.create_model("gcvit_xxtiny"), seed) for seed in (0, 1))
    both, ema_only, image = tmp_path / "both.pth.tar", tmp_path / "ema.pth", tmp_path / "a.png"
    args = argparse.Namespace(model="gcvit_xxtiny", model_ema=True)
    torch.save({"state_dict": _official(raw), "state_dict_ema": _official(ema), "args": args}, both)
    torch.save({"state_dict": _official(ema), "args": args}, ema_only)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 60, 3), dtype=np.uint8)).save(image)

    def shown(path: Path, *flags: str) -> str:
        assert main(["predict", "--pretrained", str(path), "--model", "gcvit_xxtiny", *flags, str(image)]) == 0
        return capsys.readouterr().out.split(": ", 1)[1]  # the top-k, without the file name

    assert shown(both, "--weights", "ema") == shown(ema_only) != shown(both)
