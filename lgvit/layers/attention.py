"""lgvit's attention: one kernel (`attend`, on `scaled_dot_product_attention`) and its two modules.

- `WindowAttention`: every windowed family routes through it: Swin (bias + shift mask), GC ViT
  (local windows, and windows whose query is the image's global query) and MaxViT (block and
  grid partitions). The additive relative-position bias and an optional per-window mask are
  passed to SDPA as `attn_mask`.
- `TokenAttention`: attention over all tokens of a sequence (DeiT, PVT with its reduced keys, TNT).

`math_attention()` switches every module to the reference graph: plain matmul attention, and
one-hot einsum bias lookups where the reference did those (MaxViT). Parity checks and FLOP
counting use it. `record_attention()` makes every module also keep its attention probabilities
(`lgvit.explain` reads them); the forward output stays the fused kernel's.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .pos_bias import RelPosBias
from .tokens import merge_heads, split_heads
from .window import Size2, tracing

_MATH = False
_RECORD: dict[nn.Module, list[torch.Tensor]] | None = None  # set inside record_attention()


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


@contextmanager
def record_attention() -> Iterator[dict[nn.Module, list[torch.Tensor]]]:
    """Inside the block, every attention module appends its probabilities softmax(q k^T / sqrt(d) + bias)
    to the yielded dict under itself, one (B', heads', Nq, Nk) tensor per call, without dropout.

    They are computed on the side, explicitly: the module's output is still the fused kernel's, bit for bit.
    Layouts: `WindowAttention` with a mask records (B, nW*heads, N, N) (windows folded into heads; view it
    as (B*nW, heads, N, N)), otherwise (B*nW, heads, N, N); `TokenAttention` records (B, heads, N, M).
    """
    global _RECORD
    prev, _RECORD = _RECORD, {}
    try:
        yield _RECORD
    finally:
        _RECORD = prev


def _probabilities(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias), detached: the weights `attend` applies (before dropout)."""
    attn = (q.detach() * q.shape[-1] ** -0.5) @ k.detach().transpose(-2, -1)  # (B, heads, Nq, Nk)
    return (attn if bias is None else attn + bias.detach()).softmax(-1)


