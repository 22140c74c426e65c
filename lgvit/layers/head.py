"""Classifier head and the helpers behind `forward_intermediates`."""

from collections import OrderedDict

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Pool -> [LayerNorm] -> [Linear + tanh pre-logits] -> dropout -> Linear (`fc`, Identity if no classes).

    Args:
        in_features: channels of the features pooled.
        num_classes: classifier outputs (0: none, `forward` returns the pre-logits).
        drop: dropout before `fc`.
        pool: 'avg' averages an NCHW map over H and W; 'token' takes the class token, the first
            of (B, N, C) tokens.
        norm: a LayerNorm after pooling (`norm`, MaxViT's head).
        hidden: a Linear + tanh pre-logits layer of this width (`pre_logits.fc`, MaxViT's head);
            it sets `num_features`.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        drop: float = 0.0,
        pool: str = "avg",
        norm: bool = False,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        _check_classes(num_classes)
        if pool not in ("avg", "token"):
            raise ValueError(f"pool must be 'avg' or 'token', got {pool!r}")
        self.num_features = hidden or in_features
        self.pool = pool
        self.norm = nn.LayerNorm(in_features) if norm else nn.Identity()
        self.pre_logits = (
            nn.Sequential(OrderedDict(fc=nn.Linear(in_features, hidden), act=nn.Tanh())) if hidden else nn.Identity()
        )
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        _check_classes(num_classes)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3)) if self.pool == "avg" else x[:, 0]  # (B, C)
        x = self.drop(self.pre_logits(self.norm(x)))  # (B, num_features)
        return x if pre_logits else self.fc(x)


def _check_classes(num_classes: int) -> None:
    if not (isinstance(num_classes, int) and num_classes >= 0):
        raise ValueError(f"num_classes={num_classes!r} is invalid: must be an int >= 0 (0: no classifier)")


def feature_indices(indices: int | list[int] | tuple[int, ...] | None, num: int) -> list[int]:
    """timm's convention: None = all, an int n = the last n, a list = those (negatives count from the end)."""
    if indices is None:
        return list(range(num))
    if isinstance(indices, int):
        if not 0 < indices <= num:
            raise ValueError(f"asked for the last {indices} of {num} feature levels")
        return list(range(num - indices, num))
    out = []
    for i in indices:
        if not -num <= i < num:
            raise IndexError(f"feature index {i} is out of range for {num} levels")
        out.append(i % num)
    return sorted(out)
