"""The `lgvit` command line: models, convert and bench on small inputs, the version, errors and packaging."""

import errno
import json
from pathlib import Path

import pytest
import timm
import torch
from torch._utils import ExceptionWrapper

import lgvit
from lgvit.cli import error_message, main
from lgvit.training.distributed import pick_device


def test_models_lists_counts_beside_official(capsys) -> None:
    assert main(["models", "gcvit_xx*"]) == 0
    out = capsys.readouterr().out
    assert "| gcvit_xxtiny | 224 | 12.00 (12) | 2.12 (2.12) |" in out


def test_convert_timm_checkpoint_to_lgvit_safetensors(tmp_path: Path, capsys) -> None:
    ref = timm.create_model("gcvit_xxtiny").eval()
    src, dst = tmp_path / "timm.pth", tmp_path / "lgvit.safetensors"
    torch.save(ref.state_dict(), src)
    assert main(["convert", str(src), str(dst), "--model", "gcvit_xxtiny"]) == 0
    assert "lgvit layout" in capsys.readouterr().out
    model = lgvit.create_model("gcvit_xxtiny", pretrained=str(dst)).eval()
    x = torch.randn(1, 3, 224, 224)  # timm's gcvit runs at its construction size only
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() < 1e-4


def test_bad_model_name_is_a_clear_cli_error(capsys) -> None:
    assert main(["convert", "x.pth", "y.safetensors", "--model", "gcvit_tinyy"]) == 2
    assert "did you mean gcvit_tiny" in capsys.readouterr().err


