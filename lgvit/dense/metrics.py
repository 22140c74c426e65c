"""Dense metrics with widely used implementations: COCO mAP and mAR (torchmetrics' MeanAveragePrecision on
pycocotools) for detection; mIoU and pixel accuracy (torchmetrics' MulticlassJaccardIndex, MulticlassAccuracy)
for segmentation. Under DDP, torchmetrics sums every process's shard when the result is computed."""

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .segmentation import IGNORE_INDEX

DETECTION_METRICS = ("map", "map50", "map75", "mar100")  # COCO mAP@[.5:.95], mAP@.5, mAP@.75, mAR@100 (x 100)
SEGMENTATION_METRICS = ("loss", "miou", "pixel_acc")  # cross-entropy, mean IoU and pixel accuracy (x 100)

Autocast = Callable[[], contextlib.AbstractContextManager]


def _torchmetrics():
    try:
        import torchmetrics
    except ImportError as e:
        raise ImportError("dense metrics use torchmetrics: pip install 'lgvit[dense]'") from e
    return torchmetrics


@torch.no_grad()
def evaluate_detection(
    model: nn.Module, loader: Iterable, device: torch.device, autocast: Autocast = contextlib.nullcontext
) -> dict[str, float]:
    """COCO box mAP@[.5:.95], mAP@.5, mAP@.75 and mAR@100 (percent) of a detector on (ImageBatch, TargetBatch)."""
    metric = _torchmetrics().detection.MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
    model.eval()
    for images, targets in loader:
        with autocast():
            preds = model(list(images.to(device)))
        keep = ("boxes", "scores", "labels")
        metric.update([{k: p[k].float().cpu() if k != "labels" else p[k].cpu() for k in keep} for p in preds], targets)
    result = metric.compute()
    names = {"map": "map", "map50": "map_50", "map75": "map_75", "mar100": "mar_100"}
    return {k: 100 * max(float(result[v]), 0.0) for k, v in names.items()}  # COCO's -1 (no boxes at all) is 0


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    device: torch.device,
    autocast: Autocast = contextlib.nullcontext,
) -> dict[str, float]:
    """Cross-entropy, mIoU (the mean over `num_classes` classes, background included) and pixel accuracy
    (percent) of a segmenter on ((B, C, H, W) images, (B, H, W) maps), pixels labelled IGNORE_INDEX left out."""
    tm = _torchmetrics()
    iou = tm.classification.MulticlassJaccardIndex(num_classes, ignore_index=IGNORE_INDEX).to(device)
    acc = tm.classification.MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX).to(device)
    loss = tm.aggregation.MeanMetric().to(device)
    model.eval()
    for images, maps in loader:
        images, maps = images.to(device), maps.to(device)
        with autocast():
            logits = model(images).float()  # (B, classes, H, W)
        if logits.shape[1] != num_classes:
            raise ValueError(f"the segmenter outputs {logits.shape[1]} classes but the data has {num_classes}")
        labelled = (maps != IGNORE_INDEX).sum()
        loss.update(F.cross_entropy(logits, maps, ignore_index=IGNORE_INDEX), weight=labelled)
        pred = logits.argmax(1)  # (B, H, W)
        iou.update(pred, maps)
        acc.update(pred, maps)
    return {"loss": float(loss.compute()), "miou": 100 * float(iou.compute()), "pixel_acc": 100 * float(acc.compute())}
