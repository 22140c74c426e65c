"""Swin: exact against timm and the official layout, counts, any input size, the bias cache, interface, errors."""

from pathlib import Path

import pytest
import timm
import torch
from conftest import randomize_
from safetensors.torch import save_file
from torch import nn

import lgvit
from lgvit import CheckpointError
from lgvit.convert.swin import CONVERTER as convert
from lgvit.layers import Locality, shifted_window_mask
from lgvit.models.swin import Swin, SwinConfig, stage_window
from lgvit.tools.flops import count_macs, count_params

SWIN = [n for n in lgvit.list_models("swin_*") if lgvit.get_spec(n).params_m is not None]
NARROW = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))  # a regular + a shifted block per stage


def _to_lgvit(ref: nn.Module) -> dict[str, torch.Tensor]:
    sd = ref.state_dict()
    return convert.to_lgvit(sd, convert.detect(sd))


def _pair(timm_name: str, **kwargs) -> tuple[nn.Module, nn.Module]:
    """timm's model with randomised weights and lgvit's same model loaded from its state dict."""
    ref = randomize_(timm.create_model(timm_name, **kwargs)).eval()
    model = lgvit.create_model(timm_name, **kwargs).eval()
    model.load_state_dict(_to_lgvit(ref))
    return ref, model


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


@pytest.mark.parametrize("name", SWIN)
def test_params_and_gmacs_match_official(name: str) -> None:
    spec = lgvit.get_spec(name)
    with torch.device("meta"):
        model = lgvit.create_model(name)
    assert abs(count_params(model) / 1e6 - spec.params_m) <= 0.01
    macs = count_macs(model, (3, spec.native_size, spec.native_size)) / 1e9
    assert abs(macs / spec.gmacs - 1) <= 0.01


def test_equal_to_timm_at_224() -> None:
    ref, model = _pair("swin_tiny_patch4_window7_224")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref(x)
        first, second = model(x), model(x)  # the second from the cached bias + mask
    assert (expected - first).abs().max() <= 1e-4 and torch.equal(first, second)


def test_equal_to_timm_at_384_window_12() -> None:
    # swin_base_384's layout (window 12, stage 4 = one unshifted window) with fewer and narrower blocks
    ref, model = _pair("swin_base_patch4_window12_384", **NARROW)
    assert _max_diff(ref, model, torch.randn(2, 3, 384, 384)) <= 1e-4


def test_224_model_at_448_equals_timm_built_for_448() -> None:
    # no padding at 448 (112/56/28/14 are window multiples) and every stage shifts, stage 4 included
    ref = randomize_(timm.create_model("swin_tiny_patch4_window7_224", img_size=448, **NARROW)).eval()
    model = lgvit.create_model("swin_tiny", **NARROW).eval()
    model.load_state_dict(_to_lgvit(ref))
    assert _max_diff(ref, model, torch.randn(2, 3, 448, 448)) <= 1e-4


def test_official_masks_and_round_trip(tmp_path: Path) -> None:
    ref, model = _pair("swin_tiny_patch4_window7_224", **NARROW)
    official = convert.to_official(model.state_dict())
    masks = {k for k in official if k.endswith("attn_mask")}
    assert masks == {f"layers.{i}.blocks.1.attn_mask" for i in range(3)}  # stage 4 (7x7) does not shift
    assert "layers.0.downsample.reduction.weight" in official and "head.weight" in official
    for name, buf in ref.named_buffers():  # timm builds the 224 masks and indices the official way
        assert torch.equal(official[name].to(buf.dtype), buf), name
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": official}, path)  # as the microsoft release
    loaded = lgvit.create_model("swin_tiny", pretrained=str(path), **NARROW).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_formats_detected() -> None:
    model = lgvit.create_model("swin_tiny", **NARROW)
    timm_sd = timm.create_model("swin_tiny_patch4_window7_224", **NARROW).state_dict()
    assert convert.detect(timm_sd) == "timm"
    assert convert.detect(convert.to_official(model.state_dict())) == "official"
    assert convert.detect(model.state_dict()) == "lgvit"
    with pytest.raises(CheckpointError, match="not a Swin checkpoint"):
        convert.detect({"conv.weight": torch.zeros(1)})


def test_timm_checkpoint_file_loads(tmp_path: Path) -> None:
    ref = randomize_(timm.create_model("swin_tiny_patch4_window7_224", **NARROW)).eval()
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    model = lgvit.create_model("swin_tiny", pretrained=str(path), **NARROW).eval()
    assert _max_diff(ref, model, torch.randn(2, 3, 224, 224)) <= 1e-4


def test_window_7_weights_into_window_12_model(tmp_path: Path) -> None:
    path = tmp_path / "w7.safetensors"
    lgvit.save_weights(lgvit.create_model("swin_tiny", **NARROW), path)
    model = lgvit.create_model("swin_tiny", window_size=12, **NARROW).eval()
    report = lgvit.load_weights(model, path)
    assert len(report.resized) == 8  # every block's table
    assert model.stages[0].blocks[0].attn.rel_pos.relative_position_bias_table.shape == (23 * 23, 1)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 384, 384))).all()


def test_stage_window_rule() -> None:
    assert stage_window((56, 56), 7) == ((7, 7), (3, 3))
    assert stage_window((7, 7), 7) == ((7, 7), (0, 0))  # stage 4 at 224: one window, no shift
    assert stage_window((8, 6), 7) == ((7, 6), (3, 0))  # per axis


