"""Exponential moving average of a model's weights, evaluated beside the model."""

import copy

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
        d = self.current_decay()
        for ema_p, p in zip(self.module.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - d)
        for ema_b, b in zip(self.module.buffers(), model.buffers(), strict=True):
            if ema_b.is_floating_point():
                ema_b.lerp_(b, 1 - d)
            else:
                ema_b.copy_(b)

    def current_decay(self) -> float:
        """The decay of the latest update, warmed up from the update count."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
