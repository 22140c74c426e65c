"""Semantic-segmentation batches (`SegmentationCollate`: images and label maps of different sizes padded to one,
the padding ignored; with instance maps, also Panoptic-DeepLab's centre and offset targets: `PanopticTargets`)
and the training loss of a segmenter (`segmentation_loss`)."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255  # the label of pixels no loss or metric counts: batch padding (and, by custom, unlabeled pixels)
CENTER_SIGMA = 4.0  # the centre heatmap's Gaussian, in pixels (Panoptic-DeepLab's 8 did 0.8-1.8 mIoU worse here)
# the heatmap's MSE and the offsets' L1 in the loss: Panoptic-DeepLab's 200 for the heatmap took the segmenter from
# 43.7 to 27.3 mIoU on a short schedule, 10 kept it (docs/dense.md); 0.01 for the offsets is Panoptic-DeepLab's
CENTER_WEIGHT, OFFSET_WEIGHT = 10.0, 0.01


def instance_targets(instances: torch.Tensor, sigma: float = CENTER_SIGMA) -> tuple[torch.Tensor, torch.Tensor]:
    """An (H, W) instance map (-1: no instance, else its index) -> Panoptic-DeepLab's targets: the (H, W) centre
    heatmap (a Gaussian of `sigma` pixels at each instance's centre of mass, the maximum where they meet) and the
    (2, H, W) offsets (dy, dx) from each instance pixel to its centre (0 elsewhere)."""
    H, W = instances.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    heat, offset = torch.zeros(H, W), torch.zeros(2, H, W)
    for k in instances.unique().tolist():
        if k < 0:
            continue
        mask = instances == k  # (H, W)
        cy, cx = ys[mask].mean(), xs[mask].mean()
        heat = torch.maximum(heat, torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2)))
        offset[0][mask], offset[1][mask] = cy - ys[mask], cx - xs[mask]
    return heat, offset


@dataclass
class PanopticTargets:
    """A batch's label maps with their instances' targets, moving to a device as a tensor does."""

    maps: torch.Tensor  # (B, H, W) int64 labels, IGNORE_INDEX on the padding
    center: torch.Tensor  # (B, H, W) heatmaps
    offset: torch.Tensor  # (B, 2, H, W) offsets to the centres, in pixels
    instance: torch.Tensor  # (B, H, W) bool: the pixels of an instance (where the offsets count)

    def to(self, device: torch.device, non_blocking: bool = False) -> "PanopticTargets":
        return PanopticTargets(*(t.to(device, non_blocking=non_blocking) for t in vars(self).values()))


class SegmentationCollate:
    """(image, label map) items -> ((B, C, H, W) normalised images, (B, H, W) int64 maps) at the batch's largest
    height and width: images padded with zeros before normalising, maps with IGNORE_INDEX. Items whose target is
    a dict of 'semantic' and 'instances' maps (`FashionScenes(task='panoptic')`) give `PanopticTargets`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1)  # (C, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)  # (C, 1, 1)

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor | dict]]) -> tuple[torch.Tensor, torch.Tensor]:
        h = max(x.shape[1] for x, _ in batch)
        w = max(x.shape[2] for x, _ in batch)
        images = torch.zeros(len(batch), batch[0][0].shape[0], h, w)  # (B, C, H, W)
        maps = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64)  # (B, H, W)
        panoptic = isinstance(batch[0][1], dict)
        if panoptic:
            center, offset = torch.zeros(len(batch), h, w), torch.zeros(len(batch), 2, h, w)
            instance = torch.zeros(len(batch), h, w, dtype=torch.bool)
        for i, (x, y) in enumerate(batch):
            images[i, :, : x.shape[1], : x.shape[2]] = x
            if panoptic:
                y, instances = y["semantic"], y["instances"]
                heat, off = instance_targets(instances)
                center[i, : y.shape[0], : y.shape[1]], offset[i, :, : y.shape[0], : y.shape[1]] = heat, off
                instance[i, : y.shape[0], : y.shape[1]] = instances >= 0
            maps[i, : y.shape[0], : y.shape[1]] = y
        images = (images - self.mean) / self.std
        return (images, PanopticTargets(maps, center, offset, instance)) if panoptic else (images, maps)


def segmentation_loss(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor | PanopticTargets
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss, the summed per-image pixel accuracy) of a batch: cross-entropy over the labelled pixels, and with
    `PanopticTargets` Panoptic-DeepLab's centre (MSE over the labelled pixels) and offset (L1 over the instances'
    pixels) losses (`CENTER_WEIGHT`, `OFFSET_WEIGHT`)."""
    targets = maps if isinstance(maps, PanopticTargets) else None
    if targets is not None:
        maps = targets.maps
        out = model(images, parts=True)
        logits = out["logits"].float()  # (B, classes, H, W)
    else:
        logits = model(images).float()  # (B, classes, H, W)
    loss = F.cross_entropy(logits, maps, ignore_index=IGNORE_INDEX)
    labelled = maps != IGNORE_INDEX
    if targets is not None:
        center = (out["center"].float() - targets.center)[labelled].square().mean()
        l1 = (out["offset"].float() - targets.offset).abs().sum(1)[targets.instance]  # (P,)
        offset = l1.mean() if len(l1) else l1.sum()
        loss = loss + CENTER_WEIGHT * center + OFFSET_WEIGHT * offset
    hits = ((logits.argmax(1) == maps) & labelled).flatten(1).sum(1)  # (B,)
    return loss, (hits / labelled.flatten(1).sum(1).clamp(min=1)).sum()