def test_shift_mask_isolates_wrap_and_padding() -> None:
    size, window, shift = (10, 13), (7, 7), (3, 3)
    mask = shifted_window_mask(size, window, shift, torch.device("cpu"))  # (nW, N, N) over the 14x14 padded map
    assert mask.shape == (4, 49, 49) and set(mask.unique().tolist()) == {-100.0, 0.0}
    # token kind per window slot: padding, wrapped by the roll, or in place (rows and columns alike)
    rows, cols = torch.arange(14), torch.arange(14)
    kind_r = torch.where(rows >= 10, 2, torch.where(rows >= 10 - 3, 1, 0))
    kind_c = torch.where(cols >= 13, 2, torch.where(cols >= 13 - 3, 1, 0))
    kind = (kind_r[:, None] * 3 + kind_c[None, :]).view(2, 7, 2, 7).permute(0, 2, 1, 3).reshape(4, 49)
    expected = torch.where(kind[:, :, None] == kind[:, None, :], 0.0, -100.0)
    assert torch.equal(mask, expected)
    assert shifted_window_mask((14, 14), window, (0, 0), torch.device("cpu")) is None  # nothing to mask
    unshifted = shifted_window_mask(size, window, (0, 0), torch.device("cpu"))  # padding alone is masked too
    assert unshifted[1, 0, 5] == 0 and unshifted[1, 0, 6] == -100  # window 1: columns 7..12 real, 13 padding


def test_bias_cache_follows_the_table_and_is_not_state() -> None:
    model = randomize_(lgvit.create_model("swin_tiny", **NARROW)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        assert not any("cache" in k for k in model.state_dict())
        model.stages[0].blocks[1].attn.rel_pos.relative_position_bias_table.add_(1.0)  # in place
        after = model(x)
    fresh = lgvit.create_model("swin_tiny", **NARROW).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(before, after) and torch.equal(after, fresh(x))


def test_bias_cache_follows_updates_that_keep_the_version() -> None:
    """torch's fused AdamW (torch 2.14) and writes through `.data` change parameters in place without bumping
    their version counter: the cached bias must still follow the table, as validation between epochs needs."""
    model = randomize_(lgvit.create_model("swin_tiny", **NARROW))
    x = torch.randn(2, 3, 64, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    table = model.stages[0].blocks[1].attn.rel_pos.relative_position_bias_table
    fresh = lgvit.create_model("swin_tiny", **NARROW).eval()
    with torch.no_grad():
        before = model.eval()(x)  # fills the cache
    model.train()(x).square().mean().backward()
    optimizer.step()
    for update in ("fused step", "write through .data"):
        if update != "fused step":
            version = table._version
            table.data.mul_(2.0)
            assert table._version == version  # what the cache cannot rely on
        fresh.load_state_dict(model.state_dict())
        with torch.no_grad():
            after = model.eval()(x)
            assert not torch.allclose(before, after) and torch.equal(after, fresh(x)), update
        before = after


def test_training_reaches_the_bias_table() -> None:
    model = lgvit.create_model("swin_tiny", **NARROW).train()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    table = model.stages[0].blocks[1].attn.rel_pos.relative_position_bias_table  # a shifted block
    assert table.grad is not None and table.grad.abs().sum() > 0


def test_locality_replaces_the_feed_forward(tmp_path: Path) -> None:
    model = Swin(SwinConfig(depths=(1, 1, 1, 1), locality=Locality("hs+se", width_divisor=4))).eval()
    keys = list(model.state_dict())
    assert "stages.0.blocks.0.locality.conv1.weight" in keys and not any(".mlp." in k or ".norm2." in k for k in keys)
    assert model.stages[0].blocks[0].locality.attn.fc1.out_channels == 384 // (96 // 4)  # LocalViT-Swin's SE
    seen = []
    for stage in (0, 3):
        locality = model.stages[stage].blocks[0].locality
        locality.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    assert seen == [(2, 96, 16, 16), (2, 768, 2, 2)]  # each stage's (B, C, H, W) map
    # lgvit-layout files written before the locality module was renamed from `ffn` still load
    old = {k.replace(".locality.", ".ffn."): v for k, v in model.state_dict().items()}
    save_file(old, tmp_path / "old.safetensors")
    loaded = lgvit.create_model("localvit_swin_tiny", depths=(1, 1, 1, 1), pretrained=str(tmp_path / "old.safetensors"))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_variants_tags_and_aliases() -> None:
    assert lgvit.get_spec("swin_base_patch4_window12_384").name == "swin_base_384"
    tiny = lgvit.get_spec("swin_tiny")
    assert tiny.default_tag == "ms_in1k" and tiny.timm_name == "swin_tiny_patch4_window7_224"
    assert tiny.tags["ms_in22k"].num_classes == 21841
    assert tiny.tags["ms_in1k"].hf_hub_id == "timm/swin_tiny_patch4_window7_224.ms_in1k"
    assert tiny.tags["ms_in1k"].crop_pct == 0.9
    b384 = lgvit.get_spec("swin_base_384")
    assert b384.tags["ms_in22k_ft_in1k"].input_size == (3, 384, 384) and b384.tags["ms_in1k"].crop_pct == 1.0
    assert set(lgvit.get_spec("swin_large").tags) == {"ms_in22k_ft_in1k", "ms_in22k"}


def test_an_in22k_head_is_refused(tmp_path: Path) -> None:
    """A checkpoint with another head; bad inputs and configs are in test_models.py."""
    path = tmp_path / "in22k.safetensors"
    head = lgvit.create_model("swin_tiny", depths=(1, 1, 1, 1), num_classes=21841)
    save_file(head.state_dict(), str(path))  # tensors only: no metadata saying the head's size
    with pytest.raises(CheckpointError, match="(?s)wrong shape.*head.fc.weight.*num_classes"):  # an in22k head
        lgvit.create_model("swin_tiny", pretrained=str(path), depths=(1, 1, 1, 1))
