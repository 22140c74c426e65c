"""Window and grid partition and reverse (the only copies in lgvit), and the masks of padded or shifted windows.

Windows are batch-major: all windows of image 0, then all of image 1, ... so a per-image
tensor (such as GC ViT's global query) is broadcast to its windows by repeating each image
`num_windows` times in a row.

Graph capture (torch.export, torch.compile, the ONNX exporters, FX): sizes may be symbolic, so the
code here never branches on them while `tracing()`. A traced partition is one gather whose index is
built with tensor ops from the (symbolic) sizes (`partition_index`): padding, the cyclic shift and
the window order in one, with no pad or crop whose size the tracer would have to prove; the masks
are always built, also from the sizes. Eager forwards skip the no-op steps and keep the
constant masks and indices in a cache owned by the calling module (`cached`), never process-wide,
and never holding a tensor made while tracing.
"""

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

Size2 = tuple[int, int]
T = TypeVar("T")
_CACHE_LIMIT = 32  # entries per module: a handful of input sizes x devices


def tracing() -> bool:
    """Whether a graph is being captured (dynamo/torch.export, torch.jit.trace, FX): sizes may be symbolic."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or is_fx_symbolic_tracing()


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, C, H, W): a view in eager; traced, a contiguous copy, because a conv given a
    channels-last input makes the tracer guard that the batch is above 1 (its memory-format choice)."""
    x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
    return x.contiguous() if tracing() else x


def concrete(*sizes: object) -> bool:
    """Whether every size is a plain int (not a SymInt, an FX proxy or a traced tensor)."""
    return all(type(s) is int for s in sizes)


def cached(cache: dict | None, key: tuple, build: Callable[[], T]) -> T:
    """`build()`, memoised in `cache` (a dict owned by the calling module) under `key` (concrete sizes, device).

    Built outside inference mode, so a tensor first made under `torch.inference_mode()` still serves a
    later training step. While tracing, or without a cache, it is built every call and never stored.
    """
    if cache is None or tracing() or not concrete(*(k for k in key if not isinstance(k, (torch.device, bool)))):
        return build()
    if key not in cache:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        with torch.inference_mode(False):
            cache[key] = build()
    return cache[key]


def fit_window(size: Size2, window: int) -> Size2:
    """The window used on a map of `size`: `window` along each axis at least that long, else the whole axis.

    One comparison per axis: a guard when traced by dynamo, a leaf in FX graphs (the models `torch.fx.wrap` it)."""
    return tuple(window if s >= window else s for s in size)


def padded_size(size: Size2, window: Size2) -> Size2:
    """`size` rounded up to multiples of `window`, as (windows per axis) * window: symbolic sizes stay simple."""
    return (size[0] + window[0] - 1) // window[0] * window[0], (size[1] + window[1] - 1) // window[1] * window[1]


def _pads(size: Size2, window: Size2) -> Size2:
    """(pad_h, pad_w) that bring `size` to multiples of `window`."""
    padded = padded_size(size, window)
    return padded[0] - size[0], padded[1] - size[1]


def pad_to_multiple(x: torch.Tensor, window: Size2) -> torch.Tensor:
    """Zero-pads a (B, H, W, C) map at the bottom/right so that H and W are multiples of `window`.

    Eager skips a pad of zero; while tracing it always pads, so the graph holds for every size."""
    pad_h, pad_w = _pads((x.shape[1], x.shape[2]), window)
    if concrete(pad_h, pad_w) and not tracing() and not (pad_h or pad_w):
        return x
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))


