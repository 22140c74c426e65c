"""Shared layers: partition round trips, SDPA == math path, bias index and resize, DropPath."""

import contextlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import lgvit
from lgvit.layers import (
    ChannelsLastConv2d,
    DropPath,
    RelPosBias,
    ShortMapConv2d,
    WindowAttention,
    math_attention,
    relative_position_index,
    resize_rel_pos_table,
    window_partition,
    window_reverse,
)


@pytest.mark.parametrize("size", [(14, 14), (15, 9), (7, 7), (3, 20)])
def test_window_partition_pads_and_reverse_crops(size: tuple[int, int]) -> None:
    x = torch.randn(2, *size, 5)
    windows, padded = window_partition(x, (7, 7))
    assert padded == (-(-size[0] // 7) * 7, -(-size[1] // 7) * 7)
    assert windows.shape == (2 * padded[0] // 7 * padded[1] // 7, 49, 5)
    assert torch.equal(window_reverse(windows, (7, 7), padded, size), x)


def test_windows_are_batch_major_and_contiguous_blocks() -> None:
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4, 1)
    windows, _ = window_partition(x, (2, 2))
    assert windows.shape == (8, 4, 1)
    assert windows[0, :, 0].tolist() == [0, 1, 4, 5]  # image 0, top-left window
    assert windows[4, :, 0].tolist() == [16, 17, 20, 21]  # image 1 starts after image 0's 4 windows


def test_relative_position_index_matches_offsets() -> None:
    idx = relative_position_index((3, 4))
    coords = [(i, j) for i in range(3) for j in range(4)]
    for a, (ya, xa) in enumerate(coords):
        for b, (yb, xb) in enumerate(coords):
            assert idx[a, b] == (ya - yb + 2) * 7 + (xa - xb + 3)


def test_smaller_window_uses_the_table_centre() -> None:
    rpb = RelPosBias((7, 7), 2)
    full = rpb()  # (2, 49, 49)
    small = rpb((3, 5))  # a 3x5 window is the top-left 3x5 block of the 7x7 one
    keep = [r * 7 + c for r in range(3) for c in range(5)]
    assert torch.equal(small, full[:, keep][:, :, keep])


@pytest.mark.parametrize("window", [(7, 7), (3, 5)])
def test_onehot_lookup_equals_gather(window: tuple[int, int]) -> None:
    rpb = RelPosBias((7, 7), 3)
    assert torch.allclose(rpb(window, onehot=True), rpb(window), atol=1e-7)


def test_onehot_lookup_is_counted_only_when_asked() -> None:
    def macs(onehot: bool, math: bool) -> int:
        attn = WindowAttention(32, 2, (4, 4), onehot_lookup=onehot).eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter, math_attention() if math else contextlib.nullcontext():
            attn(torch.randn(1, 16, 32))
        return counter.get_total_flops() // 2

    lookup = 2 * (7 * 4 * 4 * 7 + 4**4 * 7)  # heads * (rows einsum + cols einsum), offsets table 7x7
    assert macs(True, True) - macs(False, True) == lookup
    assert macs(True, False) == macs(False, False)  # the runtime path gathers


def test_resize_table_identity_and_shape() -> None:
    table = torch.randn(13 * 13, 3)
    assert torch.allclose(resize_rel_pos_table(table, (7, 7), (7, 7)), table, atol=1e-5)
    assert resize_rel_pos_table(table, (7, 7), (12, 12)).shape == (23 * 23, 3)
    with pytest.raises(ValueError, match="expected"):
        resize_rel_pos_table(table, (6, 6), (12, 12))


@pytest.mark.parametrize("mode", ["local", "global", "mask"])
def test_sdpa_equals_math_path(mode: str) -> None:
    attn = WindowAttention(32, 4, (4, 4), global_query=mode == "global").eval()
    with torch.no_grad():
        attn.rel_pos.relative_position_bias_table.normal_()
    B, nW, N = 2, 3, 16
    x = torch.randn(B * nW, N, 32)
    q = torch.randn(B, 4, N, 8) if mode == "global" else None
    mask = torch.where(torch.rand(nW, N, N) > 0.5, 0.0, -100.0) if mode == "mask" else None
    with torch.no_grad():
        fused = attn(x, q_global=q, mask=mask)
        with math_attention():
            ref = attn(x, q_global=q, mask=mask)
    assert (fused - ref).abs().max() < 1e-5


def test_global_query_is_per_image_not_tiled() -> None:
    attn = WindowAttention(16, 2, (2, 2), global_query=True).eval()
    B, nW, N = 3, 2, 4
    x, q = torch.randn(B * nW, N, 16), torch.randn(B, 2, N, 8)
    with torch.no_grad():
        out = attn(x, q_global=q)
        # image 1 alone: its windows are rows 2..3 of the batch-major window batch
        alone = attn(x[nW : 2 * nW], q_global=q[1:2])
    assert torch.allclose(out[nW : 2 * nW], alone, atol=1e-6)


def test_global_attention_needs_a_query() -> None:
    with pytest.raises(ValueError, match="q_global"):
        WindowAttention(16, 2, (2, 2), global_query=True)(torch.randn(2, 4, 16))


def test_flop_count_includes_attention_matmuls() -> None:
    attn = WindowAttention(32, 4, (4, 4))
    Bw, N, C, heads = 6, 16, 32, 4
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), math_attention(), counter:
        attn(torch.randn(Bw, N, C))
    linear = Bw * N * C * 3 * C + Bw * N * C * C
    matmuls = 2 * Bw * heads * N * N * (C // heads)
    assert counter.get_total_flops() == 2 * (linear + matmuls)


def test_drop_path() -> None:
    dp = DropPath(0.5)
    x = torch.ones(1000, 4)
    dp.eval()
    assert torch.equal(dp(x), x)
    dp.train()
    out = dp(x)
    kept = out[:, 0] != 0
    assert 0.4 < kept.float().mean() < 0.6
    assert torch.all(out[kept] == 2.0)  # survivors are rescaled by 1/keep


@pytest.mark.parametrize("name", ["swin_fmnist", "gcvit_fmnist", "maxvit_fmnist"])
def test_training_after_inference_mode(name: str) -> None:
    """The cached masks and indices made in an inference_mode forward still serve a training step after it."""
    model = lgvit.create_model(name)
    x = torch.randn(2, 1, 30, 30)  # padded windows: the masks are built too
    with torch.inference_mode():
        model.eval()(x)
    model.train()(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_channels_last_conv_equals_conv2d_and_gives_a_channels_last_output(in_chans: int) -> None:
    torch.manual_seed(0)
    conv = ChannelsLastConv2d(in_chans, 8, 3, 2, 1)
    plain = torch.nn.Conv2d(in_chans, 8, 3, 2, 1)
    plain.load_state_dict(conv.state_dict())
    assert conv.weight.is_contiguous()  # the parameter (and so the state dict) keeps its layout
    x = torch.randn(4, in_chans, 13, 10)
    y, ref = conv(x), plain(x)
    # a 1-channel batch is contiguous in both layouts: without the channels-last weight the output is not
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(ref)
    y.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(conv.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (2, 7), (1, 5), (5, 2), (6, 6)])
@pytest.mark.parametrize("groups", [1, 6])
def test_short_map_conv_equals_conv2d(size: tuple[int, int], groups: int) -> None:
    torch.manual_seed(0)
    conv = ShortMapConv2d(6, 6, (3, 5), 1, (1, 2), groups=groups)
    plain = torch.nn.Conv2d(6, 6, (3, 5), 1, (1, 2), groups=groups)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(3, 6, *size, requires_grad=True)
    y, ref = conv(x), plain(x)
    assert y.shape == ref.shape == (3, 6, *size)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(ref)
    (gx, gw), (rx, rw) = (torch.autograd.grad(out, (x, m.weight), grad) for out, m in ((y, conv), (ref, plain)))
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, rw, rtol=1e-5, atol=1e-5)
