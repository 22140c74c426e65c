"""Attention maps in the image's own layout, attention rollout, and the hooks that collect them.

`attention_maps` runs the model once inside `layers.attention.record_attention()` (every attention module
also keeps its softmax) while forward pre-hooks on the blocks note how each one cut its map into windows
(the map's size, the window, Swin's shift, MaxViT's grid). The windows are then put back on the map with
the same `window_reverse` / `grid_reverse` the models use, so the shift and the grid's dilation are
undone and the padding is cropped exactly as in the forward pass.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.attention import TokenAttention, WindowAttention, record_attention
from ..layers.window import (
    Size2,
    fit_window,
    grid_partition,
    grid_reverse,
    padded_size,
    window_partition,
    window_reverse,
)
from ..models.gcvit import GCViTBlock
from ..models.maxvit import PartitionAttention
from ..models.swin import SwinBlock


@dataclass(frozen=True)
class Layout:
    """How one attention call saw its input: a (H, W) map cut into `window`s (shifted, or as a dilated grid),
    or tokens on a (H, W) grid (`window` None), keys reduced `sr` times (PVT)."""

    size: Size2
    window: Size2 | None = None
    shift: Size2 = (0, 0)
    grid: bool = False
    sr: int = 1


def _block_layout(block: nn.Module, args: tuple) -> Layout:
    """The layout a windowed block's attention uses, from the block's forward arguments."""
    x = args[0]  # (B, H, W, C)
    size = (x.shape[1], x.shape[2])
    if isinstance(block, GCViTBlock):  # forward(x, q_global, window)
        return Layout(size, tuple(args[2]))
    if isinstance(block, SwinBlock):  # forward(x, window, shift, mask)
        return Layout(size, tuple(args[1]), tuple(args[2]))
    return Layout(size, fit_window(size, block.window), grid=block.grid)  # as partition_attention


@contextmanager
def _layouts(model: nn.Module, image: Size2) -> Iterator[dict[nn.Module, Layout]]:
    """Forward pre-hooks that note every attention module's `Layout` while the block runs."""
    found: dict[nn.Module, Layout] = {}
    handles = []
    patch = getattr(model, "patch_size", 1)
    tokens = (image[0] // patch, image[1] // patch)  # DeiT/TNT: the patch grid (TNT's inner attention: per patch)
    for m in model.modules():
        if isinstance(m, (GCViTBlock, SwinBlock, PartitionAttention)):

            def block_hook(block: nn.Module, args: tuple) -> None:
                found[block.attn] = _block_layout(block, args)

            handles.append(m.register_forward_pre_hook(block_hook))
        elif isinstance(m, TokenAttention):

            def token_hook(attn: nn.Module, args: tuple, kwargs: dict) -> None:
                hw = args[1] if len(args) > 1 else kwargs.get("hw")
                found[attn] = Layout(
                    tuple(hw) if hw is not None else tokens, sr=attn.sr.stride[0] if attn.sr is not None else 1
                )

            handles.append(m.register_forward_pre_hook(token_hook, with_kwargs=True))
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (no dropout or drop-path) inside the block, its own mode after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def collect(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, Layout]]]:
    """One eval forward of `x`: the logits and, per attention module name, its raw probabilities and `Layout`."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, (WindowAttention, TokenAttention))}
    with eval_mode(model), torch.no_grad(), _layouts(model, tuple(x.shape[-2:])) as layouts, record_attention() as rec:
        logits = model(x)
    return logits, {names[m]: (probs[-1], layouts[m]) for m, probs in rec.items()}


def window_map(probs: torch.Tensor, heads: int, layout: Layout) -> torch.Tensor:
    """Window attention (B*nW, heads, N, N) (or windows folded into heads) -> (B, heads, N, H, W).

    Entry [b, h, j, y, x]: how much the query in slot j (row-major in its wh x ww window) of the window
    that holds map position (y, x) attends to the key at (y, x). Summed over (y, x) inside one window it is
    1 (the softmax row) less what fell on the padding, which is cropped; a slot on the padding (a query
    that exists only in the padded map) is 0.
    """
    n = probs.shape[-1]
    real = _real_queries(layout, probs.device)  # (nW, 1, Nq, 1)
    p = (probs.reshape(-1, real.shape[0], heads, n, n) * real).flatten(0, 1)  # (B*nW, heads, Nq, Nk), batch-major
    keys = p.permute(0, 3, 1, 2).reshape(p.shape[0], n, heads * n)  # (B*nW, Nk, heads*Nq): keys as the tokens
    padded = padded_size(layout.size, layout.window)
    if layout.grid:
        m = grid_reverse(keys, layout.window, padded, layout.size)  # (B, H, W, heads*Nq), dilation undone
    else:
        m = window_reverse(keys, layout.window, padded, layout.size, layout.shift)  # (B, H, W, heads*Nq)
    B, H, W, _ = m.shape
    return m.view(B, H, W, heads, n).permute(0, 3, 4, 1, 2)  # (B, heads, Nq, H, W)


def _real_queries(layout: Layout, device: torch.device) -> torch.Tensor:
    """(nW, 1, N, 1) repeated over the batch: 1 for a window slot on the map, 0 for one on its padding."""
    ones = torch.ones(1, *layout.size, 1, device=device)  # (1, H, W, 1): partitioning pads it with zeros
    if layout.grid:
        slots, _ = grid_partition(ones, layout.window)  # (nW, N, 1)
    else:
        slots, _ = window_partition(ones, layout.window, layout.shift)  # (nW, N, 1)
    return slots[:, None]  # (nW, 1, N, 1)


def token_map(probs: torch.Tensor, layout: Layout, batch: int) -> torch.Tensor:
    """Token attention (B, heads, Nq, Nk) -> (B, heads, Hk, Wk) on the keys' grid.

    With a class token (DeiT, LocalViT, TNT's outer and PVT's last stage): the class token's attention to
    every patch. Without (PVT's earlier stages, whose keys are the map reduced `sr` times): the attention
    each key receives, averaged over the queries. TNT's inner attention (one sequence of s x s pixel tokens
    per patch): that average, put back on the (H*s, W*s) pixel map.
    """
    seqs, heads, nq, nk = probs.shape
    (h, w), sr = layout.size, layout.sr
    if seqs != batch:  # one sequence per patch: TNT's pixels
        s = int(round(nk**0.5))
        m = probs.mean(2).view(batch, h, w, heads, s, s)  # (B, h, w, heads, s, s)
        return m.permute(0, 3, 1, 4, 2, 5).reshape(batch, heads, h * s, w * s)  # (B, heads, h*s, w*s)
    kh, kw = h // sr, w // sr
    first_key = nk - kh * kw  # the class token, if any, comes first
    rows = probs[:, :, 0] if nq > h * w else probs.mean(2)  # (B, heads, Nk)
    return rows[..., first_key:].reshape(batch, heads, kh, kw)  # (B, heads, Hk, Wk)


def _selected(names: list[str], blocks: list[str] | None) -> list[str]:
    """The attention modules named, or inside the modules named, by `blocks` (all of them for None)."""
    if blocks is None:
        return names
    unknown = [b for b in blocks if not any(n == b or n.startswith(b + ".") for n in names)]
    if unknown:
        raise ValueError(
            f"no attention module is or is inside {', '.join(unknown)}: choose from names such as "
            f"{', '.join(names[:3])} ... {names[-1]} (or a prefix of them, e.g. a stage)"
        )
    return [n for n in names if any(n == b or n.startswith(b + ".") for b in blocks)]


def to_maps(model: nn.Module, raw: dict[str, tuple[torch.Tensor, Layout]], batch: int) -> dict[str, torch.Tensor]:
    """`collect`'s raw probabilities in the image's layout (`window_map` / `token_map`), by module name."""
    out = {}
    for name, (probs, layout) in raw.items():
        heads = model.get_submodule(name).num_heads
        out[name] = window_map(probs, heads, layout) if layout.window else token_map(probs, layout, batch)
    return out


def attention_maps(model: nn.Module, x: torch.Tensor, blocks: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Every attention module's probabilities (or those of `blocks`: module names or prefixes such as
    'stages.1'), by module name, in the image's own layout; one eval forward of the (B, C, H, W) batch `x`.

    - Window attention (GC ViT local and global-query, Swin with the shift undone, MaxViT block and grid
      with the dilation undone): (B, heads, N, H', W') on the stage's (H', W') map, N = wh*ww query slots
      (`window_map`). GC ViT's global-query blocks: slot j is the j-th global query token, the same for
      every window, so [b, h, j] is that token's attention over the whole stage (the paper's Figure 1).
      `.mean(2)` gives the attention each position receives, (B, heads, H', W').
    - Token attention: (B, heads, H', W') on the key grid (`token_map`): the class token's attention.
    """
    _, raw = collect(model, x)
    raw = {n: raw[n] for n in _selected(list(raw), blocks)}
    return to_maps(model, raw, x.shape[0])


