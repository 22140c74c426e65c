"""LayerNorm over the channels of an NCHW map."""

import torch
import torch.nn.functional as F
from torch import nn

from .window import channels_first


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return channels_first(x)  # (B, C, H, W), channels-last in memory
