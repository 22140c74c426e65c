"""MaxViT: parity with timm's port of the TensorFlow model, conversion, counts, any-size behaviour."""

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_

import lgvit
from lgvit import CheckpointError, load_weights, save_weights
from lgvit.convert.maxvit import CONVERTER as convert
from lgvit.layers import Conv2dSame, avg_pool_same, grid_partition, grid_reverse, window_partition, window_reverse
from lgvit.models.maxvit import MaxViTConfig, MBConv, PartitionAttention, partition_attention
from lgvit.tools.flops import count_macs, count_params

timm = pytest.importorskip("timm")

# timm's own figures for `maxvit_*_tf_*` (params M, GMACs): the numbers. They include the
# one-hot einsum bias lookup of the TensorFlow graph, which lgvit runs only under math_attention().
TIMM_FIGURES = {
    "tiny": {224: (30.917, 5.552), 384: (30.977, 17.393), 512: (31.050, 33.250)},
    "small": {224: (68.928, 11.589), 384: (69.019, 35.670), 512: (69.128, 66.907)},
    "base": {224: (119.468, 23.922), 384: (119.653, 73.453), 512: (119.876, 137.411)},
    "large": {224: (211.786, 43.520), 384: (212.033, 132.090), 512: (212.330, 243.926)},
}
MAXVIT_NAMES = [n for n in lgvit.list_models("maxvit_*") if lgvit.get_spec(n).params_m is not None]


def _timm_pair(name: str, **overrides) -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's model with random weights and stats, and lgvit's with the same weights converted; both eval."""
    ref = timm.create_model(lgvit.get_spec(name).timm_name, **overrides).eval()
    randomize_(ref)
    model = lgvit.create_model(name, **overrides).eval()
    sd = ref.state_dict()
    model.load_state_dict(convert.to_lgvit(sd, convert.detect(sd)), strict=True)
    return ref, model


def _small(**overrides) -> torch.nn.Module:
    """A two-block-per-model MaxViT, quick enough for behaviour tests."""
    cfg = dict(embed_dims=(32, 32, 64, 64), depths=(1, 1, 1, 1), stem_width=16, window_size=3, num_classes=10)
    return lgvit.create_model("maxvit_tiny", **(cfg | overrides))


@pytest.mark.parametrize(
    "name, size, overrides",
    [
        ("maxvit_tiny_224", 224, {}),
        ("maxvit_tiny_384", 384, {"depths": (1, 1, 2, 1)}),  # fewer blocks on both sides, for time
        ("maxvit_small_224", 224, {"depths": (1, 2, 2, 1)}),  # fewer blocks on both sides, for time
    ],
)
def test_matches_timm(name: str, size: int, overrides: dict) -> None:
    ref, model = _timm_pair(name, **overrides)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = ref(x), model(x)
        feats, ref_feats = model.forward_features(x), ref.forward_features(x)
    assert expected.abs().max() > 1.0  # the comparison is not between two near-zero tensors
    assert (got - expected).abs().max().item() <= 1e-4
    assert (feats - ref_feats).abs().max() <= 1e-5 * ref_feats.abs().max()  # features reach ~1e2: relative


def test_train_mode_matches_timm() -> None:
    """The training path (BatchNorm on batch statistics, nothing folded) equals timm's too."""
    ref, model = _timm_pair("maxvit_tiny_224", depths=(1, 1, 1, 1), drop_path_rate=0.0)
    ref.train(), model.train()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() <= 1e-4


@pytest.mark.parametrize("size", [(16, 16), (15, 12), (13, 9)])
@pytest.mark.parametrize("stride", [1, 2])
def test_folded_mbconv_equals_plain(size: tuple[int, int], stride: int) -> None:
    """Eval's folded BatchNorms (and pre-padded input) give the plain sequence of layers, at odd sizes too."""
    cfg = MaxViTConfig()
    block = randomize_(MBConv(32 if stride == 2 else 64, 64, stride, 0.0, cfg)).eval()
    x = torch.randn(2, block.pre_norm.num_features, *size)
    with torch.no_grad():
        hidden = F.gelu(block.norm1(block.conv1_1x1(block.pre_norm(x))), approximate="tanh")
        plain = block.norm2(block.conv2_kxk(hidden))
        assert torch.allclose(block._folded_convs(x), plain, atol=1e-5)


