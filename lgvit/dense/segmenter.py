"""`create_segmenter`: a staged lgvit backbone with an FPN and the Semantic-FPN head of Kirillov et al.,
"Panoptic Feature Pyramid Networks" (CVPR 2019, the semantic branch): each pyramid level is brought to the
finest level's stride by 3x3 conv-GroupNorm-ReLU blocks, each followed by a 2x bilinear upsampling (one
block without upsampling for the finest level), the levels are summed, and a 1x1 conv gives the logits,
upsampled bilinearly to the input size.

`head='panoptic'` adds Panoptic-DeepLab's instance branch (Cheng et al., CVPR 2020) on the same summed map: a
heatmap of instance centres and each pixel's offset to its instance's centre. At inference the pixels of the
thing classes (every class but 0, the background) are grouped by the centre their offsets point to, and each
pixel's class probabilities become half its own and half its group's (`grouped_log_probs`): a garment is named
more as a whole, less patch by patch (docs/dense.md, "Grouping each garment's pixels").
"""

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import create_backbone

HEADS = ("fpn", "panoptic")
GROUP_WEIGHT = 0.5  # the share of a grouped pixel's class probabilities its group decides (docs/dense.md)


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
        return self.classifier(self.features(maps))

    def features(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pyramid maps, finest first -> the (B, channels, h0, w0) sum of the branches, before the classifier."""
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
        return out


class InstanceHead(nn.Module):
    """Panoptic-DeepLab's instance outputs on a (B, channels, h, w) map: a 3x3 conv block and a 1x1 conv each for
    the centre heatmap (1 channel) and the offsets to the centre ((dy, dx), in units of the map's stride)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.center = nn.Sequential(_conv_block(channels, channels), nn.Conv2d(channels, 1, 1))
        self.offset = nn.Sequential(_conv_block(channels, channels), nn.Conv2d(channels, 2, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.center(x), self.offset(x)  # (B, 1, h, w), (B, 2, h, w)


class Segmenter(nn.Module):
    """Backbone + FPN + Semantic-FPN head (+ an `InstanceHead`): (B, C, H, W) images -> (B, num_classes, H, W)
    logits (log-probabilities of the grouped pixels with the instance head).

    The images come normalised as the backbone wants them (e.g. with `model.pretrained_cfg`'s mean and std).
    Each batch is padded at the bottom and right to sides that are multiples of `size_divisible`, with
    `pad_value` (one value per channel, of the normalised image: e.g. -mean/std for black), and the logits are
    cropped back: every pyramid level is then exactly twice the next, as mmseg's and torchvision's detection
    transforms pad too. At other sizes the FPN's upsampled maps are misaligned by up to a cell, which cost a
    segmenter trained on padded sizes 5.7 mIoU (docs/dense.md).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: SemanticFPNHead,
        size_divisible: int = 32,
        pad_value: Sequence[float] = (0.0,),
        instances: InstanceHead | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.head, self.instances = backbone, head, instances
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

    def forward(self, x: torch.Tensor, parts: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        """(B, C, H, W) images -> (B, classes, H, W) logits; with an instance head, the log-probabilities of the
        grouped pixels (`grouped_log_probs`). `parts`: the outputs the loss takes instead, a dict of 'logits'
        and, with an instance head, 'center' ((B, H, W) heatmap) and 'offset' ((B, 2, H, W), in pixels)."""
        h, w = x.shape[-2:]
        padded = self.pad(x)  # (B, C, H', W')
        maps = list(self.backbone(padded).values())[: self.levels]  # the stage levels, not 'pool'
        features = self.head.features(maps)  # (B, channels, h0, w0)
        out = {"logits": self.head.classifier(features)}
        if self.instances is not None:
            center, offset = self.instances(features)
            out |= {"center": center, "offset": offset * self.backbone.strides[0]}  # offsets in pixels
        # each output to the padded input's size, then cropped to the input's: (B, k, H, W)
        out = {k: F.interpolate(v, size=padded.shape[-2:], mode="bilinear")[..., :h, :w] for k, v in out.items()}
        if self.instances is not None:
            out["center"] = out["center"][:, 0]  # (B, H, W)
        if parts:
            return out
        if self.instances is None:
            return out["logits"]
        return grouped_log_probs(out["logits"], out["center"], out["offset"])


def instance_centers(
    center: torch.Tensor, threshold: float = 0.1, nms_kernel: int = 7, top_k: int = 200
) -> torch.Tensor:
    """Panoptic-DeepLab's centre selection: the (K, 2) (y, x) pixels of an (H, W) heatmap that are the maximum of
    their `nms_kernel` square and above `threshold`, at most the `top_k` highest."""
    pooled = F.max_pool2d(center[None, None], nms_kernel, 1, nms_kernel // 2)[0, 0]  # (H, W)
    peaks = ((center == pooled) & (center > threshold)).nonzero()  # (K, 2)
    if len(peaks) > top_k:
        peaks = peaks[center[peaks[:, 0], peaks[:, 1]].topk(top_k).indices]
    return peaks


def group_pixels(center: torch.Tensor, offset: torch.Tensor, things: torch.Tensor) -> torch.Tensor:
    """Each pixel's instance: the index of the centre (`instance_centers`) nearest to where its (2, H, W) offset
    points, for the (H, W) `things` pixels; -1 elsewhere, and everywhere when no centre was found."""
    groups = torch.full(things.shape, -1, dtype=torch.int64, device=things.device)  # (H, W)
    peaks = instance_centers(center)  # (K, 2)
    if len(peaks) == 0:
        return groups
    H, W = things.shape
    ys, xs = torch.meshgrid(torch.arange(H, device=things.device), torch.arange(W, device=things.device), indexing="ij")
    points = torch.stack([ys + offset[0], xs + offset[1]], -1)[things]  # (P, 2): where each thing pixel points
    groups[things] = torch.cdist(points.float(), peaks.float()).argmin(1)
    return groups


@torch.no_grad()
def grouped_log_probs(
    logits: torch.Tensor, center: torch.Tensor, offset: torch.Tensor, weight: float = GROUP_WEIGHT
) -> torch.Tensor:
    """(B, classes, H, W) logits, (B, H, W) centre heatmaps and (B, 2, H, W) offsets -> (B, classes, H, W)
    log-probabilities. Every grouped pixel (`group_pixels` on the pixels whose top class is not 0, the background)
    keeps its own background probability; the rest is shared out by `1 - weight` of its own class probabilities
    and `weight` of its group's class distribution (the summed class probabilities of the group's pixels: a soft
    majority vote)."""
    probs = logits.float().softmax(1)  # (B, classes, H, W)
    for b in range(len(probs)):
        p = probs[b]  # (classes, H, W), a view
        groups = group_pixels(center[b].float(), offset[b].float(), p.argmax(0) != 0)  # (H, W)
        grouped = groups >= 0
        if not grouped.any():
            continue
        owner = groups[grouped]  # (P,)
        votes = p[1:, grouped].T  # (P, classes - 1)
        share = torch.zeros(int(owner.max()) + 1, votes.shape[1], device=p.device).index_add_(0, owner, votes)
        share = share / share.sum(1, keepdim=True)  # (K, classes - 1): each group's class distribution
        p[1:, grouped] = (1 - weight) * votes.T + weight * (1 - p[0, grouped]) * share[owner].T
    return probs.clamp_min(1e-12).log()


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
        head: 'fpn', the Semantic-FPN head (Kirillov et al. 2019), or 'panoptic', the same with Panoptic-DeepLab's
            instance centres and offsets (Cheng et al. 2020), whose groups of pixels are named as a whole; class 0 is
            then the background and every other class a kind of object (it trains on instance maps too:
            `lgvit.dense.segmentation.segmentation_loss` with `PanopticTargets`).
        pretrained, out_indices, frozen_stages, norm_eval, config_overrides: as `create_backbone` takes them.
        fpn: the pyramid's width; head_channels: the head's width (Kirillov et al. use 256 and 128).
        size_divisible, pad_value: inputs are padded to sides that are multiples of `size_divisible` (1: never)
            with `pad_value` (per channel, or one for all, in normalised units), and the logits cropped back.
    """
    if head not in HEADS:
        raise ValueError(f"head={head!r} is not a segmentation head lgvit has: choose one of {HEADS}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be an int >= 1 (the label map's classes, background too)")
    if head == "panoptic" and num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: head='panoptic' needs the background (0) and at least one class")
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
    instances = InstanceHead(head_channels) if head == "panoptic" else None
    return Segmenter(backbone, semantic, size_divisible, pad_value, instances)
