"""lgvit.explain: attention maps in the image's layout for every family (shapes at odd sizes, rows summing
to 1, hand-built attention recovered exactly), an unchanged forward while recording, rollout, Grad-CAM and
Layer-CAM against their definitions, and `lgvit explain` on 1- and 3-channel models."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import make_idx_dir
from torch import nn

from lgvit import create_model
from lgvit.cli import main
from lgvit.explain import attention_maps, attention_rollout, grad_cam, layer_cam
from lgvit.explain.figures import fit_to_image, peak, pointing_hits
from lgvit.explain.maps import collect
from lgvit.layers import Conv2dSame
from lgvit.layers.attention import WindowAttention
from lgvit.layers.window import padded_size
from lgvit.training.checkpoint import FORMAT
from lgvit.training.report import confident_mistakes

SIZE = (37, 45)  # odd: every windowed stage pads, Swin shifts stage 0
TINY_TNT = dict(embed_dim=48, inner_dim=12, depth=2, num_heads=3, inner_num_heads=2)
TINY_PVT = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1))


def _windowed(name: str) -> nn.Module:
    return create_model(name, in_chans=1, num_classes=4).eval()


def _stage_sizes(size: tuple[int, int], strides: list[int]) -> list[tuple[int, int]]:
    return [(-(-size[0] // s), -(-size[1] // s)) for s in strides]


@pytest.mark.parametrize("name", ["gcvit_fmnist", "swin_fmnist", "maxvit_fmnist"])
def test_window_maps_have_the_stage_layout(name: str) -> None:
    model = _windowed(name)
    x = torch.randn(2, 1, *SIZE)
    with torch.no_grad():
        ref = model(x)
    maps = attention_maps(model, x)
    assert torch.equal(collect(model, x)[0], ref)  # the output while recording: SDPA's, bit for bit
    with torch.no_grad():
        assert torch.equal(model(x), ref)  # and recording left the model as it was
    sizes = _stage_sizes(SIZE, [level["reduction"] for level in model.feature_info])
    blocks = [n for n, m in model.named_modules() if isinstance(m, WindowAttention)]
    assert list(maps) == blocks
    for key, m in maps.items():
        stage = int(key.split(".")[1])
        attn = model.get_submodule(key)
        h, w = sizes[stage]
        window = attn.rel_pos.window_size
        n = min(window[0], h) * min(window[1], w)
        assert m.shape == (2, attn.num_heads, n, h, w), key
        assert (m >= 0).all() and m.amax() <= 1 + 1e-6


def test_output_unchanged_while_recording_token_models() -> None:
    for name, kw, size in [
        ("deit_fmnist", {}, (28, 36)),
        ("pvt_tiny", TINY_PVT, (64, 96)),
        ("tnt_tiny", TINY_TNT, (32, 48)),
    ]:
        model = create_model(name, **kw).eval()
        x = torch.randn(2, model.in_chans, *size)
        with torch.no_grad():
            ref = model(x)
        maps = attention_maps(model, x)
        assert torch.equal(collect(model, x)[0], ref)
        with torch.no_grad():
            assert torch.equal(model(x), ref)
        assert maps, name


def test_token_map_shapes() -> None:
    deit = create_model("deit_fmnist").eval()
    maps = attention_maps(deit, torch.randn(2, 1, 28, 36))
    assert {tuple(m.shape) for m in maps.values()} == {(2, 3, 7, 9)}  # the class token over 7 x 9 patches
    pvt = create_model("pvt_tiny", **TINY_PVT).eval()
    maps = attention_maps(pvt, torch.randn(1, 3, 64, 96))
    # stage i: a (16, 24) / 2**i grid, keys reduced 8, 4, 2, 1 times: always (2, 3); the last is the class token's
    assert [tuple(m.shape) for m in maps.values()] == [(1, 1, 2, 3), (1, 2, 2, 3), (1, 3, 2, 3), (1, 4, 2, 3)]
    tnt = create_model("tnt_tiny", **TINY_TNT).eval()
    maps = attention_maps(tnt, torch.randn(1, 3, 32, 48))
    assert maps["blocks.0.attn_out"].shape == (1, 3, 2, 3)  # class token over the 2 x 3 patches
    assert maps["blocks.0.attn_in"].shape == (1, 2, 8, 12)  # 4 x 4 pixels per patch, on the pixel map


def _force_self_attention(model: nn.Module) -> None:
    """q = k = 0 and a bias of +50 at offset (0, 0): every query attends only to itself."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, WindowAttention):
                m.qkv.weight.zero_()
                m.qkv.bias.zero_()
                table = m.rel_pos.relative_position_bias_table
                table.zero_()
                table[table.shape[0] // 2] = 50.0  # the centre row: offset (0, 0)


def _expected_slot(size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int], grid: bool) -> torch.Tensor:
    """(H, W): the query slot of each map position, written from the partitions' definitions."""
    y = torch.arange(size[0])[:, None].expand(*size)
    x = torch.arange(size[1])[None, :].expand(*size)
    if grid:  # rows a * sh + b: slot a, window b, sh = padded H / gh
        sh, sw = (p // g for p, g in zip(padded_size(size, window), window, strict=True))
        return (y // sh) * window[1] + x // sw
    y, x = (y - shift[0]) % size[0], (x - shift[1]) % size[1]  # where the cyclic shift moved it
    return (y % window[0]) * window[1] + x % window[1]


@pytest.mark.parametrize("name", ["gcvit_fmnist", "swin_fmnist", "maxvit_fmnist"])
def test_known_attention_is_recovered(name: str) -> None:
    """Self-attention only: each position's map is 1 at its own query slot, through shifts, grids and padding."""
    model = _windowed(name)
    _force_self_attention(model)
    x = torch.randn(1, 1, *SIZE)
    maps = attention_maps(model, x)
    checked_shift = checked_grid = checked_global = False
    for key, m in maps.items():
        attn = model.get_submodule(key)
        _, heads, n, h, w = m.shape
        window = tuple(min(a, s) for a, s in zip(attn.rel_pos.window_size, (h, w), strict=True))
        grid = key.endswith("attn_grid.attn")
        block = int(key.split(".")[3])
        shifted = name.startswith("swin") and block % 2 == 1 and h > 7
        shift = (window[0] // 2, window[1] // 2) if shifted else (0, 0)
        slot = _expected_slot((h, w), window, shift, grid)
        got = m.gather(2, slot.expand(1, heads, 1, h, w))[:, :, 0]  # (1, heads, h, w)
        assert torch.allclose(got, torch.ones_like(got), atol=1e-5), key
        assert torch.allclose(m.sum(2), torch.ones_like(got), atol=1e-5), key  # and from no other slot
        checked_shift |= shifted
        checked_grid |= grid
        checked_global |= attn.global_query
    assert checked_shift or not name.startswith("swin")
    assert checked_grid or not name.startswith("maxvit")
    assert checked_global or not name.startswith("gcvit")


@pytest.mark.parametrize("name", ["gcvit_fmnist", "swin_fmnist", "maxvit_fmnist"])
def test_rows_sum_to_one(name: str) -> None:
    """At a size with no padding, each query's attention over its window's keys sums to 1."""
    model = _windowed(name)
    x = torch.randn(2, 1, 28, 28)
    for key, m in attention_maps(model, x, ["stages.0"]).items():
        attn = model.get_submodule(key)
        window = attn.rel_pos.window_size
        B, heads, n, h, w = m.shape
        assert (h % window[0], w % window[1]) == (0, 0)
        if key.endswith("attn_grid.attn"):  # window (a, b) holds rows a, a + sh, ...: sum over the slots' keys
            sums = m.reshape(B, heads, n, window[0], h // window[0], window[1], w // window[1]).sum((3, 5))
        else:
            sums = m.reshape(B, heads, n, h // window[0], window[0], w // window[1], window[1]).sum((4, 6))
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5), key


def test_uniform_token_attention_and_rollout() -> None:
    """q = k = 0 gives uniform attention: the class token's map is 1 / (N + 1) and the rollout of L blocks
    is (1 - 2**-L) / (N + 1) per patch ((U + I) / 2 to the L-th power, U @ U = U)."""
    model = create_model("deit_fmnist").eval()
    with torch.no_grad():
        for blk in model.blocks:
            dim = blk.attn.qkv.in_features
            blk.attn.qkv.weight[: 2 * dim].zero_()
            blk.attn.qkv.bias[: 2 * dim].zero_()
    x = torch.randn(2, 1, 28, 36)
    n = 7 * 9 + 1
    for m in attention_maps(model, x).values():
        assert torch.allclose(m, torch.full_like(m, 1 / n))
    rollout = attention_rollout(model, x)
    assert rollout.shape == (2, 7, 9)
    assert torch.allclose(rollout, torch.full_like(rollout, (1 - 0.5 ** len(model.blocks)) / n))


def test_token_rows_sum_to_one() -> None:
    """PVT's early stages: the attention each reduced key receives, averaged over queries, sums to 1."""
    model = create_model("pvt_tiny", **TINY_PVT).eval()
    maps = attention_maps(model, torch.randn(2, 3, 64, 96), ["stages.0", "stages.1"])
    for m in maps.values():
        assert torch.allclose(m.sum((2, 3)), torch.ones(m.shape[:2]), atol=1e-5)


def test_rollout_refuses_windowed_models() -> None:
    with pytest.raises(ValueError, match="rollout needs a class-token model"):
        attention_rollout(_windowed("swin_fmnist"), torch.randn(1, 1, 28, 28))


def test_block_selection_errors_name_the_choices() -> None:
    model = _windowed("gcvit_fmnist")
    assert list(attention_maps(model, torch.randn(1, 1, 28, 28), ["stages.1"])) == [
        "stages.1.blocks.0.attn",
        "stages.1.blocks.1.attn",
    ]
    with pytest.raises(ValueError, match="stages.0.blocks.0.attn"):
        attention_maps(model, torch.randn(1, 1, 28, 28), ["stages.9"])


def _linear_head_cam(model: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """relu(sum_c weights[b, c] A_c) / max over the last stage's maps A: the CAM of a pool + Linear head."""
    with torch.no_grad():
        feats = model.forward_features(x)  # (B, C, h, w)
    ref = torch.einsum("bc,bchw->bhw", weights, feats).clamp_min(0)
    return ref / ref.amax((1, 2), keepdim=True)


def test_grad_cam_equals_cam_for_a_linear_head() -> None:
    """GC ViT's head is average pool + Linear, so Grad-CAM on the last stage is relu(sum_c W[t, c] A_c) / max."""
    model = _windowed("gcvit_fmnist")
    x = torch.randn(2, 1, *SIZE)
    target = torch.tensor([1, 3])
    cam, logits = grad_cam(model, x, target)
    ref = _linear_head_cam(model, x, model.head.fc.weight[target])
    assert cam.shape == (2, 3, 3) and torch.allclose(cam, ref, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-5)


def test_layer_cam_keeps_the_positive_weights_of_a_linear_head() -> None:
    """Average pool + Linear: d score / d A_c(i, j) = W[t, c] / hw everywhere, so Layer-CAM is
    relu(sum_c relu(W[t, c]) A_c) / max, and differs from Grad-CAM, which keeps the negative weights too."""
    model = _windowed("gcvit_fmnist")
    x = torch.randn(2, 1, *SIZE)
    target = torch.tensor([0, 2])
    cam, logits = layer_cam(model, x, target)
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-5)
    assert torch.allclose(cam, _linear_head_cam(model, x, model.head.fc.weight[target].clamp_min(0)), atol=1e-5)
    assert not torch.allclose(cam, grad_cam(model, x, target)[0], atol=1e-2)


class _SquareHead(nn.Module):
    """score = W @ mean_hw(A^2): d score_t / d A_c(i, j) = 2 W[t, c] A_c(i, j) / hw, different at every position."""

    pool = "avg"

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a.square().mean((2, 3)) @ self.weight.T  # (B, classes)


class _Squares(nn.Module):
    """A 1 x 1 conv (the one level, stride 1) and `_SquareHead`."""

    feature_info = [{"module": "features", "reduction": 1}]

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 6, 1)
        self.head = _SquareHead(torch.randn(3, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_layer_and_grad_cam_follow_their_definitions() -> None:
    """Per-position gradients: Layer-CAM relu(sum_c relu(dy/dA_c(i, j)) A_c(i, j)), Grad-CAM
    relu(sum_c mean_hw(dy/dA_c) A_c), each divided by its maximum; computed by hand from the closed-form gradient."""
    torch.manual_seed(0)
    model = _Squares()
    x = torch.randn(4, 1, 5, 7)
    target = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        a = model.features(x)  # (B, C, h, w)
    w = model.head.weight.detach()[target][:, :, None, None]  # (B, C, 1, 1)
    grad = 2 * w * a / (5 * 7)  # (B, C, h, w)
    layer = (grad.clamp_min(0) * a).sum(1).clamp_min(0)  # (B, h, w)
    grad_avg = (grad.mean((2, 3), keepdim=True) * a).sum(1).clamp_min(0)  # (B, h, w)
    layer_map, grad_map = layer_cam(model, x, target)[0], grad_cam(model, x, target)[0]
    assert torch.allclose(layer_map, layer / layer.amax((1, 2), keepdim=True), atol=1e-5)
    assert torch.allclose(grad_map, grad_avg / grad_avg.amax((1, 2), keepdim=True).clamp_min(1e-12), atol=1e-5)
    assert not torch.allclose(layer_map, grad_map, atol=1e-2)


def _hooked_grad_cam(model: nn.Module, module: nn.Module, x: torch.Tensor, target: torch.Tensor, nhwc: bool):
    """Grad-CAM by hand on `module`'s output, (B, h, w) divided by its maximum."""
    kept = []
    hook = module.register_forward_hook(lambda m, i, o: kept.append(o))
    logits = model(x)
    hook.remove()
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), kept[0])
    act = kept[0].detach()
    if nhwc:
        act, grad = act.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)  # (B, C, h, w)
    ref = (grad.mean((2, 3), keepdim=True) * act).sum(1).clamp_min(0)  # (B, h, w)
    return ref / ref.amax((1, 2), keepdim=True)


def test_a_named_layer_is_explained_like_a_stage() -> None:
    """`layer=` hooks any module with a map output: the stage's own module gives the stage's map; the stem's
    first conv a stride-2 (B, C, h, w) map; a GC ViT block its (B, h, w, C) output, read as such."""
    torch.manual_seed(0)
    model = _windowed("gcvit_fmnist")
    x = torch.randn(2, 1, 29, 35)
    target = torch.tensor([1, 3])
    for cam_of in (grad_cam, layer_cam):
        assert torch.equal(cam_of(model, x, target, layer="stages.0")[0], cam_of(model, x, target, stage=0)[0])
    for layer, nhwc, side in (("stem.conv1", False, (15, 18)), ("stages.0.blocks.1", True, (8, 9))):
        cam = grad_cam(model, x, target, layer=layer)[0]
        ref = _hooked_grad_cam(model, model.get_submodule(layer), x, target, nhwc)
        assert cam.shape == (2, *side) and torch.allclose(cam, ref, atol=1e-5)


@pytest.mark.parametrize(
    ("layer", "stage", "message"),
    [
        ("stem.conv9", None, "not a module of GCViT.*named_modules"),
        ("stem.conv1", 0, "a stage or a layer, not both"),
        ("stem.down", None, "not called by GCViT's forward"),
        ("stages.0.blocks.0.attn.qkv", None, "not a map of the image's grid.*use stage="),  # windows of tokens
        ("stages.0.global_block", None, r"\(2, 2, 49, 16\), which is not a map"),  # (B, heads, tokens, dim)
    ],
)
def test_a_bad_layer_is_named(layer: str, stage: int | None, message: str) -> None:
    model = _windowed("gcvit_fmnist")
    with pytest.raises(ValueError, match=message):
        grad_cam(model, torch.randn(2, 1, 29, 35), stage=stage, layer=layer)


def test_a_layer_that_reads_both_ways_is_refused() -> None:
    """A (B, 8, 8, 8) output of a 32 x 32 input is (B, C, 8, 8) or (B, 8, 8, C): refused, not guessed."""
    model = create_model("gcvit_fmnist", in_chans=1, num_classes=4, embed_dim=8, num_heads=(1, 2, 4)).eval()
    with pytest.raises(ValueError, match="reads as both"):
        grad_cam(model, torch.randn(1, 1, 32, 32), layer="stages.0.blocks.0")


@pytest.mark.parametrize(
    ("name", "kw", "size", "side"),
    [
        ("swin_fmnist", {}, (37, 45), (3, 3)),
        ("maxvit_fmnist", {}, (37, 45), (3, 3)),
        ("deit_fmnist", {}, (28, 36), (7, 9)),  # the level before the last: after it only the class token counts
        ("pvt_tiny", TINY_PVT, (64, 96), (4, 6)),  # stage 2, stride 16
        ("tnt_tiny", TINY_TNT, (32, 48), (2, 3)),
    ],
)
def test_grad_cam_every_family(name: str, kw: dict, size: tuple[int, int], side: tuple[int, int]) -> None:
    model = create_model(name, **kw).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # frozen weights: the CAM still has a graph
    for cam_of in (grad_cam, layer_cam):
        cam, _ = cam_of(model, torch.randn(2, model.in_chans, *size))
        top = cam.amax((1, 2))
        assert cam.shape == (2, *side) and ((cam >= 0) & (cam <= 1)).all()
        assert (((top - 1).abs() < 1e-6) | (top == 0)).all()  # each map divided by its maximum (an all-zero one kept)
    with pytest.raises(ValueError, match="out of range"):
        layer_cam(model, torch.randn(1, model.in_chans, *size), stage=len(model.feature_info))
    if model.head.pool == "token":
        with pytest.raises(ValueError, match="choose an earlier level"):
            grad_cam(model, torch.randn(1, model.in_chans, *size), stage=-1)


# ---------------------------------------------------------------------------------------------
# lgvit explain


def _checkpoint(path: Path, name: str, in_chans: int) -> Path:
    """An `lgvit train`-format checkpoint of a random 4-class `name` on 28 px `in_chans`-channel images."""
    overrides = {"in_chans": in_chans, "num_classes": 4}
    data = {"img_size": 28, "in_chans": in_chans, "mean": (0.5,) * in_chans, "std": (0.25,) * in_chans}
    payload = {
        "format": FORMAT,
        "model_name": name,
        "model_overrides": overrides,
        "classes": ["a", "b", "c", "d"],
        "data": data,
        "train_config": {"data": None},
        "model": create_model(name, **overrides).state_dict(),
        "ema": None,
        "best": {"weights": "model"},
        "epoch": 1,
    }
    torch.save(payload, path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    rgb, gray = tmp_path / "shirt.png", tmp_path / "sub" / "shirt.jpg"
    gray.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 33, 3), dtype=np.uint8)).save(rgb)
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 30), dtype=np.uint8)).save(gray)
    return [rgb, gray]


