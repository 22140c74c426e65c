"""lgvit.export and `lgvit export`: ONNX and torch.export files dynamic in batch and H x W, checked against eager
PyTorch in onnxruntime; their metadata; a checkpoint's exported file predicting as `lgvit predict`; clear errors."""

import dataclasses
import functools
import importlib.util
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_data import make_image_folder
from test_predict import CLASSES, write_checkpoint

import lgvit
import lgvit.export as ex
from lgvit.cli import main
from lgvit.data import build_data, eval_transform, load_image
from lgvit.layers import Locality

# family -> (model, overrides): tiny configs with each family's kind of blocks (shifted / global-query ones included)
SMALL = {
    "gcvit": ("gcvit_fmnist", {}),
    "swin": ("swin_fmnist", {}),
    "maxvit": ("maxvit_fmnist", {}),
    "vit": ("deit_fmnist", {}),
    "localvit": ("localvit_fmnist", {}),
    "pvt": ("pvt_tiny", dict(embed_dims=(8, 8, 16, 16), num_heads=(1, 1, 2, 2), depths=(1, 1, 1, 1), img_size=64)),
    "tnt": ("tnt_tiny", dict(embed_dim=16, inner_dim=4, depth=2, num_heads=2, inner_num_heads=1, img_size=32)),
    "localvit_swin": ("localvit_swin_tiny", dict(embed_dim=8, depths=(1, 2, 1, 1), num_heads=(1, 1, 2, 2))),
}
# The API is checked end to end on one window family with every kind of size rule (GC ViT: pooling depths, window
# shrinking, global query) and one token family (DeiT: multiples of the patch). Each real export costs 10-30 s;
# every family's raw exporter paths are tested in tests/test_trace_windows.py and tests/test_trace_tokens.py.
API_CHECKED = {"gcvit", "vit"}


@functools.cache
def _small(family: str) -> torch.nn.Module:
    name, overrides = SMALL[family]
    if family == "localvit_swin":
        locality = lgvit.get_spec(name).config.locality
        overrides = {**overrides, "locality": dataclasses.replace(locality, reduction=None)}
    torch.manual_seed(0)
    return lgvit.create_model(name, **overrides).eval()


def _eager(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_every_family_has_a_small_config() -> None:
    from lgvit.registry import FAMILIES

    assert set(FAMILIES) | {"localvit", "localvit_swin"} == set(SMALL)
    assert isinstance(lgvit.get_spec(SMALL["localvit_swin"][0]).config.locality, Locality)


@functools.cache
def _onnx_file(family: str, folder: Path) -> tuple[ex.ExportReport, Path]:
    path = folder / f"{family}.onnx"
    return ex.to_onnx(_small(family), path), path


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("onnx")
    return lambda family: _onnx_file(family, folder)


@pytest.mark.parametrize("family", sorted(API_CHECKED))
def test_onnx_dynamic_batch_and_size_equals_eager(family: str, onnx_files) -> None:
    model = _small(family)
    report, path = onnx_files(family)
    sizes = {c.size for c in report.checks}
    assert len(sizes) >= 4 and any(h != w for h, w in sizes) and {c.batch for c in report.checks} == {1, 3}
    assert all(s in report.sizes for s in sizes) and report.sizes.height[0] >= ex.model_sizes(model).height[0]
    multiple = report.sizes.multiple
    assert multiple > 1 or any(h % 2 for h, w in sizes)  # window models: odd sides, which need window padding
    assert report.max_diff <= ex.TOLERANCE
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # independently of verify_onnx
    (h_low, h_high), (w_low, w_high) = report.sizes.height, report.sizes.width
    h_high, w_high = h_high or 3 * h_low, w_high or 3 * w_low
    for h, w in [(h_low, w_high), (h_high, w_low)]:  # the corners of the range: both ends of it hold
        x = torch.randn(2, model.in_chans, h - h % multiple, w - w % multiple)
        assert np.abs(session.run(None, {"images": x.numpy()})[0] - _eager(model, x)).max() <= ex.TOLERANCE


@pytest.mark.parametrize("family", sorted(API_CHECKED))
def test_onnx_file_refuses_a_size_it_does_not_serve(family: str, onnx_files) -> None:
    report, path = onnx_files(family)
    meta = ex.read_metadata(path)
    assert meta["height_range"] == list(report.sizes.height) and meta["width_range"] == list(report.sizes.width)
    (h_low, h_high), multiple = report.sizes.height, report.sizes.multiple
    outside = [h_low - multiple] + ([h_high + multiple] if h_high else []) + ([h_low + 1] if multiple > 1 else [])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h in outside:  # below, above, and not a multiple of the patch
        x = np.zeros((1, _small(family).in_chans, h, report.sizes.width[0]), np.float32)
        with pytest.raises(Exception, match=re.escape(f"lgvit size check: this file takes {report.sizes.describe()}")):
            session.run(None, {"images": x})


def test_onnx_fixed_size_round_trip_carries_the_preprocessing(tmp_path: Path) -> None:
    model = _small("vit")
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.5,), "std": (0.25,), "label_names": list("abcdefghij")}
    report = ex.to_onnx(model, tmp_path / "m.onnx", dynamic=("batch",))
    assert report.exporter == "dynamo" and report.opset == 18
    assert {(c.size, c.batch) for c in report.checks} == {((28, 28), 1), ((28, 28), 3)}
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 4):  # 4: a batch the check did not run
        x = torch.randn(batch, 1, 28, 28)
        assert np.abs(session.run(None, {"images": x.numpy()})[0] - _eager(model, x)).max() <= ex.TOLERANCE
    meta = ex.read_metadata(tmp_path / "m.onnx")
    assert meta["model_name"] == "deit_fmnist" and meta["in_chans"] == 1 and meta["input_size"] == [1, 28, 28]
    assert meta["mean"] == [0.5] and meta["std"] == [0.25] and meta["label_names"] == list("abcdefghij")
    assert meta["side_multiple"] == 4 and meta["dynamic"] == ["batch"] and meta["exporter"] == "dynamo"
    assert session.get_modelmeta().custom_metadata_map["model_name"] == '"deit_fmnist"'  # what a deployer reads


