"""Pieces of plain (non-windowed) token transformers: head split/merge, a class-token head, position embeddings."""

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads * d) -> (B, heads, N, d)."""
    B, N, C = x.shape
    return x.view(B, N, heads, C // heads).transpose(1, 2)  # (B, heads, N, d)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    B, H, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, H * d)  # (B, N, C)


class TokenHead(nn.Module):
    """Class token -> dropout -> Linear (`fc`; Identity when there are no classes)."""

    def __init__(self, in_features: int, num_classes: int, drop: float = 0.0) -> None:
        super().__init__()
        self.num_features = in_features
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x[:, 0])  # (B, C): the class token
        return x if pre_logits else self.fc(x)


def resize_pos_embed(
    pos: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int, mode: str = "bicubic"
) -> torch.Tensor:
    """(1, P + h*w, C) position embedding -> (1, P + H*W, C): the grid part interpolated, the P prefix ones kept."""
    if grid == new_grid:
        return pos
    prefix, patches = pos[:, :num_prefix], pos[:, num_prefix:]
    C = pos.shape[-1]
    patches = patches.reshape(1, grid[0], grid[1], C).permute(0, 3, 1, 2)  # (1, C, h, w)
    patches = F.interpolate(patches, size=new_grid, mode=mode, align_corners=False, antialias=True)  # as timm
    patches = patches.flatten(2).transpose(1, 2)  # (1, H*W, C)
    return torch.cat([prefix, patches], dim=1)
