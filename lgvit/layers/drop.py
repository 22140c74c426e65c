"""Stochastic depth: DropPath and the per-block drop rates of a model."""

import itertools

import torch
from torch import nn


class DropPath(nn.Module):
    """Drops the whole residual branch per sample with probability `p` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(rate: float, depths: tuple[int, ...]) -> list[float]:
    """Linearly increasing drop-path rates over all blocks, 0 -> `rate` (as torch.linspace; meta-device safe)."""
    n = sum(depths)
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def per_stage(rates: list[float], depths: tuple[int, ...]) -> list[list[float]]:
    """Per-block values split into one list per stage: [r0, r1, r2], (1, 2) -> [[r0], [r1, r2]]."""
    ends = list(itertools.accumulate(depths, initial=0))
    return [rates[a:b] for a, b in itertools.pairwise(ends)]