def attention_rollout(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) of a class-token model: (B, H/p, W/p), rows of the patches.

    Per block the heads' mean plus the identity (the residual), rows renormalised, multiplied from the
    first block to the last; the class token's row over the patches is returned. DeiT, LocalViT and TNT
    (its outer attention) only: the product needs every block to attend over the same tokens.
    """
    _, raw = collect(model, x)
    outer = [(p, lay) for p, lay in raw.values() if p.shape[0] == x.shape[0] and lay.window is None]
    if not outer or any(p.shape[-1] != p.shape[-2] or p.shape[-1] != lay.size[0] * lay.size[1] + 1 for p, lay in outer):
        raise ValueError(
            f"attention rollout needs a class-token model whose blocks all attend over the same tokens "
            f"(DeiT, LocalViT, TNT); {type(model).__name__} attends within windows or over reduced keys: "
            "use attention maps or Grad-CAM"
        )
    n = outer[0][0].shape[-1]
    eye = torch.eye(n, device=x.device)
    rollout = eye.expand(x.shape[0], n, n)  # (B, N+1, N+1)
    for probs, _ in outer:
        a = 0.5 * probs.mean(1) + 0.5 * eye  # (B, N+1, N+1): attention plus the residual
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    h, w = outer[0][1].size
    return rollout[:, 0, 1:].reshape(-1, h, w)  # (B, H/p, W/p)
