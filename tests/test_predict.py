"""`lgvit predict` and `lgvit eval` on tiny checkpoints: one preprocessing for both, per-file errors,
flag validation before any work, NaN weights, class names, --device and unwritable output folders."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_data import SHAPES, make_idx_dir, make_image_folder, save_rotated_jpeg

from lgvit import create_model
from lgvit.cli import main
from lgvit.convert import CheckpointError
from lgvit.data import build_data, imagenet_classes, load_image, transform_for
from lgvit.tools.inference import _class_names, from_checkpoint, predict_images
from lgvit.training.checkpoint import FORMAT
from lgvit.training.distributed import pick_device

CLASSES = sorted(SHAPES)


def write_checkpoint(path: Path, data: dict, train_data: str | None, in_chans: int = 3, **model: object) -> Path:
    """An `lgvit train`-format checkpoint of a random 4-class gcvit_fmnist, with `data` as its data settings."""
    overrides = {"in_chans": in_chans, "num_classes": len(CLASSES), **model}
    net = create_model("gcvit_fmnist", **overrides)
    payload = {
        "format": FORMAT,
        "model_name": "gcvit_fmnist",
        "model_overrides": overrides,
        "classes": CLASSES,
        "data": data,
        "train_config": {"data": train_data},
        "model": net.state_dict(),
        "ema": None,
        "best": {"weights": "model"},
        "epoch": 1,
    }
    torch.save(payload, path)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "tree", per_class=2, corrupt=False)


@pytest.fixture
def folder_ckpt(tree: Path, tmp_path: Path) -> Path:
    """A checkpoint of a run on `tree`, saving its data settings as `lgvit train` does (no kind recorded)."""
    data = build_data(str(tree), 32, 3, train=False)
    settings = {"img_size": 32, "in_chans": 3, "mean": data.mean, "std": data.std}
    (tmp_path / "run").mkdir()
    return write_checkpoint(tmp_path / "run" / "best.pt", settings, str(tree))


def _val_files(tree: Path) -> list[Path]:
    return sorted((tree / "val").rglob("*.*"))


@pytest.mark.parametrize("with_settings", [False, True])
def test_predict_prepares_images_as_eval_does(tree: Path, tmp_path: Path, with_settings: bool) -> None:
    data = build_data(str(tree), 32, 3, train=False)  # as `lgvit train` and `lgvit eval` read the tree
    settings = data.settings() if with_settings else {"img_size": 32, "in_chans": 3, "mean": data.mean, "std": data.std}
    loaded = from_checkpoint(str(write_checkpoint(tmp_path / "best.pt", settings, str(tree))))
    assert (loaded.crop_pct, loaded.interpolation) == (data.crop_pct, data.interpolation) == (0.875, "bilinear")
    for i in (0, 3, 5):
        path, _ = data.val.samples[i]
        for transform in (loaded.transform(), transform_for(loaded.model)):
            assert torch.equal(transform(load_image(path, "RGB")), data.val[i][0])


def test_eval_on_image_files_matches_predict(folder_ckpt: Path, tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["eval", "--checkpoint", str(folder_ckpt), "--data", str(tree), "--output", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    loaded = from_checkpoint(str(folder_ckpt))
    losses = []
    with torch.no_grad():
        for path in _val_files(tree):
            x = loaded.transform()(load_image(str(path), "RGB")).unsqueeze(0)  # (1, 3, 32, 32)
            target = torch.tensor([CLASSES.index(path.parent.name)])
            losses.append(F.cross_entropy(loaded.model(x), target).item())
    assert report["images"] == len(losses) == 8
    assert report["loss"] == pytest.approx(np.mean(losses), rel=1e-5)


def test_idx_checkpoint_prepares_files_whole(tmp_path: Path) -> None:
    root = make_idx_dir(tmp_path / "shapes", 8, 4)
    ckpt = write_checkpoint(
        tmp_path / "best.pt", {"img_size": 28, "in_chans": 1, "mean": (0.2,), "std": (0.3,)}, str(root), in_chans=1
    )
    loaded = from_checkpoint(str(ckpt))
    assert (loaded.crop_pct, loaded.interpolation) == (1.0, "bilinear")
    assert build_data(str(root), 28, 1, train=False).settings()["crop_pct"] == 1.0


def test_predict_follows_exif_orientation(folder_ckpt: Path, tmp_path: Path) -> None:
    save_rotated_jpeg(tmp_path / "rotated.jpg", tmp_path / "upright.png")
    loaded = from_checkpoint(str(folder_ckpt))
    rotated, upright = predict_images(loaded, [str(tmp_path / "rotated.jpg"), str(tmp_path / "upright.png")], 4)
    assert [name for name, _ in rotated.top] == [name for name, _ in upright.top]
    assert np.allclose([p for _, p in rotated.top], [p for _, p in upright.top], atol=1e-6)


def test_bad_files_are_reported_and_the_rest_predicted(
    folder_ckpt: Path, tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = [str(p) for p in _val_files(tree)[:2]]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    whole = tmp_path / "whole.jpg"
    Image.fromarray(np.full((40, 40, 3), 99, np.uint8)).save(whole)
    (tmp_path / "cut.jpg").write_bytes(whole.read_bytes()[:200])
    bad = [str(tmp_path / n) for n in ("empty.jpg", "notes.png", "cut.jpg", "missing.jpg")]
    code = main(["predict", "--checkpoint", str(folder_ckpt), good[0], *bad, good[1]])
    out, err = capsys.readouterr()
    assert code == 2
    assert [line.split(": ")[0] for line in out.splitlines()] == good
    for path, problem in zip(bad, ("empty", "not an image", "truncated", "no such file"), strict=True):
        assert any(path in line and problem in line.lower() for line in err.splitlines()), (path, err)
    assert "4 of 6 images could not be read (above); the others were predicted" in err
    assert main(["predict", "--checkpoint", str(folder_ckpt), *bad[:2]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "2 of 2 images could not be read (above); none was predicted" in err


@pytest.mark.parametrize("topk", ["0", "-1"])
def test_topk_below_one_is_refused_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture, topk: str) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["predict", "--checkpoint", str(tmp_path / "none.pt"), "--topk", topk, str(image)]) == 2
    assert f"--topk must be at least 1, not {topk}" in capsys.readouterr().err  # not "no checkpoint"


def test_topk_above_the_classes_is_refused(folder_ckpt: Path, tree: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "--checkpoint", str(folder_ckpt), "--topk", "5", str(_val_files(tree)[0])]) == 2
    assert "--topk must be between 1 and the model's 4 classes, not 5" in capsys.readouterr().err


def test_bad_labels_files_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image, weights = tmp_path / "a.png", tmp_path / "w.pth"
    Image.new("L", (28, 28)).save(image)
    torch.save(create_model("gcvit_fmnist").state_dict(), weights)
    (tmp_path / "blank.txt").write_text("\n \n")
    for labels, problem in (
        ("/dev/null", "lists no class names"),
        (str(tmp_path / "blank.txt"), "lists no class"),
        (str(tmp_path), "cannot read it"),
    ):
        args = ["predict", "--pretrained", str(weights), "--model", "gcvit_fmnist", "--labels", labels, str(image)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"--labels {labels}" in err and problem in err


def test_nan_weights_are_refused_not_printed(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = build_data(str(tree), 32, 3, train=False)
    ckpt = write_checkpoint(tmp_path / "nan.pt", data.settings(), str(tree))
    payload = torch.load(ckpt, weights_only=True)
    payload["model"]["head.fc.weight"][0, 0] = float("nan")
    torch.save(payload, ckpt)
    assert main(["predict", "--checkpoint", str(ckpt), str(_val_files(tree)[0])]) == 2
    out, err = capsys.readouterr()
    assert "nan" not in out.lower() and str(ckpt) in err and "weights hold NaN/inf" in err
    with pytest.raises(CheckpointError, match="NaN/inf"):
        predict_images(from_checkpoint(str(ckpt)), [str(_val_files(tree)[0])], 1)


def test_imagenet_class_names_ship_with_the_package() -> None:
    names = imagenet_classes()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[1], names[999]) == ("tench", "goldfish", "toilet tissue")
    model = torch.nn.Linear(1, 1)
    model.num_classes, model.pretrained_cfg = 1000, {}
    assert _class_names("gcvit_xxtiny", "in1k", model, None) == names
    assert _class_names("swin_tiny", "ms_in22k_ft_in1k", model, None) == names
    assert _class_names("gcvit_xxtiny", "weights.pth", model, None)[:2] == ["0", "1"]  # unknown file: indices
    model.pretrained_cfg = {"label_names": [f"c{i}" for i in range(1000)]}
    assert _class_names("gcvit_xxtiny", "in1k", model, None)[0] == "c0"  # the weights' own names first


def test_eval_prints_before_an_unwritable_folder(
    folder_ckpt: Path, tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import lgvit.training.report

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lgvit.training.report, "plot_confusion", refuse)
    assert main(["eval", "--checkpoint", str(folder_ckpt), "--data", str(tree)]) == 2
    out, err = capsys.readouterr()
    assert "top-1" in out and "| square |" in out
    assert f"to {folder_ckpt.parent} (Permission denied)" in err and "--output" in err


def test_eval_flags_are_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "taken").write_text("x")
    missing = str(tmp_path / "none.pt")
    assert main(["eval", "--checkpoint", missing, "--output", str(tmp_path / "taken")]) == 2
    assert "--output" in capsys.readouterr().err
    for device in ("gpu", "cuda:64"):
        assert main(["eval", "--checkpoint", missing, "--device", device]) == 2
        assert f"--device {device}" in capsys.readouterr().err.replace("'", "")


def test_eval_and_predict_take_a_device(folder_ckpt: Path, tree: Path, tmp_path: Path) -> None:
    args = ["--checkpoint", str(folder_ckpt), "--device", "cpu"]
    assert main(["eval", *args, "--data", str(tree), "--output", str(tmp_path / "o")]) == 0
    assert main(["predict", *args, str(_val_files(tree)[0])]) == 0


def test_eval_takes_a_wider_head_and_refuses_a_narrower_one(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A head trained wider than the classes (--num-classes 6 on 4 classes) is evaluated over all its outputs,
    as training validated it; one narrower than the classes it lists is an inconsistent checkpoint."""
    data = build_data(str(tree), 32, 3, train=False)
    wide = write_checkpoint(tmp_path / "wide.pt", data.settings(), str(tree), num_classes=6)
    assert main(["eval", "--checkpoint", str(wide), "--data", str(tree), "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["classes"] == [*CLASSES, "(unused 4)", "(unused 5)"] and len(report["per_class"]) == 6
    capsys.readouterr()
    narrow = write_checkpoint(tmp_path / "narrow.pt", data.settings(), str(tree), num_classes=3)
    assert main(["eval", "--checkpoint", str(narrow), "--data", str(tree)]) == 2
    assert "lists 4 classes but its model has 3 outputs" in capsys.readouterr().err


def test_weights_without_their_preprocessing_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image, weights = tmp_path / "a.png", tmp_path / "w.pth"
    Image.new("L", (28, 28)).save(image)
    torch.save(create_model("gcvit_fmnist").state_dict(), weights)  # a bare state dict: no mean/std, no size
    assert main(["predict", "--pretrained", str(weights), "--model", "gcvit_fmnist", str(image)]) == 2
    err = capsys.readouterr().err
    assert f"{weights}" in err and "preprocessing" in err and "--checkpoint" in err


def test_device_names_resolve_or_say_what_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda: no CUDA GPU is visible; use --device cpu"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto") == torch.device("cuda") and pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"--device cuda:2: only 2 GPU\(s\) visible \(cuda:0 to cuda:1\)"):
        pick_device("cuda:2")
    for name in ("gpu", "mps", "cuda:x"):
        with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
            pick_device(name)
