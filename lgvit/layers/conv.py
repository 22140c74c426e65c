"""Convolutional blocks shared by the families."""

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global average pool -> 1x1 conv -> act -> 1x1 conv -> gate."""

    def __init__(
        self,
        channels: int,
        rd_channels: int,
        act: type[nn.Module] = nn.GELU,
        gate: type[nn.Module] = nn.Sigmoid,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias)
        self.act = act()
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class FusedMBConv(nn.Module):
    """GC ViT's fused-MBConv: x + pw1x1(SE(GELU(dw3x3(x)))), NCHW, no norms, no biases."""

    def __init__(self, dim: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False)
        self.act = nn.GELU()
        self.se = SqueezeExcite(dim, int(dim * se_ratio))
        self.conv_pw = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_pw(self.se(self.act(self.conv_dw(x))))