def test_bench_reports_speed_memory_and_flops(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--model", "gcvit_xxtiny", "--batch", "1", "--size", "64", "--mode", "infer"]
    assert main([*args, "--iters", "1", "--rounds", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| gcvit_xxtiny | infer | lgvit | 1 | 64 |" in table
    (row,) = json.loads(out.read_text())
    assert row["images_per_s"] > 0 and row["peak_mem_mb"] > 0 and row["gmacs"] > 0


# --- issue 15: version, OS errors, 1-channel models in bench and models --speed, --device, packaging ------------


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"lgvit {lgvit.__version__}"


def test_os_errors_are_one_clear_line(monkeypatch, capsys) -> None:
    def denied(pattern):
        raise PermissionError(errno.EACCES, "Permission denied", "/models/list")

    monkeypatch.setattr("lgvit.commands.models.list_models", denied)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err == "lgvit models: error: Permission denied: /models/list (make it writable or choose another path)\n"
    with pytest.raises(PermissionError):
        main(["models", "--debug"])


def test_bench_and_models_speed_run_one_channel_models(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--model", "gcvit_fmnist", "--batch", "2", "--iters", "1", "--rounds", "1", "--device", "cpu"]
    assert main([*args, "--json", str(out)]) == 0  # infer and train, 1 channel, 10 classes, 28 px
    table = capsys.readouterr().out
    assert "| gcvit_fmnist | infer | lgvit | 2 | 28 |" in table and "| gcvit_fmnist | train | lgvit | 2 | 28 |" in table
    rows = json.loads(out.read_text())
    assert [r["device"] for r in rows] == ["cpu", "cpu"] and all(r["gmacs"] > 0 for r in rows)
    assert main(["models", "*_fmnist", "--speed", "--device", "cpu"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "_fmnist |" in line]
    assert len(lines) == 6 and all(float(line.split("|")[-2]) > 0 for line in lines)


def test_device_flag_is_checked(capsys) -> None:
    for flag, message in (("gpu", "use auto, cpu, cuda or cuda:N"), ("cuda:x", "use auto, cpu, cuda or cuda:N")):
        assert main(["models", "gcvit_fmnist", "--speed", "--device", flag]) == 2
        assert message in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible; use --device cpu"):
            pick_device("cuda:0")
    assert pick_device("cpu") == torch.device("cpu")
    assert main(["models", "nothing_like_this*"]) == 2
    assert "no registered model matches" in capsys.readouterr().err


def test_packaging_license_typing_marker_and_one_version() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0" and project["project"]["license-files"] == ["LICENSE"]
    assert "Apache License\n                           Version 2.0, January 2004" in (root / "LICENSE").read_text()
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lgvit.__version__"}
    assert (root / "lgvit" / "py.typed").is_file()
    assert {"py.typed", "data/*.txt"} <= set(project["tool"]["setuptools"]["package-data"]["lgvit"])
    torch_bound = next(d for d in project["project"]["dependencies"] if d.startswith("torch>="))
    assert tuple(map(int, torch_bound[len("torch>=") :].split("."))) >= (2, 5)  # torch.serialization.safe_globals


def test_an_error_from_a_data_loader_worker_is_one_line() -> None:
    """torch re-raises a worker's error with the worker's traceback appended; the CLI shows the error alone."""
    try:
        raise ValueError("cannot read /data/a.jpg: image file is truncated; remove or replace it")
    except ValueError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ValueError) as caught:
        wrapped.reraise()
    assert "Traceback" in str(caught.value)
    assert error_message(caught.value) == "cannot read /data/a.jpg: image file is truncated; remove or replace it"


# --- issue 16: bench --compile, the export command ----------------------------------------------------------------


def test_bench_compile_runs_the_compiled_model_beside_eager(monkeypatch, capsys) -> None:
    """The plumbing of --compile, in this process, with torch.compile recorded (a real compile takes ~30 s)."""
    from lgvit.tools import bench

    calls = []

    def fake_compile(model, dynamic=None, mode=None):
        calls.append((dynamic, mode, torch._inductor.config.freezing))
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    # inductor's config is restored by its own patch (monkeypatch would delete the entry on undo)
    with torch._inductor.config.patch(freezing=False):
        compiled = bench._measure("lgvit-compiled", "deit_fmnist", "infer", 1, 28, 1, 1, "cpu", "dynamic")
        eager = bench._measure("lgvit", "deit_fmnist", "infer", 1, 28, 1, 1, "cpu", "dynamic")
        bench._measure("lgvit-compiled", "deit_fmnist", "infer", 1, 28, 1, 1, "cpu", "max-autotune")
    assert torch._inductor.config.freezing is False
    assert calls == [(True, None, False), (False, "max-autotune", True)]
    assert compiled["compile_s"] >= 0 and eager["compile_s"] == 0
    seen = []
    row = bench.BenchResult("lgvit", "deit_fmnist", "cpu", "infer", 8, 28, 10.0, 800, 100, 0.01, 90, 0.5)
    monkeypatch.setattr("lgvit.commands.bench.run_bench", lambda *a: seen.append(a[-1]) or [row])
    assert main(["bench", "--model", "deit_fmnist", "--compile"]) == 0
    assert main(["bench", "--model", "deit_fmnist", "--compile", "static"]) == 0
    assert main(["bench", "--model", "deit_fmnist", "--compile", "max-autotune"]) == 0
    assert main(["bench", "--model", "deit_fmnist"]) == 0
    assert seen == ["dynamic", "static", "max-autotune", None]
    with pytest.raises(ValueError, match="compile must be one of dynamic, static, max-autotune, not 'fast'"):
        bench.run_bench("deit_fmnist", compile="fast")


def test_bench_table_shows_compiled_speed_and_compile_time() -> None:
    from lgvit.tools.bench import BenchResult, format_table

    eager = BenchResult("lgvit", "m", "cpu", "infer", 8, 224, 10.0, 800, 100, 4.5, 90, 0.5)
    compiled = BenchResult("lgvit-compiled", "m", "cpu", "infer", 8, 224, 15.0, 533, 120, 4.5, 135, 0.7, 42.0)
    table = format_table([eager, compiled])
    assert "| m | infer | lgvit-compiled | 8 | 224 | 15.0 |" in table and "| 1.50x, compile 42.0 s |" in table


def test_export_is_a_command(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert "--format {onnx,torch-export}" in out and "--checkpoint" in out and "--dynamic" in out
