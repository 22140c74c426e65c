"""GC ViT: exact against timm and the official layout, counts, any input size, interface, errors."""

from pathlib import Path

import pytest
import timm
import torch
from conftest import randomize_
from safetensors.torch import save_file

import lgvit
from lgvit import CheckpointError
from lgvit.convert.gcvit import CONVERTER as convert
from lgvit.models.gcvit import _pool_depth
from lgvit.tools.flops import count_macs, count_params

DATA = Path(__file__).parent / "data"
OFFICIAL = [n for n in lgvit.list_models("gcvit_*") if lgvit.get_spec(n).params_m is not None]


def _pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's model with randomised weights and lgvit's model loaded from its state dict."""
    ref = randomize_(timm.create_model(name)).eval()
    model = lgvit.create_model(name).eval()
    model.load_state_dict(convert.to_lgvit(ref.state_dict(), convert.detect(ref.state_dict())))
    return ref, model


@pytest.mark.parametrize("name", OFFICIAL)
def test_params_and_gmacs_match_official(name: str) -> None:
    spec = lgvit.get_spec(name)
    with torch.device("meta"):
        model = lgvit.create_model(name)
    assert abs(count_params(model) / 1e6 - spec.params_m) <= 0.01
    macs = count_macs(model, (3, spec.native_size, spec.native_size)) / 1e9
    assert abs(macs / spec.gmacs - 1) <= 0.01


@pytest.mark.parametrize("name", ["gcvit_xxtiny", "gcvit_xtiny", "gcvit_tiny", "gcvit_small", "gcvit_base"])
def test_equal_to_timm(name: str) -> None:
    ref, model = _pair(name)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        diff = (ref(x) - model(x)).abs().max().item()
    assert diff <= 1e-4


def test_equal_to_timm_at_384_with_384_windows() -> None:
    ref = randomize_(timm.create_model("gcvit_xxtiny", img_size=384)).eval()  # timm derives windows 12/12/24/12
    model = lgvit.create_model("gcvit_xxtiny", img_size=384, window_sizes=(12, 12, 24, 12)).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 384, 384)
    with torch.no_grad():
        assert (ref(x) - model(x)).abs().max() <= 1e-4


def test_larger_input_pools_more_than_the_config_convs() -> None:
    """640x480: stage 0's global query needs 4 pools for 3 convs, then a resize (other sizes: test_models.py)."""
    model = lgvit.create_model("gcvit_xxtiny", embed_dim=8, num_heads=(1, 1, 2, 2), depths=(2, 2, 2, 2)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 640, 480))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_global_query_pooling_depth_follows_the_map() -> None:
    assert _pool_depth((56, 56), (7, 7)) == 3  # native stage 0 at 224
    assert _pool_depth((14, 14), (14, 14)) == 0  # native stage 2
    assert _pool_depth((96, 96), (7, 7)) == 3  # 224 config at 384: 12x12, then resized to 7x7
    assert _pool_depth((160, 120), (7, 7)) == 4  # 640x480: more pools than the config's three convs
    assert _pool_depth((1, 1), (1, 1)) == 0


