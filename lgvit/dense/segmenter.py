"""`create_segmenter`: a staged lgvit backbone with an FPN and the Semantic-FPN head of Kirillov et al.,
"Panoptic Feature Pyramid Networks" (CVPR 2019, the semantic branch): each pyramid level is brought to the
finest level's stride by 3x3 conv-GroupNorm-ReLU blocks, each followed by a 2x bilinear upsampling (one
block without upsampling for the finest level), the levels are summed, and a 1x1 conv gives the logits,
upsampled bilinearly to the input size."""

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import create_backbone

HEADS = ("fpn",)


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 conv (no bias) -> GroupNorm (32 groups where the width allows) -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(32, out_ch), out_ch), nn.ReLU(True)
    )


class SemanticFPNHead(nn.Module):
    """Kirillov et al.'s semantic branch on pyramid maps of `in_channels` at `strides` (the finest first)."""

    def __init__(self, in_channels: int, strides: Sequence[int], num_classes: int, channels: int = 128) -> None:
        super().__init__()
        steps = [round(math.log2(s / strides[0])) for s in strides]
        self.branches = nn.ModuleList(
            nn.ModuleList(_conv_block(in_channels if j == 0 else channels, channels) for j in range(max(1, n)))
            for n in steps
        )
        self.upsamples = steps
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pyramid maps, finest first -> (B, num_classes, h0, w0) logits at the finest map's size."""
        size = maps[0].shape[-2:]
        out = 0
        for x, blocks, ups in zip(maps, self.branches, self.upsamples, strict=True):
            for j, block in enumerate(blocks):
                x = block(x)
                if ups:  # 2x per block; the last lands exactly on the finest map's (possibly odd) size
                    last = j == len(blocks) - 1
                    x = F.interpolate(
                        x, size=size if last else None, scale_factor=None if last else 2.0, mode="bilinear"
                    )
            out = out + x
        return self.classifier(out)


class Segmenter(nn.Module):
    """Backbone + FPN + Semantic-FPN head: (B, C, H, W) images -> (B, num_classes, H, W) logits.

    The images come normalised as the backbone wants them (e.g. with `model.pretrained_cfg`'s mean and std).
    Each batch is padded at the bottom and right to sides that are multiples of `size_divisible`, with
    `pad_value` (one value per channel, of the normalised image: e.g. -mean/std for black), and the logits are
    cropped back: every pyramid level is then exactly twice the next, as mmseg's and torchvision's detection
    transforms pad too. At other sizes the FPN's upsampled maps are misaligned by up to a cell, which cost a
    segmenter trained on padded sizes 5.7 mIoU (docs/dense.md).
    """

    def __init__(
        self, backbone: nn.Module, head: SemanticFPNHead, size_divisible: int = 32, pad_value: Sequence[float] = (0.0,)
    ) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.levels = len(backbone.body.strides)
        self.size_divisible = size_divisible
        self.register_buffer("pad_value", torch.tensor(pad_value, dtype=torch.float32).view(-1, 1, 1), False)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H', W'), H' and W' the multiples of `size_divisible` at or above H and W."""
        k, (h, w) = self.size_divisible, x.shape[-2:]
        ph, pw = -h % k, -w % k
        if not (ph or pw):
            return x
        out = self.pad_value.to(x.dtype).expand(x.shape[0], x.shape[1], h + ph, w + pw).clone()  # (B, C, H', W')
        out[..., :h, :w] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = self.pad(x)  # (B, C, H', W')
        maps = list(self.backbone(padded).values())[: self.levels]  # the stage levels, not 'pool'
        logits = F.interpolate(self.head(maps), size=padded.shape[-2:], mode="bilinear")  # (B, classes, H', W')
        return logits[..., :h, :w]  # (B, classes, H, W)


def create_segmenter(
    name: str,
    num_classes: int,
    head: str = "fpn",
    pretrained: bool | str | os.PathLike | None = None,
    out_indices: Sequence[int] | None = None,
    fpn: int = 256,
    head_channels: int = 128,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    size_divisible: int = 32,
    pad_value: Sequence[float] = (0.0,),
    **config_overrides,
) -> Segmenter:
    """A semantic-segmentation model on a registered staged model.

    Args:
        name: a staged model (see `create_backbone`).
        num_classes: the classes of the label maps, background included (e.g. 11 for the Fashion scenes).
        head: 'fpn', the Semantic-FPN head (Kirillov et al. 2019).
        pretrained, out_indices, frozen_stages, norm_eval, config_overrides: as `create_backbone` takes them.
        fpn: the pyramid's width; head_channels: the head's width (Kirillov et al. use 256 and 128).
        size_divisible, pad_value: inputs are padded to sides that are multiples of `size_divisible` (1: never)
            with `pad_value` (per channel, or one for all, in normalised units), and the logits cropped back.
    """
    if head not in HEADS:
        raise ValueError(f"head={head!r} is not a segmentation head lgvit has: choose one of {HEADS}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be an int >= 1 (the label map's classes, background too)")
    if not isinstance(fpn, int) or isinstance(fpn, bool):
        raise ValueError(f"fpn={fpn!r}: the segmenter needs a pyramid width (an int, e.g. 256)")
    if not isinstance(head_channels, int) or isinstance(head_channels, bool) or head_channels < 1:
        raise ValueError(f"head_channels={head_channels!r} must be an int >= 1 (e.g. 128)")
    if not isinstance(size_divisible, int) or isinstance(size_divisible, bool) or size_divisible < 1:
        raise ValueError(f"size_divisible={size_divisible!r} must be an int >= 1 (e.g. 32; 1 pads nothing)")
    backbone = create_backbone(
        name, pretrained, out_indices, fpn, frozen_stages=frozen_stages, norm_eval=norm_eval, **config_overrides
    )
    chans = backbone.body.model.in_chans
    if not pad_value or len(pad_value) not in (1, chans):
        raise ValueError(f"pad_value={pad_value!r}: give one value, or one per input channel ({chans})")
    levels = len(backbone.body.strides)
    semantic = SemanticFPNHead(fpn, backbone.strides[:levels], num_classes, head_channels)
    return Segmenter(backbone, semantic, size_divisible, pad_value)