def test_bias_table_orientation_matters() -> None:
    """Loading timm's tables without the flip gives different outputs: the parity test can fail."""
    ref, model = _timm_pair("maxvit_tiny_224", depths=(1, 1, 1, 1))
    sd = {k: v.flatten(1).T if v.ndim == 3 else v for k, v in ref.state_dict().items()}
    model.load_state_dict(sd)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() > 1e-2


def test_converter_round_trip_and_detect() -> None:
    with torch.device("meta"):
        ref = timm.create_model("maxvit_tiny_tf_224")
    sd = {k: torch.randn(v.shape) for k, v in ref.state_dict().items()}
    assert convert.detect(sd) == "timm"
    ours = convert.to_lgvit(sd, "timm")
    assert convert.detect(ours) == "lgvit"
    back = convert.to_official(ours)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    with pytest.raises(CheckpointError, match="not a MaxViT checkpoint"):
        convert.detect({"patch_embed.proj.weight": torch.zeros(1)})


def test_load_timm_file_strictly_and_resize(tmp_path) -> None:
    """A timm-layout file loads strictly into the same model, and into the 384 model with resized tables."""
    from safetensors.torch import save_file

    ref, model = _timm_pair("maxvit_tiny_224", depths=(1, 1, 1, 1))
    path = tmp_path / "timm_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    fresh = lgvit.create_model("maxvit_tiny_224", depths=(1, 1, 1, 1)).eval()
    report = load_weights(fresh, path)
    assert report.format == "timm" and not report.resized
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (fresh(x) - ref(x)).abs().max() <= 1e-4
    big = lgvit.create_model("maxvit_tiny_384", depths=(1, 1, 1, 1))
    report = load_weights(big, path)
    assert len(report.resized) == 8  # two tables per block, four blocks
    assert big.stages[0].blocks[0].attn_grid.attn.rel_pos.relative_position_bias_table.shape == (23 * 23, 2)
    lgvit_file = tmp_path / "lgvit_tiny.safetensors"
    save_weights(fresh, lgvit_file)
    assert load_weights(lgvit.create_model("maxvit_tiny_224", depths=(1, 1, 1, 1)), lgvit_file).format == "lgvit"


def test_wrong_checkpoint_names_the_keys(tmp_path) -> None:
    path = tmp_path / "other.safetensors"
    save_weights(_small(), path)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_weights(_small(embed_dims=(32, 32, 64, 96)), path)


@pytest.mark.parametrize("name", MAXVIT_NAMES)
def test_params_and_gmacs(name: str) -> None:
    spec = lgvit.get_spec(name)
    with torch.device("meta"):
        model = lgvit.create_model(name)
    params = count_params(model) / 1e6
    gmacs = count_macs(model, (3, spec.native_size, spec.native_size)) / 1e9
    assert params == pytest.approx(spec.params_m, abs=0.01)
    assert gmacs == pytest.approx(spec.gmacs, rel=0.001)
    size_name, size = name.split("_")[1], spec.native_size
    if size_name in TIMM_FIGURES:
        timm_params, timm_gmacs = TIMM_FIGURES[size_name][size]
        assert params == pytest.approx(timm_params, abs=0.01)
        assert gmacs == pytest.approx(timm_gmacs, rel=0.0005)


def test_macs_count_the_reference_graph_in_any_mode() -> None:
    model = lgvit.create_model("maxvit_fmnist")
    train_macs = count_macs(model, (1, 32, 32))
    assert count_macs(model.eval(), (1, 32, 32)) == train_macs  # eval's BN folding is not counted


