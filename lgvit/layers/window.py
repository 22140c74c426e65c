"""Window and grid partition and reverse (the only copies in lgvit), and the masks of padded or shifted windows.

Windows are batch-major: all windows of image 0, then all of image 1, ... so a per-image
tensor (such as GC ViT's global query) is broadcast to its windows by repeating each image
`num_windows` times in a row.
"""

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

Size2 = tuple[int, int]


def constant_cache(build: Callable) -> Callable:
    """`functools.lru_cache` for builders of constant index/mask tensors, which are built outside inference
    mode: a tensor first made under `torch.inference_mode()` could not be used by a later training step."""

    @functools.lru_cache(maxsize=64)
    @functools.wraps(build)
    def cached(*args):
        with torch.inference_mode(False):
            return build(*args)

    return cached


def pad_to_multiple(x: torch.Tensor, window: Size2) -> torch.Tensor:
    """Zero-pads a (B, H, W, C) map at the bottom/right so that H and W are multiples of `window`."""
    pad_h = -x.shape[1] % window[0]
    pad_w = -x.shape[2] % window[1]
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x


def window_partition(x: torch.Tensor, window: Size2, shift: Size2 = (0, 0)) -> tuple[torch.Tensor, Size2]:
    """Splits a (B, H, W, C) map into windows, padding first.

    With a `shift` the map is first rolled by -shift (Swin's cyclic shift, `torch.roll(x, -shift)`),
    then padded: roll, pad and partition run as one cached gather.
    Returns the windows, (B * nH * nW, wh * ww, C), and the padded size (Hp, Wp).
    """
    if any(shift):
        B, H, W, C = x.shape
        forward, _ = _shift_index((H, W), tuple(window), tuple(shift), x.device)
        x = x.reshape(B, H * W, C)  # (B, HW, C)
        if forward.numel() > H * W:  # padded: index H*W is a zero token
            x = torch.cat([x, x.new_zeros(B, 1, C)], 1)  # (B, HW+1, C)
        x = x.index_select(1, forward).view(-1, window[0] * window[1], C)  # (B*nW, N, C)
        return x, (H + -H % window[0], W + -W % window[1])
    x = pad_to_multiple(x, window)
    B, Hp, Wp, C = x.shape
    wh, ww = window
    x = x.view(B, Hp // wh, wh, Wp // ww, ww, C)  # (B, nH, wh, nW, ww, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, C)  # (B*nH*nW, wh*ww, C)
    return x, (Hp, Wp)


def window_reverse(
    windows: torch.Tensor, window: Size2, padded: Size2, size: Size2, shift: Size2 = (0, 0)
) -> torch.Tensor:
    """Inverse of `window_partition`: (B*nH*nW, wh*ww, C) -> (B, H, W, C), cropping the padding, undoing a shift."""
    if any(shift):
        forward, inverse = _shift_index(tuple(size), tuple(window), tuple(shift), windows.device)
        x = windows.view(-1, forward.numel(), windows.shape[-1])  # (B, nW*N, C)
        return x.index_select(1, inverse).view(-1, size[0], size[1], x.shape[-1])  # (B, H, W, C)
    wh, ww = window
    Hp, Wp = padded
    C = windows.shape[-1]
    x = windows.view(-1, Hp // wh, Wp // ww, wh, ww, C)  # (B, nH, nW, wh, ww, C)
    return _crop(x.permute(0, 1, 3, 2, 4, 5).reshape(-1, Hp, Wp, C), size)  # (B, Hp, Wp, C) -> (B, H, W, C)


def _region_labels(size: int, padded: int, shift: int) -> torch.Tensor:
    """Per row (or column) of a rolled, padded map: 0 in place, 1 wrapped around by the roll, 2 padding."""
    labels = torch.zeros(padded, dtype=torch.long, device="cpu")
    labels[size - shift : size] = 1
    labels[size:] = 2
    return labels


@constant_cache
def shifted_window_mask(size: Size2, window: Size2, shift: Size2, device: torch.device) -> torch.Tensor | None:
    """Swin's additive attention mask for a (H, W) = `size` map rolled by -`shift` and padded to windows.

    Tokens attend only within their region: the part left in place, the part the cyclic shift wrapped
    around, and the zero padding, each per axis (9 regions without padding, as in the official code).
    Cross-region pairs get -100. Returns (nW, N, N) in window order of `window_partition`, or None when
    nothing is shifted or padded. Cached: call it freely per forward.
    """
    padded = (size[0] + -size[0] % window[0], size[1] + -size[1] % window[1])
    if not any(shift) and padded == tuple(size):
        return None
    rows = _region_labels(size[0], padded[0], shift[0])
    cols = _region_labels(size[1], padded[1], shift[1])
    labels = (rows[:, None] * 3 + cols[None, :]).float()  # (Hp, Wp)
    windows, _ = window_partition(labels[None, :, :, None], window)  # (nW, N, 1)
    windows = windows.squeeze(-1)  # (nW, N)
    cross = windows[:, :, None] != windows[:, None, :]  # (nW, N, N)
    return torch.zeros(cross.shape, device="cpu").masked_fill_(cross, -100.0).to(device)


def grid_partition(x: torch.Tensor, grid: Size2) -> tuple[torch.Tensor, Size2]:
    """Splits a (B, H, W, C) map into dilated grid windows (MaxViT), padding first.

    Window (i, j) holds the tokens at rows i, i + sh, i + 2*sh, ... and columns j, j + sw, ...,
    where (sh, sw) = (Hp / gh, Wp / gw): 'b (gh sh) (gw sw) c -> (b sh sw) (gh gw) c'.
    Returns the windows, (B * sh * sw, gh * gw, C), and the padded size (Hp, Wp).
    """
    x = pad_to_multiple(x, grid)
    B, Hp, Wp, C = x.shape
    gh, gw = grid
    x = x.view(B, gh, Hp // gh, gw, Wp // gw, C)  # (B, gh, sh, gw, sw, C)
    x = x.permute(0, 2, 4, 1, 3, 5).reshape(-1, gh * gw, C)  # (B*sh*sw, gh*gw, C)
    return x, (Hp, Wp)


def grid_reverse(windows: torch.Tensor, grid: Size2, padded: Size2, size: Size2) -> torch.Tensor:
    """Inverse of `grid_partition`: (B*sh*sw, gh*gw, C) -> (B, H, W, C), cropping the padding."""
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


@constant_cache
def padding_mask(size: Size2, part: Size2, grid: bool, device: torch.device) -> torch.Tensor | None:
    """Additive (nW, N, N) mask that hides the zero padding of a `size` map from every query, or None if unpadded.

    Windows are in the order of `grid_partition` (grid) or `window_partition` (block). Every window
    keeps at least one valid key: padding is shorter than a window, and a grid window's first row
    and column are valid. Cached: call it freely per forward.
    """
    valid = torch.ones(1, size[0], size[1], 1)
    windows, padded = (grid_partition if grid else window_partition)(valid, part)  # (nW, N, 1)
    if padded == tuple(size):
        return None
    hidden = windows.transpose(1, 2) == 0  # (nW, 1, N): True for padded keys
    mask = torch.zeros(hidden.shape).masked_fill_(hidden, float("-inf"))  # (nW, 1, N)
    return mask.expand(-1, part[0] * part[1], -1).to(device)  # (nW, N, N)


@constant_cache
def _shift_index(size: Size2, window: Size2, shift: Size2, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices of roll(-shift) + pad + partition of a (H, W) map, and of its inverse.

    forward: (nW*N,) flat source position of every window slot (H*W for padding);
    inverse: (H*W,) window slot of every source position.
    """
    H, W = size
    rows = torch.arange(H + -H % window[0], device="cpu")
    cols = torch.arange(W + -W % window[1], device="cpu")
    src = ((rows[:, None] + shift[0]) % H) * W + (cols[None, :] + shift[1]) % W  # (Hp, Wp)
    src[H:] = H * W
    src[:, W:] = H * W
    forward = window_partition(src[None, :, :, None], window)[0].flatten()  # (nW*N,)
    real = forward < H * W
    inverse = torch.empty(H * W, dtype=torch.long, device="cpu")
    inverse[forward[real]] = torch.arange(forward.numel(), device="cpu")[real]
    return forward.to(device), inverse.to(device)