def _pngs(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: Image.open(p).size for p in sorted(out.glob("*.png"))}


def test_cli_one_channel_gcvit(tmp_path: Path, images: list[Path]) -> None:
    ckpt = _checkpoint(tmp_path / "best.pt", "gcvit_fmnist", 1)
    out = tmp_path / "out"
    assert main(["explain", "--checkpoint", str(ckpt), *map(str, images), "--out", str(out)]) == 0
    for method in ("global", "gradcam", "layercam"):
        assert main(["explain", "--checkpoint", str(ckpt), str(images[1]), "--method", method, "--out", str(out)]) == 0
    pngs = _pngs(out)
    written = [f"shirt_{i}_{kind}.png" for i in (0, 1) for kind in ("input", "attention", "local_global")]  # numbered
    written += [f"shirt_{kind}.png" for kind in ("input", "global", "gradcam", "layercam", "local_global")]
    assert set(pngs) == set(written)
    assert all(w >= 200 and h >= 200 for w, h in pngs.values())  # panels of 240 px at 100 dpi
    assert pngs["shirt_0_attention.png"][0] > 3 * 240  # the input and the last stage's 8 heads side by side
    assert main(["explain", "--checkpoint", str(ckpt), str(images[0]), "--stage", "7", "--out", str(out)]) == 2


