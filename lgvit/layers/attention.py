"""The one window-attention module of lgvit, on `scaled_dot_product_attention`.

Every family routes its windowed attention through `WindowAttention`: Swin (bias + shift
mask), GC ViT (local windows, and windows whose query is the image's global query) and MaxViT
(block and grid partitions). The additive relative-position bias and an optional per-window
mask are passed to SDPA as `attn_mask`. `math_attention()` switches every module to the reference
graph: plain matmul attention, and one-hot einsum bias lookups where the reference did those
(MaxViT). Parity checks and FLOP counting use it.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .pos_bias import RelPosBias, Size2

_MATH = False


@contextmanager
def math_attention() -> Iterator[None]:
    """Inside the block, attention is explicit matmul + softmax and MaxViT-style biases are one-hot
    einsums: the reference graph, every matmul of it visible to FLOP counters."""
    global _MATH
    prev, _MATH = _MATH, True
    try:
        yield
    finally:
        _MATH = prev


def math_attention_enabled() -> bool:
    """Whether the reference graph is on (inside `math_attention()`): modules skip their shortcuts."""
    return _MATH


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, dropout: float
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for (B, heads, N, d) inputs and a bias broadcastable to (B, heads, N, N).

    The one attention kernel of lgvit (windowed and plain token attention alike). Fused SDPA unless inside
    `math_attention()` or the bias needs a gradient. The bias is passed 4-D: with a 3-D mask, CPU SDPA falls
    back to its slow math path (measured 6x slower on 2 cores).
    """
    if bias is not None and bias.ndim < 4:
        bias = bias.view((1,) * (4 - bias.ndim) + tuple(bias.shape))  # (1, heads, N, N)
    learned = bias is not None and bias.requires_grad and torch.is_grad_enabled()
    if not (_MATH or learned):
        mask = None if bias is None else bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    # CPU SDPA has no fused backward for a mask that needs a gradient (a learned bias): its
    # fallback adds NaN-guard passes, so training takes this path instead (measured faster)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn.add_(bias)
    attn = F.dropout(attn.softmax(-1), dropout) if dropout else attn.softmax(-1)
    return attn @ v


class WindowAttention(nn.Module):
    """Multi-head attention inside windows with a relative-position bias.

    Args:
        dim: channels.
        num_heads: heads.
        window_size: the window the bias table is built for.
        qkv_bias: bias on the q/k/v projection.
        global_query: project only keys and values (`qkv` has 2*dim outputs) and take the
            query from outside: GC ViT's global query, one per image.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
        onehot_lookup: the reference builds the bias with one-hot einsums (TensorFlow MaxViT); under
            `math_attention()` this module does too, so counted MACs are the reference graph's.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Size2,
        qkv_bias: bool = True,
        global_query: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        onehot_lookup: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.global_query = global_query
        self.qkv = nn.Linear(dim, dim * (2 if global_query else 3), bias=qkv_bias)
        self.rel_pos = RelPosBias(window_size, num_heads)
        self.onehot_lookup = onehot_lookup
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def attn_bias(self, window: Size2 | None, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """The relative-position bias plus `mask` as one additive tensor, laid out as `forward` uses it.

        (1, heads, N, N) without a mask; (1, nW*heads, N, N) with an (nW, N, N) mask, the windows folded
        into the head axis. While the table takes no gradient (eval, no_grad, a frozen table) the tensor
        is cached for the last (window, mask, dtype) and rebuilt when the table changes (device, storage
        or in-place version), so repeated forwards gather nothing. The cache is not in the state dict.
        """
        table = self.rel_pos.relative_position_bias_table
        if (table.requires_grad and torch.is_grad_enabled()) or (_MATH and self.onehot_lookup):
            return self._build_bias(window, mask, dtype)  # training or the reference graph: rebuild every call
        key = (window, dtype, table.device, table.data_ptr(), table._version, torch.is_inference_mode_enabled())
        cached = self.__dict__.get("_bias_cache")
        if cached is not None and cached[0] == key and cached[1] is mask:
            return cached[2]
        bias = self._build_bias(window, mask, dtype)
        self._bias_cache = (key, mask, bias)
        return bias

    def _build_bias(self, window: Size2 | None, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        bias = self.rel_pos(window, onehot=_MATH and self.onehot_lookup)  # (heads, N, N)
        n = bias.shape[-1]
        if mask is None:
            return bias.unsqueeze(0).to(dtype).contiguous()  # (1, heads, N, N); SDPA would copy a strided one
        full = bias.unsqueeze(0) + mask.unsqueeze(1)  # (nW, heads, N, N)
        return full.reshape(1, -1, n, n).to(dtype)  # (1, nW*heads, N, N)

    def forward(
        self,
        x: torch.Tensor,
        window: Size2 | None = None,
        q_global: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention over windows.

        Args:
            x: (B * nW, N, C) windows, batch-major (see `window.window_partition`).
            window: the windows' (h, w), if smaller than the table's window.
            q_global: (B, heads, N, head_dim) query shared by all windows of an image;
                required when the module was built with `global_query=True`.
            mask: (nW, N, N) additive mask per window position (Swin's shift mask).
        """
        Bw, N, C = x.shape
        bias = self.attn_bias(window, mask, x.dtype)  # (1, heads, N, N), or (1, nW*heads, N, N) with a mask
        if self.global_query:
            if q_global is None:
                raise ValueError("this attention takes its query from outside: pass q_global")
            kv = self.qkv(x).view(Bw, N, 2, self.num_heads, self.head_dim)  # (Bw, N, 2, heads, d)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (Bw, heads, N, d)
            B = q_global.shape[0]
            q = q_global.unsqueeze(1).expand(B, Bw // B, -1, -1, -1)  # (B, nW, heads, N, d)
            q = q.reshape(Bw, self.num_heads, N, self.head_dim)  # (Bw, heads, N, d), per image
        else:
            qkv = self.qkv(x).view(Bw, N, 3, self.num_heads, self.head_dim)  # (Bw, N, 3, heads, d)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (Bw, heads, N, d)
        drop = self.attn_drop if self.training else 0.0
        if mask is None:
            out = attend(q, k, v, bias, drop)  # (Bw, heads, N, d)
        else:
            # windows at the same position share a mask: fold them into the head axis so the
            # (nW, heads, N, N) bias + mask broadcasts over the batch as one 4-D tensor
            fold = (Bw // mask.shape[0], bias.shape[1], N, self.head_dim)
            out = attend(q.reshape(fold), k.reshape(fold), v.reshape(fold), bias, drop)  # (B, nW*heads, N, d)
            out = out.reshape(Bw, self.num_heads, N, self.head_dim)  # (Bw, heads, N, d)
        out = out.transpose(1, 2).reshape(Bw, N, C)  # (Bw, N, C)
        return self.proj_drop(self.proj(out))
