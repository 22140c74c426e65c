"""Swin-style relative-position bias: one table of (2h-1)(2w-1) x heads, gathered by index."""

import torch
import torch.nn.functional as F
from torch import nn

from .window import Size2, cached


def relative_position_index(window: Size2, table_window: Size2 | None = None) -> torch.Tensor:
    """Index (N, N), N = wh*ww, into a table built for `table_window` (default: `window`).

    Entry [i, j] encodes the offset of query i from key j. A window smaller than the table's
    uses the table's central part, so every offset keeps its trained value.
    """
    th, tw = table_window or window
    if window[0] > th or window[1] > tw:
        raise ValueError(f"window {window} is larger than the bias table's window {(th, tw)}; resize the table")
    rows, cols = torch.arange(window[0], device="cpu"), torch.arange(window[1], device="cpu")
    coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))
    coords = coords.flatten(1)  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    return (rel[0] + th - 1) * (2 * tw - 1) + (rel[1] + tw - 1)


class RelPosBias(nn.Module):
    """Learned relative-position bias for one window size; `forward` returns (heads, N, N)."""

    def __init__(self, window_size: Size2, num_heads: int) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.num_heads = num_heads
        n = (2 * window_size[0] - 1) * (2 * window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(n, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        index = relative_position_index(self.window_size).to(self.relative_position_bias_table.device)
        self.register_buffer("relative_position_index", index, persistent=False)
        self._index_cache: dict = {}  # indices of smaller windows, per (window, device); not state

    def forward(self, window: Size2 | None = None, onehot: bool = False) -> torch.Tensor:
        """(heads, N, N) bias for `window` (default: the table's); `onehot` computes it as `onehot_lookup`."""
        if onehot:
            return onehot_lookup(self.relative_position_bias_table, tuple(window or self.window_size), self.window_size)
        if window is None or tuple(window) == self.window_size:
            index = self.relative_position_index
        else:
            window, device = tuple(window), self.relative_position_index.device
            key = (*window, device)
            index = cached(self._index_cache, key, lambda: relative_position_index(window, self.window_size).to(device))
        n = index.shape[0]
        bias = self.relative_position_bias_table[index.view(-1)].view(n, n, -1)  # (N, N, heads)
        return bias.permute(2, 0, 1)  # (heads, N, N)


def onehot_lookup(table: torch.Tensor, window: Size2, table_window: Size2) -> torch.Tensor:
    """The bias gathered as TensorFlow MaxViT computes it: two einsums with one-hot offset matrices.

    Equal to the gather, but made of matmuls that FLOP counters see, so counting under
    `math_attention()` gives the reference graph's MACs. Returns (heads, N, N).
    """
    (h, w), (th, tw) = window, table_window
    heads = table.shape[1]
    grid = table.T.reshape(heads, 2 * th - 1, 2 * tw - 1)  # (heads, 2th-1, 2tw-1)
    rows = _offsets_onehot(h, th, table.dtype, table.device)  # (h, h, 2th-1)
    cols = _offsets_onehot(w, tw, table.dtype, table.device)  # (w, w, 2tw-1)
    bias = torch.einsum("nrc,ixr->nixc", grid, rows)  # (heads, h, h, 2tw-1)
    bias = torch.einsum("nixc,jyc->nijxy", bias, cols)  # (heads, h, w, h, w)
    return bias.reshape(heads, h * w, h * w)  # (heads, N, N)


def _offsets_onehot(n: int, table_n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n, 2*table_n-1): entry [i, x, r] is 1 where r is the table row of offset i - x."""
    pos = torch.arange(n, device=device)
    offset = pos[:, None] - pos[None, :] + table_n - 1  # (n, n)
    return F.one_hot(offset, 2 * table_n - 1).to(dtype)


def resize_rel_pos_table(table: torch.Tensor, src_window: Size2, dst_window: Size2) -> torch.Tensor:
    """Bicubic resize of a ((2h-1)(2w-1), heads) table from one window size to another."""
    heads = table.shape[1]
    sh, sw = 2 * src_window[0] - 1, 2 * src_window[1] - 1
    dh, dw = 2 * dst_window[0] - 1, 2 * dst_window[1] - 1
    if table.shape[0] != sh * sw:
        raise ValueError(f"table has {table.shape[0]} rows, expected {sh * sw} for window {src_window}")
    grid = table.T.reshape(1, heads, sh, sw).float()  # (1, heads, 2h-1, 2w-1)
    grid = F.interpolate(grid, size=(dh, dw), mode="bicubic", align_corners=False)
    return grid.reshape(heads, dh * dw).T.to(table.dtype)  # ((2H-1)(2W-1), heads)
