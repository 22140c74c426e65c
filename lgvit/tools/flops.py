"""Parameter and MAC counts, attention matmuls included.

torch's FlopCounterMode counts convolutions and matmuls. Fused SDPA on CPU dispatches to a
kernel it may not count (pytorch/pytorch#195460), so counting runs under `math_attention()`,
where q@k^T and attn@v are plain matmuls. MACs = FLOPs / 2, the convention of the official
GC ViT, Swin and timm figures. Build the model under `torch.device("meta")` to count
without allocating or computing anything.
"""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..layers import math_attention


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass of a single (C, H, W) image."""
    x = torch.zeros(1, *input_size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), math_attention(), counter:
        model(x)
    return counter.get_total_flops() // 2
