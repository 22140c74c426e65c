"""Window partition and reverse: the only copies in lgvit.

Windows are batch-major: all windows of image 0, then all of image 1, ... so a per-image
tensor (such as GC ViT's global query) is broadcast to its windows by repeating each image
`num_windows` times in a row.
"""

import torch
import torch.nn.functional as F

Size2 = tuple[int, int]


def pad_to_multiple(x: torch.Tensor, window: Size2) -> torch.Tensor:
    """Zero-pads a (B, H, W, C) map at the bottom/right so that H and W are multiples of `window`."""
    pad_h = -x.shape[1] % window[0]
    pad_w = -x.shape[2] % window[1]
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x


def window_partition(x: torch.Tensor, window: Size2) -> tuple[torch.Tensor, Size2]:
    """Splits a (B, H, W, C) map into windows, padding first.

    Returns the windows, (B * nH * nW, wh * ww, C), and the padded size (Hp, Wp).
    """
    x = pad_to_multiple(x, window)
    B, Hp, Wp, C = x.shape
    wh, ww = window
    x = x.view(B, Hp // wh, wh, Wp // ww, ww, C)  # (B, nH, wh, nW, ww, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, C)  # (B*nH*nW, wh*ww, C)
    return x, (Hp, Wp)


def window_reverse(windows: torch.Tensor, window: Size2, padded: Size2, size: Size2) -> torch.Tensor:
    """Inverse of `window_partition`: (B*nH*nW, wh*ww, C) -> (B, H, W, C), cropping the padding."""
    wh, ww = window
    Hp, Wp = padded
    C = windows.shape[-1]
    x = windows.view(-1, Hp // wh, Wp // ww, wh, ww, C)  # (B, nH, nW, wh, ww, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, Hp, Wp, C)  # (B, Hp, Wp, C)
    if (Hp, Wp) != tuple(size):
        x = x[:, : size[0], : size[1]].contiguous()
    return x
