"""LocalViT and its bases (DeiT, PVT, TNT, Swin): counts, timm parity, official layout, locality, interface, errors."""

import functools
from pathlib import Path

import pytest
import timm
import torch
from conftest import randomize_

import lgvit
from lgvit import CheckpointError
from lgvit.layers.locality import ACT_CODES, Locality, LocalityFeedForward
from lgvit.registry import FAMILIES
from lgvit.tools.flops import count_macs, count_params

DATA = Path(__file__).parent / "data"
VARIANTS = [
    "localvit_tiny",
    "localvit_tiny_se4",
    "localvit_small",
    "localvit_pvt_tiny",
    "localvit_tnt_tiny",
    "localvit_swin_tiny",
    "deit_tiny",
    "deit_small",
    "pvt_tiny",
    "tnt_tiny",
]
# small configs of each base, for tests that do not need the real depth
SMALL = {
    "localvit_tiny": dict(depth=2, embed_dim=64, num_heads=2),
    "localvit_pvt_tiny": dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64), num_heads=(1, 1, 2, 2)),
    "localvit_tnt_tiny": dict(depth=2, embed_dim=48),
    "localvit_swin_tiny": dict(depths=(1, 1, 2, 1), embed_dim=24, num_heads=(1, 2, 2, 4)),
}


@functools.cache
def _small(name: str) -> torch.nn.Module:
    """A randomised small model of `name` in eval mode, built once; tests must leave it as they found it."""
    return randomize_(lgvit.create_model(name, **SMALL[name])).eval()


def _official(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return FAMILIES[model.spec.family].converter.to_official(model.state_dict())


@pytest.mark.parametrize("name", VARIANTS)
def test_params_and_gmacs_match_official(name: str) -> None:
    spec = lgvit.get_spec(name)
    with torch.device("meta"):
        model = lgvit.create_model(name)
    assert abs(count_params(model) / 1e6 - spec.params_m) <= 0.01
    assert abs(count_macs(model) / 1e9 / spec.gmacs - 1) <= 0.01


@pytest.mark.parametrize(
    ("name", "timm_name", "depth", "size"),
    [
        ("deit_tiny", "deit_tiny_patch16_224", 12, (224, 224)),
        ("deit_tiny", "deit_tiny_patch16_224", 3, (160, 256)),
        ("deit_small", "deit_small_patch16_224", 2, (224, 224)),
    ],
)
def test_deit_equals_timm(name: str, timm_name: str, depth: int, size: tuple[int, int]) -> None:
    ref = randomize_(timm.create_model(timm_name, depth=depth, dynamic_img_size=True)).eval()
    model = lgvit.create_model(name, depth=depth).eval()
    converter = FAMILIES["vit"].converter
    sd = ref.state_dict()
    assert converter.detect(sd) == "official"
    model.load_state_dict(converter.to_lgvit(sd, "official"))
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert (ref(x) - model(x)).abs().max() <= 1e-4
        assert (
            ref.forward_head(ref.forward_features(x), pre_logits=True)
            - model.forward_head(model.forward_features(x), pre_logits=True)
        ).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["localvit_pvt_tiny", "localvit_swin_tiny"])
def test_official_key_names_and_shapes(name: str) -> None:
    with torch.device("meta"):
        model = lgvit.create_model(name)
    official = {k: ",".join(map(str, v.shape)) or "-" for k, v in _official(model).items()}
    lines = (DATA / f"{name}_official_keys.txt").read_text().splitlines()
    assert official == dict(line.split(" ") for line in lines)


@pytest.mark.parametrize("name", ["localvit_tiny", "localvit_pvt_tiny", "localvit_tnt_tiny", "localvit_swin_tiny"])
def test_official_layout_round_trip(tmp_path: Path, name: str) -> None:
    model = _small(name)
    path = tmp_path / "localvit.pth"
    torch.save({"model": _official(model)}, path)  # as the official releases
    loaded = lgvit.create_model(name, pretrained=str(path), **SMALL[name]).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("code", sorted(ACT_CODES))
