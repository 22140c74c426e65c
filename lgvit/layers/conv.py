"""Convolutional blocks shared by the families."""

import torch
import torch.nn.functional as F
from torch import nn

from .window import tracing


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

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """`x` gated per channel; `inplace` overwrites `x` (only for a temporary autograd does not need)."""
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = self.gate(self.fc2(self.act(self.fc1(s))))
        return x.mul_(gate) if inplace else x * gate


class ShortMapConv2d(nn.Conv2d):
    """A zero-padded Conv2d that pads explicitly, in eager, when the map is shorter than the kernel.

    oneDNN's CPU kernels for a map of fewer rows than the kernel (a 3x3 depth-wise conv on a 2x2 map: the
    last stage of the 28 px models) are 5-9x slower than the same conv on the map padded first (128 x 256
    x 2 x 2, forward and backward: 8.9 ms against 1.0). The result is the same numbers; traced graphs keep
    the plain conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            tracing()
            or x.shape[-2] >= self.kernel_size[0]
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
        ):
            return super().forward(x)
        ph, pw = self.padding
        return F.conv2d(F.pad(x, (pw, pw, ph, ph)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 Conv2d that runs, in eager, as a Linear over the channels of the (B, H, W, C) view.

    On the small maps of the 28 px models oneDNN's 1x1 conv is 1.1-2.3x slower than the same product as a
    matmul, forward and backward (128 x 256 x 2 x 2 -> 128 channels: 1.9 ms against 0.8). A channels-last
    input (every map here) makes the view free, and the output is channels-last again. The parameter and
    the state dict are a Conv2d's; traced graphs keep the plain conv."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tracing():
            return super().forward(x)
        y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)  # (B, H, W, C_out)
        return y.permute(0, 3, 1, 2)  # (B, C_out, H, W), channels-last


class FusedMBConv(nn.Module):
    """GC ViT's fused-MBConv: x + pw1x1(SE(GELU(dw3x3(x)))), NCHW, no norms, no biases."""

    def __init__(self, dim: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        self.conv_dw = ShortMapConv2d(dim, dim, 3, 1, 1, groups=dim, bias=False)
        self.act = nn.GELU()
        self.se = SqueezeExcite(dim, int(dim * se_ratio))
        self.conv_pw = PointwiseConv2d(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tracing() or (torch.is_grad_enabled() and (x.requires_grad or self.conv_dw.weight.requires_grad)):
            return x + self.conv_pw(self.se(self.act(self.conv_dw(x))))
        # inference: GELU, the SE gate and the residual add overwrite this block's own temporaries,
        # which saves allocating (and page-faulting) three full-size maps per call (measured on the stem)
        y = torch.ops.aten.gelu_(self.conv_dw(x))
        return self.conv_pw(self.se(y, inplace=True)).add_(x)


class ChannelsLastConv2d(nn.Conv2d):
    """A Conv2d that runs channels-last in eager, also on a 1-channel batch.

    A (B, 1, H, W) batch is contiguous in both layouts, so the conv follows the weight's strides and picks
    channels-first; when its output then meets channels-last gradients (every later layer here is
    channels-last), the weight-gradient kernel is about 7x slower (gcvit_fmnist's stem at batch 128:
    4.9 ms against 0.7, the conv's forward and backward alone). A channels-last copy of the weight settles
    the choice. The parameter and the state dict are unchanged; traced graphs keep the plain conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tracing():
            return super().forward(x)
        cl = torch.channels_last
        # `.to`, not `.contiguous`: a 1-channel weight counts as channels-last already and would be left as it is
        return self._conv_forward(x.contiguous(memory_format=cl), self.weight.to(memory_format=cl), self.bias)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one axis of length `size`: output = ceil(size / stride).

    Integer arithmetic only (ceil(size / stride) = (size + stride - 1) // stride), so a symbolic size
    gives symbolic pads, not a size baked into a traced graph."""
    total = ((size + stride - 1) // stride - 1) * stride + kernel - size
    if kernel < stride:  # the only case where the total can be negative
        total = max(total, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding, computed from the input size at run time (extra pixel at the end)."""

    def __init__(
        self, in_chans: int, out_chans: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = True
    ) -> None:
        super().__init__(in_chans, out_chans, kernel, stride, 0, groups=groups, bias=bias)

    def pads(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        """(left, right, top, bottom): the zero padding TensorFlow gives `x` for this conv."""
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        return left, right, top, bottom

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """`x` zero-padded as TensorFlow pads it for this conv."""
        return F.pad(x, self.pads(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad(x))


def avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow 'SAME' 2x2 stride-2 average pool: a window cut by an odd edge averages its valid pixels.

    Traced, the same as zero-padding to even sides and dividing by the valid fraction: ceil_mode's
    output size needs a proof about symbolic sizes that the tracer cannot make."""
    if not tracing():
        return F.avg_pool2d(x, 2, 2, ceil_mode=True)
    H, W = x.shape[-2:]
    pads = (0, (W + 1) // 2 * 2 - W, 0, (H + 1) // 2 * 2 - H)
    valid = F.pad(x.new_ones(1, 1, H, W), pads)  # (1, 1, Hp, Wp)
    return F.avg_pool2d(F.pad(x, pads), 2, 2) / F.avg_pool2d(valid, 2, 2)
