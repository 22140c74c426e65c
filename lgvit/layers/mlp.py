"""The transformer feed-forward (Linear -> GELU -> Linear) and layer scale."""

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .act import GELU

INPLACE_GELU = partial(GELU, inplace=True)


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout, on the last dimension.

    The activation acts on fc1's fresh output, so the default GELU runs in place in inference.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        out_dim: int | None = None,
        act: Callable[[], nn.Module] = INPLACE_GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """Per-channel learnable scale on the last dimension (CaiT)."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma
