"""GELU that can overwrite its input when autograd does not need it."""

import torch
from torch import nn

from .window import tracing


class GELU(nn.GELU):
    """nn.GELU (`approximate` 'none' or 'tanh', TensorFlow's `gelu(approximate=True)`).

    With `inplace`, it overwrites its input whenever autograd does not need it (inference), which
    saves allocating (and page-faulting) a fresh tensor; with gradients it never does. Use it only
    on a temporary that nothing else reads.
    """

    def __init__(self, approximate: str = "none", inplace: bool = False) -> None:
        super().__init__(approximate=approximate)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace and not tracing() and not (torch.is_grad_enabled() and x.requires_grad):
            return torch.ops.aten.gelu_(x, approximate=self.approximate)
        return super().forward(x)


class GELUTanh(GELU):
    """GELU with the tanh approximation."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__("tanh", inplace)