def window_partition(
    x: torch.Tensor, window: Size2, shift: Size2 = (0, 0), cache: dict | None = None
) -> tuple[torch.Tensor, Size2]:
    """Splits a (B, H, W, C) map into windows, padding first.

    With a `shift` the map is first rolled by -shift (Swin's cyclic shift, `torch.roll(x, -shift)`),
    then padded. Shifted (in eager, with a `cache`) or traced, roll, pad and partition run as one gather.
    Returns the windows, (B * nH * nW, wh * ww, C), and the padded size (Hp, Wp).
    """
    B, H, W, C = x.shape
    if tracing() or (any(shift) and cache is not None):
        key = ("block", H, W, *window, *shift, x.device)
        forward, _ = cached(cache, key, lambda: partition_index((H, W), window, shift, False, x.device))
        return _gather_windows(x, forward, window[0] * window[1]), padded_size((H, W), window)
    if any(shift):
        x = torch.roll(x, (-shift[0], -shift[1]), (1, 2))
    x = pad_to_multiple(x, window)
    Hp, Wp = padded_size((H, W), window)
    wh, ww = window
    x = x.view(B, Hp // wh, wh, Wp // ww, ww, C)  # (B, nH, wh, nW, ww, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, C)  # (B*nH*nW, wh*ww, C)
    return x, (Hp, Wp)


def window_reverse(
    windows: torch.Tensor,
    window: Size2,
    padded: Size2,
    size: Size2,
    shift: Size2 = (0, 0),
    cache: dict | None = None,
) -> torch.Tensor:
    """Inverse of `window_partition`: (B*nH*nW, wh*ww, C) -> (B, H, W, C), cropping the padding, undoing a shift."""
    if tracing() or (any(shift) and cache is not None):
        key = ("block", *size, *window, *shift, windows.device)
        _, inverse = cached(cache, key, lambda: partition_index(size, window, shift, False, windows.device))
        return _scatter_windows(windows, inverse, size, window)
    wh, ww = window
    Hp, Wp = padded
    C = windows.shape[-1]
    x = windows.view(-1, Hp // wh, Wp // ww, wh, ww, C)  # (B, nH, nW, wh, ww, C)
    x = _crop(x.permute(0, 1, 3, 2, 4, 5).reshape(-1, Hp, Wp, C), size)  # (B, Hp, Wp, C) -> (B, H, W, C)
    return torch.roll(x, shift, (1, 2)) if any(shift) else x


def _gather_windows(x: torch.Tensor, forward: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, W, C) -> (B*nW, n, C) windows by the flat gather index `forward` (H*W: a zero token)."""
    B, H, W, C = x.shape
    flat = torch.cat([x.reshape(B, H * W, C), x.new_zeros(B, 1, C)], 1)  # (B, HW+1, C)
    return flat.index_select(1, forward).reshape(-1, n, C)  # (B*nW, N, C)


def _scatter_windows(windows: torch.Tensor, inverse: torch.Tensor, size: Size2, part: Size2) -> torch.Tensor:
    """(B*nW, N, C) windows -> (B, H, W, C) by the window slot `inverse` of every position.

    Eager: one gather over the flat windows with per-image offsets (2x faster on CPU). Traced: one gather per
    image, so the batch is never computed as (windows / windows per image), a size a tracer would have to guard."""
    (nh, nw), C = window_counts(size, part), windows.shape[-1]
    slots = nh * nw * part[0] * part[1]  # window slots per image
    if tracing():
        per_image = windows.reshape(-1, slots, C)  # (B, nW*N, C)
        return per_image.index_select(1, inverse).view(-1, size[0], size[1], C)  # (B, H, W, C)
    B = windows.shape[0] // (nh * nw)
    index = (torch.arange(B, device=windows.device)[:, None] * slots + inverse[None, :]).flatten()  # (B*H*W,)
    return windows.reshape(-1, C).index_select(0, index).view(B, size[0], size[1], C)  # (B, H, W, C)


def partition_index(
    size: Size2, part: Size2, shift: Size2, grid: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices of roll(-shift) + pad + partition (block or grid) of a (H, W) map, and of its inverse.

    forward: (nW*N,) flat source position of every window slot (H*W for padding);
    inverse: (H*W,) window slot of every source position. Tensor ops on the sizes only: traceable
    with symbolic sizes (no pad, crop or data-dependent indexing).
    """
    H, W = size
    (nh, nw), (ph, pw) = window_counts(size, part), part
    rows = torch.arange(nh * ph, device=device)  # (Hp,) rows of the rolled, padded map
    cols = torch.arange(nw * pw, device=device)  # (Wp,)
    src = _mod(rows[:, None] + shift[0], H) * W + _mod(cols[None, :] + shift[1], W)  # (Hp, Wp)
    src = torch.where((rows[:, None] < H) & (cols[None, :] < W), src, H * W)
    forward = _partition_map(src, (nh, nw), part, grid)  # (nW*N,)
    r = _mod(torch.arange(H, device=device) - shift[0], H)  # each source row's row in the rolled map
    c = _mod(torch.arange(W, device=device) - shift[1], W)
    if grid:  # window (r % nh, c % nw), slot (r // nh, c // nw)
        win = _mod(r, nh)[:, None] * nw + _mod(c, nw)[None, :]
        slot = (r // nh)[:, None] * pw + (c // nw)[None, :]
    else:  # window (r // ph, c // pw), slot (r % ph, c % pw)
        win = (r // ph)[:, None] * nw + (c // pw)[None, :]
        slot = _mod(r, ph)[:, None] * pw + _mod(c, pw)[None, :]
    return forward, (win * (ph * pw) + slot).flatten()  # (nW*N,), (H*W,)


def _mod(a: torch.Tensor, n: int) -> torch.Tensor:
    """`a % n` (Python's sign rule) as a - floor(a / n) * n: the ONNX exporter has no remainder by a symbolic size."""
    return a - torch.div(a, n, rounding_mode="floor") * n


def window_counts(size: Size2, part: Size2) -> Size2:
    """Windows (block) or cells per window (grid) along each axis: ceil(size / part)."""
    return (size[0] + part[0] - 1) // part[0], (size[1] + part[1] - 1) // part[1]


def _partition_map(m: torch.Tensor, counts: Size2, part: Size2, grid: bool) -> torch.Tensor:
    """(counts * part) 2-D map -> (nW*N,) flat, in the window order of `window_partition` / `grid_partition`.

    A gather whose index is computed from the sizes (window w, slot s -> row, column), not a view + permute +
    reshape: that reshape copies or not depending on whether a count is 1, a branch a tracer would guard."""
    (nh, nw), (ph, pw) = counts, part
    w = torch.arange(nh * nw, device=m.device)[:, None]  # (nW, 1) window
    s = torch.arange(ph * pw, device=m.device)[None, :]  # (1, N) slot in the window
    wr, wc, sr, sc = w // nw, _mod(w, nw), s // pw, _mod(s, pw)
    if grid:  # rows are (gh, sh) = (ph, nh): 'gh sh gw sw -> (sh sw) (gh gw)'
        rows, cols = sr * nh + wr, sc * nw + wc
    else:  # 'nh ph nw pw -> (nh nw) (ph pw)'
        rows, cols = wr * ph + sr, wc * pw + sc
    return m.flatten()[(rows * (nw * pw) + cols).flatten()]  # (nW*N,); flat: a view of a count of 1 is guarded


def _region_labels(size: int, padded: int, shift: int, device: torch.device) -> torch.Tensor:
    """Per row (or column) of a rolled, padded map: 0 in place, 1 wrapped around by the roll, 2 padding."""
    pos = torch.arange(padded, device=device)
    return (pos >= size - shift).long() + (pos >= size).long()  # (padded,)


def _mask_needed(size: Size2, window: Size2, shift: Size2) -> bool:
    """Whether a window mask hides anything; always True for symbolic sizes (the graph must hold for all)."""
    if tracing() or not concrete(*size):
        return True
    return any(shift) or padded_size(size, window) != tuple(size)


def shifted_window_mask(
    size: Size2, window: Size2, shift: Size2, device: torch.device, cache: dict | None = None
) -> torch.Tensor | None:
    """Swin's additive attention mask for a (H, W) = `size` map rolled by -`shift` and padded to windows.

    Tokens attend only within their region: the part left in place, the part the cyclic shift wrapped
    around, and the zero padding, each per axis (9 regions without padding, as in the official code).
    Cross-region pairs get -100. Returns (nW, N, N) in window order of `window_partition`, or None when
    nothing is shifted or padded (never None while tracing). Memoised in `cache` if given.
    """
    if not _mask_needed(size, window, shift):
        return None
    key = ("shift_mask", *size, *window, *shift, device)
    return cached(cache, key, lambda: _shifted_window_mask(size, window, shift, device))


def _shifted_window_mask(size: Size2, window: Size2, shift: Size2, device: torch.device) -> torch.Tensor:
    counts = window_counts(size, window)
    rows = _region_labels(size[0], counts[0] * window[0], shift[0], device)
    cols = _region_labels(size[1], counts[1] * window[1], shift[1], device)
    labels = _partition_map(rows[:, None] * 3 + cols[None, :], counts, window, False)  # (nW*N,)
    windows = labels.view(-1, window[0] * window[1])  # (nW, N)
    cross = windows[:, :, None] != windows[:, None, :]  # (nW, N, N)
    return torch.where(cross, -100.0, 0.0)  # (nW, N, N)


def grid_partition(x: torch.Tensor, grid: Size2, cache: dict | None = None) -> tuple[torch.Tensor, Size2]:
    """Splits a (B, H, W, C) map into dilated grid windows (MaxViT), padding first.

    Window (i, j) holds the tokens at rows i, i + sh, i + 2*sh, ... and columns j, j + sw, ...,
    where (sh, sw) = (Hp / gh, Wp / gw): 'b (gh sh) (gw sw) c -> (b sh sw) (gh gw) c'.
    Returns the windows, (B * sh * sw, gh * gw, C), and the padded size (Hp, Wp). Traced: one gather.
    """
    B, H, W, C = x.shape
    if tracing():
        forward, _ = partition_index((H, W), grid, (0, 0), True, x.device)
        return _gather_windows(x, forward, grid[0] * grid[1]), padded_size((H, W), grid)
    x = pad_to_multiple(x, grid)
    Hp, Wp = padded_size((H, W), grid)
    gh, gw = grid
    x = x.view(B, gh, Hp // gh, gw, Wp // gw, C)  # (B, gh, sh, gw, sw, C)
    x = x.permute(0, 2, 4, 1, 3, 5).reshape(-1, gh * gw, C)  # (B*sh*sw, gh*gw, C)
    return x, (Hp, Wp)


def grid_reverse(windows: torch.Tensor, grid: Size2, padded: Size2, size: Size2) -> torch.Tensor:
    """Inverse of `grid_partition`: (B*sh*sw, gh*gw, C) -> (B, H, W, C), cropping the padding."""
    if tracing():
        _, inverse = partition_index(size, grid, (0, 0), True, windows.device)
        return _scatter_windows(windows, inverse, size, grid)
    gh, gw = grid
    Hp, Wp = padded
    C = windows.shape[-1]
    x = windows.view(-1, Hp // gh, Wp // gw, gh, gw, C)  # (B, sh, sw, gh, gw, C)
    return _crop(x.permute(0, 3, 1, 4, 2, 5).reshape(-1, Hp, Wp, C), size)  # (B, Hp, Wp, C) -> (B, H, W, C)


def _crop(x: torch.Tensor, size: Size2) -> torch.Tensor:
    """The top-left `size` of a padded (B, Hp, Wp, C) map (the map itself when nothing was padded)."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return x[:, : size[0], : size[1]].contiguous()


def padding_mask(
    size: Size2, part: Size2, grid: bool, device: torch.device, cache: dict | None = None
) -> torch.Tensor | None:
    """Additive (nW, N, N) mask that hides the zero padding of a `size` map from every query, or None if unpadded
    (never None while tracing).

    Windows are in the order of `grid_partition` (grid) or `window_partition` (block). Every window
    keeps at least one valid key: padding is shorter than a window, and a grid window's first row
    and column are valid. Memoised in `cache` if given.
    """
    if not _mask_needed(size, part, (0, 0)):
        return None
    return cached(cache, ("pad_mask", *size, *part, grid, device), lambda: _padding_mask(size, part, grid, device))


def _padding_mask(size: Size2, part: Size2, grid: bool, device: torch.device) -> torch.Tensor:
    counts = window_counts(size, part)
    rows = torch.arange(counts[0] * part[0], device=device) < size[0]  # (Hp,)
    cols = torch.arange(counts[1] * part[1], device=device) < size[1]  # (Wp,)
    valid = _partition_map(rows[:, None] & cols[None, :], counts, part, grid).view(-1, part[0] * part[1])  # (nW, N)
    mask = torch.where(valid, 0.0, float("-inf"))[:, None, :]  # (nW, 1, N): -inf for padded keys
    return mask.expand(-1, part[0] * part[1], -1)  # (nW, N, N)