def math_attention_enabled() -> bool:
    """Whether the reference graph is on (inside `math_attention()`): modules skip their shortcuts."""
    return _MATH


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    dropout: float,
    owner: nn.Module | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for (B, heads, N, d) inputs and a bias broadcastable to (B, heads, N, N).

    The one attention kernel of lgvit (windowed and plain token attention alike). Fused SDPA unless inside
    `math_attention()` or the bias needs a gradient. The bias is passed 4-D: with a 3-D mask, CPU SDPA falls
    back to its slow math path (measured 6x slower on 2 cores). Inside `record_attention()` the
    probabilities are also kept under `owner` (the calling module).
    """
    if bias is not None and bias.ndim < 4:
        bias = bias.view((1,) * (4 - bias.ndim) + tuple(bias.shape))  # (1, heads, N, N)
    if _RECORD is not None and owner is not None:
        _RECORD.setdefault(owner, []).append(_probabilities(q, k, bias))
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
        into the head axis. On the CPU, while the table takes no gradient (eval, no_grad, a frozen table),
        the tensor is cached for the last (window, mask, dtype) and a copy of the table, and rebuilt when the
        table's values differ from the copy, so repeated forwards gather nothing. The values are compared, not
        the in-place version counter, which fused optimizers (`torch.optim.AdamW(fused=True)`) do not bump. On
        other devices the comparison would wait for the device, so the tensor is rebuilt every call, as while
        training, tracing (torch.compile, torch.export, ONNX, FX: the graph holds the gather) or building the
        reference graph. The cache is not in the state dict.
        """
        table = self.rel_pos.relative_position_bias_table
        if (
            tracing()
            or (table.requires_grad and torch.is_grad_enabled())
            or (_MATH and self.onehot_lookup)
            or table.device.type != "cpu"
        ):
            return self._build_bias(window, mask, dtype)
        key = (window, dtype, torch.is_inference_mode_enabled())
        cached = self.__dict__.get("_bias_cache")
        if cached is not None and cached[0] == key and cached[1] is mask and torch.equal(cached[2], table):
            return cached[3]
        bias = self._build_bias(window, mask, dtype)
        self._bias_cache = (key, mask, table.detach().clone(), bias)
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
            windows = Bw // max(B, 1)  # an empty batch has no windows either
            if tracing():  # a gather: a traced reshape would need a proof that B divides Bw
                q = q_global.index_select(0, torch.arange(Bw, device=x.device) // windows)  # (Bw, heads, N, d)
            else:
                q = q_global.unsqueeze(1).expand(B, windows, -1, -1, -1)  # (B, nW, heads, N, d)
                q = q.reshape(Bw, self.num_heads, N, self.head_dim)  # (Bw, heads, N, d), per image
        else:
            qkv = self.qkv(x).view(Bw, N, 3, self.num_heads, self.head_dim)  # (Bw, N, 3, heads, d)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (Bw, heads, N, d)
        drop = self.attn_drop if self.training else 0.0
        if mask is None:
            out = attend(q, k, v, bias, drop, self)  # (Bw, heads, N, d)
        else:
            # windows at the same position share a mask: fold them into the head axis so the
            # (nW, heads, N, N) bias + mask broadcasts over the batch as one 4-D tensor
            fold = (Bw // mask.shape[0], bias.shape[1], N, self.head_dim)
            out = attend(q.reshape(fold), k.reshape(fold), v.reshape(fold), bias, drop, self)  # (B, nW*heads, N, d)
            out = out.reshape(Bw, self.num_heads, N, self.head_dim)  # (Bw, heads, N, d)
        out = out.transpose(1, 2).reshape(Bw, N, C)  # (Bw, N, C)
        return self.proj_drop(self.proj(out))


class TokenAttention(nn.Module):
    """Multi-head attention over all tokens of a (B, N, C) sequence, optionally against a reduced map (PVT).

    Args:
        dim: channels.
        num_heads: heads.
        qkv_bias: bias on the q/k/v projections.
        split: how the checkpoints project q, k and v, which also names the Linear layers:
            'qkv' (one Linear, DeiT/ViT), 'q_kv' (PVT) or 'qk_v' (TNT).
        sr: PVT's spatial reduction: keys and values come from the (H, W) token map shrunk `sr`
            times by a strided conv and a LayerNorm (`sr`, `norm`); needs split 'q_kv'.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
    """

    SPLITS = {"qkv": (("qkv", 3),), "q_kv": (("q", 1), ("kv", 2)), "qk_v": (("qk", 2), ("v", 1))}

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        split: str = "qkv",
        sr: int = 1,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if split not in self.SPLITS:
            raise ValueError(f"split must be one of {', '.join(self.SPLITS)}, got {split!r}")
        if sr > 1 and split != "q_kv":
            raise ValueError(f"a spatial reduction (sr={sr}) needs keys and values apart from queries: split 'q_kv'")
        self.num_heads = num_heads
        self.split = split
        for name, parts in self.SPLITS[split]:
            self.add_module(name, nn.Linear(dim, parts * dim, bias=qkv_bias))
        self.sr = nn.Conv2d(dim, dim, sr, sr) if sr > 1 else None
        self.norm = nn.LayerNorm(dim) if sr > 1 else None  # eps 1e-5, as the official PVT
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _reduced(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The keys' and values' source: the (B, N, C) tokens as their map, shrunk `sr` times, as (B, M, C)."""
        B, N, C = x.shape
        m = x.transpose(1, 2).reshape(B, C, hw[0], hw[1])  # (B, C, H, W)
        return self.norm(self.sr(m).flatten(2).transpose(1, 2))  # (B, H*W/sr^2, C)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """x: (B, N, C) tokens; `hw` is their (H, W) grid, needed with a spatial reduction."""
        source = x if self.sr is None else self._reduced(x, hw)
        parts: list[torch.Tensor] = []
        for name, n in self.SPLITS[self.split]:
            chunks = getattr(self, name)(x if name.startswith("q") else source).chunk(n, dim=-1)
            parts += [chunks[i] for i in range(n)]  # indexed: FX cannot iterate a traced chunk
        q, k, v = (split_heads(t, self.num_heads) for t in parts)  # each (B, heads, N or M, d)
        out = attend(q, k, v, None, self.attn_drop if self.training else 0.0, self)
        return self.proj_drop(self.proj(merge_heads(out)))
