"""Semantic-segmentation batches (`SegmentationCollate`: images and label maps of different sizes padded to one,
the padding ignored) and the training loss of a segmenter (`segmentation_loss`)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255  # the label of pixels no loss or metric counts: batch padding (and, by custom, unlabeled pixels)


class SegmentationCollate:
    """(image, label map) items -> ((B, C, H, W) normalised images, (B, H, W) int64 maps) at the batch's largest
    height and width: images padded with zeros before normalising, maps with IGNORE_INDEX."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1)  # (C, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)  # (C, 1, 1)

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        h = max(x.shape[1] for x, _ in batch)
        w = max(x.shape[2] for x, _ in batch)
        images = torch.zeros(len(batch), batch[0][0].shape[0], h, w)  # (B, C, H, W)
        maps = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64)  # (B, H, W)
        for i, (x, y) in enumerate(batch):
            images[i, :, : x.shape[1], : x.shape[2]] = x
            maps[i, : y.shape[0], : y.shape[1]] = y
        return (images - self.mean) / self.std, maps


def segmentation_loss(model: nn.Module, images: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy over the labelled pixels, the summed per-image pixel accuracy) of a batch."""
    logits = model(images).float()  # (B, classes, H, W)
    loss = F.cross_entropy(logits, maps, ignore_index=IGNORE_INDEX)
    labelled = maps != IGNORE_INDEX
    hits = ((logits.argmax(1) == maps) & labelled).flatten(1).sum(1)  # (B,)
    return loss, (hits / labelled.flatten(1).sum(1).clamp(min=1)).sum()
