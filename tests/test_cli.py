"""The `lgvit` command line: models, convert and bench on small inputs."""

import json
from pathlib import Path

import timm
import torch

import lgvit
from lgvit.cli import main


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