def test_official_layout_round_trip(tmp_path: Path) -> None:
    model = randomize_(lgvit.create_model("gcvit_xxtiny")).eval()
    official = convert.to_official(model.state_dict())
    expected = dict(line.split() for line in (DATA / "gcvit_xxtiny_official_keys.txt").read_text().splitlines())
    assert {k: ",".join(map(str, v.shape)) for k, v in official.items()} == expected
    path = tmp_path / "gcvit_1k_xxtiny.pth.tar"
    torch.save({"state_dict": official, "epoch": 310}, path)  # as the NVlabs release
    loaded = lgvit.create_model("gcvit_xxtiny", pretrained=str(path)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_checkpoint_loads(tmp_path: Path, suffix: str) -> None:
    ref = randomize_(timm.create_model("gcvit_xxtiny")).eval()
    path = tmp_path / f"timm{suffix}"
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(sd, path) if suffix == ".safetensors" else torch.save(sd, path)
    model = lgvit.create_model("gcvit_xxtiny", pretrained=str(path)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (ref(x) - model(x)).abs().max() <= 1e-4


def test_save_weights_round_trip_and_head_reset(tmp_path: Path) -> None:
    model = randomize_(lgvit.create_model("gcvit_xxtiny")).eval()
    path = tmp_path / "m.safetensors"
    lgvit.save_weights(model, path)
    again = lgvit.create_model("gcvit_xxtiny", pretrained=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    tuned = lgvit.create_model("gcvit_xxtiny", pretrained=str(path), num_classes=10)
    assert tuned.head.fc.out_features == 10
    assert torch.equal(tuned.stages[0].blocks[0].attn.qkv.weight, model.stages[0].blocks[0].attn.qkv.weight)


def test_pretrained_into_other_channel_counts(tmp_path: Path) -> None:
    path = tmp_path / "rgb.safetensors"
    rgb = lgvit.create_model("gcvit_xxtiny")
    lgvit.save_weights(rgb, path)
    gray = lgvit.create_model("gcvit_xxtiny", pretrained=str(path), in_chans=1, num_classes=10).eval()
    rgb.reset_classifier(0), gray.reset_classifier(0)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # a gray image seen by the summed conv == the same image as RGB
        assert torch.allclose(gray.eval()(x), rgb.eval()(x.expand(-1, 3, -1, -1)), atol=1e-5)


def test_bias_tables_resized_for_another_window(tmp_path: Path) -> None:
    path = tmp_path / "w7.safetensors"
    lgvit.save_weights(lgvit.create_model("gcvit_xxtiny"), path)
    model = lgvit.create_model("gcvit_xxtiny", img_size=384, window_sizes=(12, 12, 24, 12))  # fine-tune at 384
    report = lgvit.load_weights(model, path)
    assert len(report.resized) == 12  # every block's table: 2 + 2 + 6 + 2
    assert model.stages[0].blocks[0].attn.rel_pos.relative_position_bias_table.shape == (23 * 23, 2)


def test_checkpoint_errors(tmp_path: Path) -> None:
    """Checkpoints that do not fit; bad inputs and configs are in test_models.py."""
    wrong = tmp_path / "wrong.pth"
    sd = lgvit.create_model("gcvit_xtiny").state_dict()
    torch.save(sd, wrong)
    with pytest.raises(CheckpointError, match="missing|unexpected"):
        lgvit.create_model("gcvit_xxtiny", pretrained=str(wrong))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(wrong.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        lgvit.create_model("gcvit_xxtiny", pretrained=str(truncated))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        lgvit.create_model("gcvit_xxtiny", pretrained=str(junk))
    with pytest.raises(CheckpointError, match="not a GC ViT checkpoint"):
        torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
        lgvit.create_model("gcvit_xxtiny", pretrained=str(tmp_path / "other.pth"))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "cfg": Path("/tmp")}, path)  # an arbitrary object
    with pytest.raises(CheckpointError):
        lgvit.create_model("gcvit_xxtiny", pretrained=str(path))


def test_pretrained_tags_carry_preprocessing() -> None:
    tiny = lgvit.get_spec("gcvit_tiny").tags
    assert tiny["in1k"].hf_hub_id == "timm/gcvit_tiny.in1k" and tiny["in1k"].crop_pct == 0.875
    assert tiny["nvidia_in1k"].crop_pct == 1.0 and tiny["nvidia_in1k"].interpolation == "bicubic"
    l384 = lgvit.get_spec("gcvit_large_384_21k").tags["in21k_ft_in1k"]
    assert l384.input_size == (3, 384, 384) and l384.crop_mode == "squash"
    model = lgvit.create_model("gcvit_small")
    assert model.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)


def test_hub_source_offline_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(CheckpointError, match="Offline|huggingface_hub"):
        lgvit.create_model("gcvit_xxtiny", pretrained="in1k")
    with pytest.raises(CheckpointError, match="download it from"):
        lgvit.create_model("gcvit_large_224_21k", pretrained=True)