def test_names_aliases_and_tags() -> None:
    assert lgvit.get_spec("maxvit_tiny").name == lgvit.get_spec("maxvit_tiny_tf_224").name == "maxvit_tiny_224"
    assert lgvit.get_spec("maxvit_large_tf_512").timm_name == "maxvit_large_tf_512"
    assert len(MAXVIT_NAMES) == 15
    tiny = lgvit.get_spec("maxvit_tiny_224").tags["in1k"]
    assert tiny.hf_hub_id == "timm/maxvit_tiny_tf_224.in1k" and tiny.crop_pct == 0.95
    assert tiny.mean == (0.485, 0.456, 0.406)
    big = lgvit.get_spec("maxvit_base_512").tags["in21k_ft_in1k"]
    assert (big.mean, big.crop_pct, big.crop_mode, big.input_size) == ((0.5,) * 3, 1.0, "squash", (3, 512, 512))
    assert lgvit.get_spec("maxvit_xlarge_224").config.num_classes == 21843
    assert lgvit.get_spec("maxvit_base_384").config.window_size == 12


def test_pre_logits_are_tanh_features() -> None:
    """MaxViT's head particulars (the common head interface is in test_models.py)."""
    model = _small().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pre.shape == (2, 64) and pre.abs().max() <= 1.0  # tanh features
        assert torch.allclose(model.head.fc(pre), model(x), atol=1e-6)
    assert "stages.0.blocks.0.attn_grid.attn.rel_pos.relative_position_bias_table" in model.no_weight_decay()


@pytest.mark.parametrize("grid", [False, True])
def test_padding_is_masked_out(grid: bool) -> None:
    """A window holding padding attends exactly as the same window without it: padding never leaks in."""
    cfg = MaxViTConfig(window_size=7, head_dim=16)
    block = PartitionAttention(32, grid, 0.0, cfg).eval()
    randomize_(block)
    x = torch.randn(1, 9, 8, 32)
    with torch.no_grad():
        full = partition_attention(block, x)
        if grid:  # padded to 14x14, stride 2: window (1, 1) holds rows/cols 1, 3, 5, 7 (+ padding)
            part, region = (4, 4), (slice(None), slice(1, None, 2), slice(1, None, 2))
        else:  # window (1, 1) holds rows 7-8, cols 7 (+ padding)
            part, region = (2, 1), (slice(None), slice(7, None), slice(7, None))
        tokens = x[region]
        alone = block.attn(tokens.reshape(1, -1, 32), part).view(tokens.shape)
    assert torch.allclose(full[region], alone, atol=1e-5)


def test_grid_partition_round_trip_and_layout() -> None:
    x = torch.randn(2, 10, 9, 4)
    windows, padded = grid_partition(x, (4, 3))
    assert padded == (12, 9) and windows.shape == (2 * 3 * 3, 12, 4)
    # window 1 of image 0 takes rows 0, 3, 6, 9 and columns 1, 4, 7
    assert torch.equal(windows[1].view(4, 3, 4), x[0, 0::3, 1::3])
    # window 6 takes rows 2, 5, 8 and 11 (padding), columns 0, 3, 6
    assert torch.equal(windows[6].view(4, 3, 4)[:3], x[0, 2::3, 0::3]) and not windows[6].view(4, 3, 4)[3].any()
    assert torch.equal(grid_reverse(windows, (4, 3), padded, (10, 9)), x)
    blocks, padded = window_partition(x, (4, 3))
    assert torch.equal(window_reverse(blocks, (4, 3), padded, (10, 9)), x)


def test_tf_same_padding() -> None:
    """Stride-2 layers give ceil(n / 2) outputs and match timm's TF-'SAME' layers; edge pools average valid pixels."""
    from timm.layers import create_conv2d

    for n in (7, 8):
        conv = Conv2dSame(3, 4, 3, 2)
        ref = create_conv2d(3, 4, 3, stride=2, padding="same", bias=True)
        ref.load_state_dict(conv.state_dict())
        x = torch.randn(1, 3, n, n + 3)
        assert conv(x).shape[-2:] == (-(-n // 2), -(-(n + 3) // 2))
        assert torch.allclose(conv(x), ref(x), atol=1e-6)
    x = torch.randn(1, 2, 5, 4)
    pooled = avg_pool_same(x)
    assert pooled.shape[-2:] == (3, 2)
    assert torch.allclose(pooled[..., 2, :], F.avg_pool1d(x[..., 4, :], 2))  # last row: one pixel high
