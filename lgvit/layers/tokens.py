"""Pieces of token transformers: head split/merge, tokens <-> maps, and resized position embeddings."""

import torch
import torch.nn.functional as F

from .window import channels_first, tracing


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads * d) -> (B, heads, N, d)."""
    B, N, C = x.shape
    return x.view(B, N, heads, C // heads).transpose(1, 2)  # (B, heads, N, d)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    B, H, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, H * d)  # (B, N, C)


def map_to_tokens(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, C, H, W) map -> (B, H*W, C) tokens and the grid (H, W)."""
    return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])  # (B, H*W, C)


def tokens_to_map(x: torch.Tensor, hw: tuple[int, int], num_prefix: int = 0) -> torch.Tensor:
    """(B, P + H*W, C) tokens -> (B, C, H, W) map, the P prefix tokens (a class token) dropped."""
    x = x[:, num_prefix:].reshape(x.shape[0], hw[0], hw[1], x.shape[2])  # (B, H, W, C)
    return channels_first(x)  # (B, C, H, W)


def resize_pos_embed(
    pos: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int, mode: str = "bicubic"
) -> torch.Tensor:
    """(1, P + h*w, C) position embedding -> (1, P + H*W, C): the grid part interpolated, the P prefix ones kept.

    Antialiased, as timm's `resample_abs_pos_embed`, so outputs equal timm's at every size. The dynamo ONNX
    exporter writes it as Resize(antialias=1; cubic: cubic_coeff_a=-0.5, exclude_outside=1) at opset >= 18,
    which onnxruntime runs; the TorchScript exporter has no antialiased resize. With a traced grid (symbolic
    sizes: torch.export, torch.compile(dynamic=True), FX) the resize is always in the graph, so one graph
    serves every size; at the native grid it is the identity.
    """
    if not tracing() and tuple(new_grid) == tuple(grid):  # eager: ints
        return pos
    prefix, patches = pos[:, :num_prefix], pos[:, num_prefix:]
    patches = patches.reshape(1, grid[0], grid[1], pos.shape[-1]).permute(0, 3, 1, 2)  # (1, C, h, w)
    patches = F.interpolate(patches, size=new_grid, mode=mode, align_corners=False, antialias=True)  # as timm
    patches = patches.flatten(2).transpose(1, 2)  # (1, H*W, C)
    return torch.cat([prefix, patches], dim=1)