def test_cli_three_channel_deit(tmp_path: Path, images: list[Path], capsys: pytest.CaptureFixture) -> None:
    ckpt = _checkpoint(tmp_path / "best.pt", "deit_fmnist", 3)
    out = tmp_path / "out"
    for method in ("rollout", "gradcam", "attention"):
        assert main(["explain", "--checkpoint", str(ckpt), str(images[0]), "--method", method, "--out", str(out)]) == 0
    assert set(_pngs(out)) == {f"shirt_{k}.png" for k in ("input", "rollout", "gradcam", "attention")}
    assert main(["explain", "--checkpoint", str(ckpt), str(images[0]), "--method", "global", "--out", str(out)]) == 2
    assert "--method global needs a GC ViT" in capsys.readouterr().err


def test_cli_layer(tmp_path: Path, images: list[Path], capsys: pytest.CaptureFixture) -> None:
    """--layer draws Grad-CAM / Layer-CAM of one module; a wrong name or a flag it does not go with is an error."""
    ckpt = _checkpoint(tmp_path / "best.pt", "gcvit_fmnist", 1)
    base = ["explain", "--checkpoint", str(ckpt), str(images[1]), "--out", str(tmp_path / "out")]
    for method in ("gradcam", "layercam"):
        assert main([*base, "--method", method, "--layer", "stem.conv1"]) == 0
    assert set(_pngs(tmp_path / "out")) == {"shirt_input.png", "shirt_gradcam.png", "shirt_layercam.png"}
    capsys.readouterr()
    for extra, message in (
        (["--method", "gradcam", "--layer", "stem.conv9"], "layer 'stem.conv9' is not a module of GCViT"),
        (["--layer", "stem.conv1"], "--layer is for --method gradcam or layercam, not attention"),
        (["--method", "gradcam", "--layer", "stem.conv1", "--stage", "0"], "give --stage or --layer, not both"),
    ):
        assert main([*base, *extra]) == 2
        assert message in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    out = tmp_path / "unknown"
    args = ["explain", "--checkpoint", str(ckpt), str(broken), "--method", "gradcam", "--layer", "x", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err  # the name is checked before any image is read
    assert "layer 'x' is not a module" in err and "cannot read image" not in err and not out.exists()


def _errors(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, int, str, str]:
    """Exit codes and stderr of `lgvit predict ARGS` and `lgvit explain ARGS`, command names taken out."""
    rc_predict = main(["predict", *args])
    err_predict = capsys.readouterr().err.replace("lgvit predict", "lgvit CMD").replace("predicted", "DONE")
    rc_explain = main(["explain", *args, "--out", str(Path(args[1]).parent / "out")])
    err_explain = capsys.readouterr().err.replace("lgvit explain", "lgvit CMD").replace("explained", "DONE")
    return rc_predict, rc_explain, err_predict, err_explain


def test_cli_errors_match_predict(tmp_path: Path, images: list[Path], capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    ckpt = _checkpoint(tmp_path / "best.pt", "gcvit_fmnist", 1)
    cases = [
        ["--checkpoint", str(tmp_path / "missing.pt"), str(images[0])],
        ["--checkpoint", str(garbage), str(images[0])],
        ["--checkpoint", str(ckpt), str(broken), str(images[0])],
        ["--checkpoint", str(ckpt), str(tmp_path / "nothing.png")],
    ]
    for args in cases:
        rc_predict, rc_explain, err_predict, err_explain = _errors(args, capsys)
        assert rc_predict == rc_explain == 2
        assert err_explain == err_predict and err_explain.strip(), args


# ---------------------------------------------------------------------------------------------
# the training and eval report


def test_confident_mistakes() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.05, 0.95]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert confident_mistakes(labels, probs, 16) == [1, 3, 2]  # wrong with 0.8, 0.7, 0.6; 0 and 4 are right
    assert confident_mistakes(labels, probs, 1) == [1]
    assert confident_mistakes(labels[:1], probs[:1], 4) == []


def test_train_and_eval_write_the_grids(tmp_path: Path) -> None:
    data, out = make_idx_dir(tmp_path / "idx", 64, 24), tmp_path / "run"
    args = ["--data", str(data), "--output", str(out), "--epochs", "1", "--batch-size", "32", "--workers", "0"]
    assert main(["train", *args, "--threads", "1"]) == 0
    summary = (out / "summary.md").read_text()
    assert "(cam.png)" in summary and Image.open(out / "cam.png").size[0] > 8 * 150
    assert ("(misclassified.png)" in summary) == (out / "misclassified.png").is_file()
    ev = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--data", str(data), "--output", str(ev)]) == 0
    assert (ev / "eval_cam.png").is_file() and (ev / "eval_confusion.png").is_file()


def test_maps_keep_their_cells_on_the_image() -> None:
    """A padded stage (4 cells of stride 16 over 56 px) keeps each cell over its own pixels; exact maps just resize."""
    hot = torch.zeros(2, 4, 4)
    hot[:, 3, 3] = 1
    m = fit_to_image(hot, (56, 56), 16)
    assert m.shape == (2, 56, 56)
    assert divmod(int(m[0].argmax()), 56) == (55, 55)  # cell 3 spans pixels 48-63: its centre is cropped off
    assert fit_to_image(torch.rand(3, 2, 7, 9), (28, 36), 4).shape == (3, 2, 28, 36)
    assert fit_to_image(torch.rand(8, 12), (32, 48), 16).shape == (32, 48)  # TNT's pixel map: tiles exactly


def test_peak_is_the_maximal_cells_centre() -> None:
    """The pointing game's point: the centre of the maximal cell, also for the edge cells where the resized
    map is flat (its argmax took the first tied pixel: row and column 0, off almost every object)."""
    m = torch.zeros(3, 4, 4)  # 56 px at stride 16: cell k spans pixels 16k to 16k + 15 (cell 3 cropped at 55)
    for b, (i, j) in enumerate([(0, 0), (3, 3), (1, 2)]):
        m[b, i, j] = 1
    rows, cols = peak(m, (56, 56), 16)
    assert rows.tolist() == [7, 55, 16 + 7] and cols.tolist() == [7, 55, 32 + 7]
    assert divmod(int(fit_to_image(m[0], (56, 56), 16).argmax()), 56) == (0, 0)  # what the argmax of the resize gave
    rows, cols = peak(torch.rand(2, 8, 12), (32, 48), 16)  # TNT's pixel map tiles the image: 4 px per cell
    assert ((rows - 1) % 4 == 0).all() and ((cols - 1) % 4 == 0).all()


def test_pointing_hits_counts_points_in_the_box_or_within_the_tolerance() -> None:
    """Inside or on the box's edge hits at any tolerance; outside, a point hits only within its Euclidean
    distance of the nearest box pixel (3-4-5: a corner point 5 px off hits at 5, not at 4.9)."""
    boxes = torch.tensor([[10, 20, 30, 40]]).expand(5, 4)  # top, left, bottom, right (inclusive)
    rows = torch.tensor([10, 30, 20, 33, 20])
    cols = torch.tensor([20, 40, 30, 44, 19])  # on two corners, inside, (3, 4) off the corner, 1 px left
    assert pointing_hits(rows, cols, boxes).tolist() == [True, True, True, False, False]
    assert pointing_hits(rows, cols, boxes, 1).tolist() == [True, True, True, False, True]
    assert pointing_hits(rows, cols, boxes, 4.9).tolist() == [True, True, True, False, True]
    assert pointing_hits(rows, cols, boxes, 5).tolist() == [True, True, True, True, True]


def _receptive_centre(convs: list[nn.Conv2d], size: int, cell: int) -> float:
    """The centre row of the input rows that row `cell` of the map after `convs` (single-channel copies of their
    geometry, all-ones weights) sees: the middle of its receptive field."""
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    y = x
    for c in convs:
        copy = type(c)(
            1, 1, c.kernel_size[0], c.stride[0], **({} if isinstance(c, Conv2dSame) else {"padding": c.padding})
        )
        nn.init.ones_(copy.weight)
        y = copy(y)
    y[0, 0, cell, 0].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero()
    return (rows.min().item() + rows.max().item()) / 2


@pytest.mark.parametrize("name", ["gcvit_xxtiny", "maxvit_tiny_224"])
@pytest.mark.parametrize("size", [120, 121, 131])
def test_cell_centre_is_the_middle_of_the_strided_convs_receptive_field(name: str, size: int) -> None:
    """GC ViT's stride-2 convs (3x3, padding 1) centre cell i on pixel r*i; MaxViT's ('SAME' 3x3) on r*i + an
    offset that depends on each step's input length; both differ from a patch embedding's r*i + (r - 1) / 2."""
    model = create_model(name)
    strided = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1]
    assert len(strided) == len(model.feature_info) + 1  # the stem's, then one per stage
    for level, info in enumerate(model.feature_info[:3]):
        r, cell = info["reduction"], 2  # an interior cell: its receptive field inside the image
        want = _receptive_centre(strided[: level + 2], size, cell)
        assert model.cell_centre(level, (size, size))[0] + cell * r == want, (level, size)
    last = len(model.feature_info) - 1
    assert model.cell_centre(-1, (size, 97)) == model.cell_centre(last, (size, 97))  # -1: the last level
    assert create_model("swin_tiny").cell_centre(0, (size, size)) == (1.5, 1.5)  # 4x4 patches tile the image


def test_maps_and_peaks_place_cells_on_the_models_centres() -> None:
    """With GC ViT's centres a hot cell (1, 2) of a stride-16 map lands on pixel (16, 32), not (23, 39)."""
    hot = torch.zeros(1, 4, 4)
    hot[0, 1, 2] = 1
    m = fit_to_image(hot, (56, 56), 16, (0.0, 0.0))
    assert divmod(int(m[0].argmax()), 56) == (16, 32) and m[0, 16, 32] == 1
    rows, cols = peak(hot, (56, 56), 16, create_model("gcvit_xxtiny").cell_centre(2, (56, 56)))
    assert (rows.item(), cols.item()) == (16, 32)
    assert torch.equal(fit_to_image(hot, (56, 56), 16, (7.5, 7.5)), fit_to_image(hot, (56, 56), 16))  # tiling
