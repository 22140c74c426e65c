"""A stack of blocks with optional activation checkpointing: the one block loop of lgvit."""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Blocks(nn.ModuleList):
    """A stage's blocks (`blocks.{j}`), run in order.

    With `grad_checkpointing` set (timm's `set_grad_checkpointing`) and gradients enabled, each block's
    activations are recomputed in the backward pass instead of kept: less memory, one more forward.
    """

    def __init__(self, blocks: Iterable[nn.Module]) -> None:
        super().__init__(blocks)
        self.grad_checkpointing = False

    def run(self, block: nn.Module, *args: Any) -> Any:
        """`block(*args)`, through activation checkpointing when it is on: for loops that vary the arguments."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        """Runs every block on `x`, each getting the same extra `args`."""
        for block in self:
            x = self.run(block, x, *args)
        return x
