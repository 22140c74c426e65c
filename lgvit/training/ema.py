"""Exponential moving average of a model's weights, evaluated beside the model."""

import copy
import itertools
from collections.abc import Iterator

import torch
from torch import nn


class ModelEma:
    """A frozen copy whose parameters track `decay * ema + (1 - decay) * model` after each optimizer step.

    The decay is warmed up as min(decay, (1 + n) / (10 + n)) so early averages are not dominated
    by the random initialisation. Floating-point buffers (batch-norm running statistics) are
    averaged the same way, so the averaged weights meet statistics averaged over the same horizon
    rather than those of the current weights; integer buffers (counters, indices) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        averaged, current = [], []
        for ema_t, t in zip(_tensors(self.module), _tensors(model), strict=True):
            if ema_t.is_floating_point():
                averaged.append(ema_t)
                current.append(t.detach())
            else:
                ema_t.copy_(t)
        torch._foreach_lerp_(averaged, current, 1 - self.current_decay())  # one multi-tensor op, not a loop

    def current_decay(self) -> float:
        """The decay of the latest update, warmed up from the update count."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    """Parameters, then buffers, in registration order."""
    return itertools.chain(module.parameters(), module.buffers())