@pytest.mark.parametrize("family", sorted(API_CHECKED))
def test_torch_export_round_trip(family: str, tmp_path: Path) -> None:
    model, path, dynamic = _small(family), tmp_path / "m.pt2", ("batch", "hw")
    report = ex.to_torch_export(model, path, dynamic=dynamic)
    assert report.max_diff <= ex.TOLERANCE and ex.read_metadata(path)["model_name"] == model.spec.name
    program = torch.export.load(str(path)).module()
    served, m = report.sizes, report.sizes.multiple
    h_high = served.height[1] or 2 * served.height[0]
    for h, w in [(served.height[0] + m, h_high), (h_high - h_high % m, served.width[0] + 3 * m)]:
        x = torch.randn(2, model.in_chans, h, w)
        with torch.no_grad():
            assert np.abs(program(x).numpy() - _eager(model, x)).max() <= ex.TOLERANCE
    with pytest.raises(Exception, match="Guard failed"):  # the program itself refuses a size outside its range
        program(torch.randn(1, model.in_chans, served.height[0] - m, served.width[0]))


def test_a_file_that_differs_from_eager_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = ex.onnx_checks

    def off_by_half(path, model, sizes, batches):
        return [dataclasses.replace(c, max_diff=c.max_diff + 0.5) for c in real(path, model, sizes, batches)]

    monkeypatch.setattr(ex, "onnx_checks", off_by_half)
    (tmp_path / "m.onnx").write_text("the old file")
    with pytest.raises(RuntimeError, match=r"differs from eager PyTorch by 0.5 > 0.0001 at 28x28, batch 1"):
        ex.to_onnx(_small("vit"), tmp_path / "m.onnx", dynamic=("batch",))
    assert _left(tmp_path) == ["m.onnx"] and (tmp_path / "m.onnx").read_text() == "the old file"


def test_clear_errors_before_any_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _small("gcvit")
    with pytest.raises(ValueError, match="unknown export format 'tflite': choose one of onnx, torch-export"):
        ex.export(model, tmp_path / "m.tflite", format="tflite")
    with pytest.raises(ValueError, match=r"opset 16 is not supported: .* \(--opset 18\)"):
        ex.to_onnx(model, tmp_path / "m.onnx", opset=16)
    with pytest.raises(ValueError, match="cannot make depth dynamic: choose from batch, hw"):
        ex.to_onnx(model, tmp_path / "m.onnx", dynamic=("depth",))
    with pytest.raises(ValueError, match="cannot make depth dynamic"):  # the CLI's comma string, read as names
        ex.to_onnx(model, tmp_path / "m.onnx", dynamic="batch,depth")
    with pytest.raises(ValueError, match="verification size 8x40 is outside what gcvit_fmnist takes: H >= 16, W >= 16"):
        ex.to_onnx(model, tmp_path / "m.onnx", sizes=[(8, 40)])
    with pytest.raises(ValueError, match=r"export size \(--size\) 22x22 is outside what deit_fmnist .* multiples of 4"):
        ex.to_torch_export(_small("vit"), tmp_path / "m.pt2", size=22)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        ex.to_onnx(model, tmp_path / "file" / "m.onnx")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ImportError, match=re.escape("needs onnxscript, not installed: pip install 'lgvit[export]'")):
        ex.to_onnx(model, tmp_path / "m.onnx")
    assert _left(tmp_path) == ["file"]


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    base = ["export", "--model", "gcvit_fmnist"]
    assert main([*base, "--opset", "13"]) == 2
    assert "ONNX opset 13 is not supported" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main([*base, "--output", str(tmp_path / "file" / "m.onnx")]) == 2
    assert "a file, not a folder" in capsys.readouterr().err
    assert main([*base, "--dynamic", "batch,depth"]) == 2
    assert "depth is not one of batch, hw" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert main(base) == 2
    assert "pip install 'lgvit[export]'" in capsys.readouterr().err


def test_cli_export_of_a_checkpoint_predicts_as_lgvit_predict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = make_image_folder(tmp_path / "tree", per_class=2, corrupt=False)
    data = build_data(str(tree), 32, 3, train=False)
    ckpt = write_checkpoint(tmp_path / "best.pt", data.settings(), str(tree))
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (onnx, dynamo exporter, opset 18)" in printed and "| 32x32 | 3 |" in printed
    images = sorted(str(p) for p in (tree / "val").rglob("*.*"))
    assert main(["predict", "--checkpoint", str(ckpt), "--topk", "1", *images]) == 0
    expected = [line.rsplit(": ", 1)[1].split(" ")[0] for line in capsys.readouterr().out.splitlines()]
    meta = ex.read_metadata(out)  # the file alone says how to prepare an image and name the class
    assert meta["label_names"] == CLASSES
    prep = eval_transform(meta["input_size"][-1], meta["mean"], meta["std"], meta["crop_pct"], meta["interpolation"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    batch = torch.stack([prep(load_image(p, "RGB")) for p in images]).numpy()
    labels = [meta["label_names"][i] for i in session.run(None, {"images": batch})[0].argmax(1)]
    assert labels == expected and len(labels) == len(images)