def test_every_official_act_code_round_trips(tmp_path: Path, code: int) -> None:
    locality = Locality(ACT_CODES[code], 8)
    model = randomize_(lgvit.create_model("localvit_tiny", depth=1, embed_dim=32, num_heads=2, locality=locality))
    official = _official(model.eval())
    # the official nn.Sequential: channel attention (if any) at index 6, the last 1x1 conv after it
    last_conv = "7" if "+" in locality.act else "6"
    assert official[f"blocks.0.conv.conv.{last_conv}.weight"].shape == (32, 128, 1, 1)
    if locality.act == "hs+se":
        assert official["blocks.0.conv.conv.6.fc.0.weight"].shape == (16, 128)  # Linear, 128 // 8
    torch.save({"model": official}, tmp_path / "m.pth")
    loaded = lgvit.create_model(
        "localvit_tiny", pretrained=str(tmp_path / "m.pth"), depth=1, embed_dim=32, num_heads=2, locality=locality
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_locality_module_structure() -> None:
    m = LocalityFeedForward(192, 4.0, Locality("hs+se", 192))
    assert m.conv2.groups == 768 and m.conv2.kernel_size == (3, 3) and m.conv2.stride == (1, 1)
    assert all(c.bias is None for c in (m.conv1, m.conv2, m.conv3))
    assert m.attn.fc1.out_channels == 4 and isinstance(m.attn.gate, torch.nn.Hardsigmoid)
    x = torch.randn(2, 192, 5, 7)
    with torch.no_grad():
        torch.nn.init.zeros_(m.bn3.weight)
        torch.nn.init.zeros_(m.bn3.bias)
        assert torch.equal(m.eval()(x), x)  # the residual sits inside the module


@pytest.mark.parametrize("name", ["localvit_tiny", "localvit_pvt_tiny", "localvit_tnt_tiny"])
def test_class_token_bypasses_the_locality_module(name: str) -> None:
    model = _small(name)
    block = model.stages[-1].blocks[0] if name == "localvit_pvt_tiny" else model.blocks[0]
    dim = block.locality.conv1.in_channels
    seen = []
    hook = block.locality.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    x = torch.randn(2, 1 + 3 * 4, dim)
    y = x.clone()
    y[:, 0] += 1.0  # only the class token differs
    with torch.no_grad():
        out_x, out_y = block.feed_forward(x, (3, 4), 1), block.feed_forward(y, (3, 4), 1)
    hook.remove()
    assert torch.equal(seen[0], seen[1])  # the module never sees the class token
    assert torch.equal(out_x[:, 1:], out_y[:, 1:])
    assert torch.equal(out_y[:, 0], y[:, 0])  # passed through untouched
    assert not hasattr(block, "norm2") and not hasattr(block, "mlp")


def test_token_models_name_the_multiple_they_need() -> None:
    """The patch multiple in the message; the other bad inputs and configs are in test_models.py."""
    with pytest.raises(ValueError, match="multiples of 16"):
        _small("localvit_tiny")(torch.randn(1, 3, 64, 70))
    with pytest.raises(ValueError, match="multiples of 32"):
        _small("localvit_pvt_tiny")(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="reduction"):
        LocalityFeedForward(8, 1.0, Locality("hs+se", 16))


def test_checkpoint_of_another_base_is_rejected(tmp_path: Path) -> None:
    torch.save({"model": _official(_small("localvit_pvt_tiny"))}, tmp_path / "pvt.pth")
    with pytest.raises(CheckpointError, match="missing"):
        lgvit.create_model("localvit_tiny", pretrained=str(tmp_path / "pvt.pth"), depth=1)


def test_gcvit_hybrid_blocks_run_the_locality_module_on_the_attention_output() -> None:
    """localvit_gcvit_fmnist: each GC ViT block (local and global-query) is its attention half, then LocalViT's
    feed-forward on the (B, C, H, W) map in place of the pre-norm MLP."""
    from lgvit.models.gcvit import block_attention

    model = randomize_(lgvit.create_model("localvit_gcvit_fmnist")).eval()
    keys = model.state_dict().keys()
    assert "stages.0.blocks.1.locality.conv2.weight" in keys
    assert not any(".blocks." in k and (".mlp." in k or ".norm2." in k) for k in keys)
    calls = []
    hooks = [
        block.register_forward_hook(lambda mod, args, out: calls.append((mod, args, out)))
        for stage in model.stages
        for block in stage.blocks
    ]
    with torch.no_grad():
        model(torch.randn(2, 1, 37, 30))  # padded windows at stage 0, a map smaller than the window at stage 2
        for h in hooks:
            h.remove()
        assert len(calls) == 6 and {mod.global_query for mod, _, _ in calls} == {False, True}
        for block, (x, q_global, window), out in calls:
            mid = x + block_attention(block, block.norm1(x), q_global, window)  # (B, H, W, C)
            expected = block.locality(mid.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
