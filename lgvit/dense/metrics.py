"""Dense metrics with widely used implementations: COCO mAP and mAR (torchmetrics' MeanAveragePrecision on
pycocotools) for detection; mIoU and pixel accuracy (torchmetrics' MulticlassJaccardIndex, MulticlassAccuracy)
for segmentation. Under DDP every process evaluates its shard: torchmetrics sums the segmentation metrics' states,
and the detection metric's per-image states are gathered with the caller's `gather` (lgvit's training passes
`gather_objects`: torchmetrics' own sync gathers them one list item at a time, which fails or hangs when the
shards hold different numbers of images)."""

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .segmentation import IGNORE_INDEX

DETECTION_METRICS = ("map", "map50", "map75", "mar100")  # COCO mAP@[.5:.95], mAP@.5, mAP@.75, mAR@100 (x 100)
MASK_METRICS = ("mask_map", "mask_map50", "mask_map75", "mask_mar100")  # the same of the masks (Mask R-CNN)
MASK_THRESHOLD = 0.5  # a Mask R-CNN pixel is the object's where its mask probability is at least this
SEGMENTATION_METRICS = ("loss", "miou", "pixel_acc")  # cross-entropy, mean IoU and pixel accuracy (x 100)

Autocast = Callable[[], contextlib.AbstractContextManager]
Gather = Callable[[object], list]  # an object of every process, in rank order (`training.distributed.gather_objects`)


def _torchmetrics():
    try:
        import torchmetrics
    except ImportError as e:
        raise ImportError("dense metrics use torchmetrics: pip install 'lgvit[dense]'") from e
    return torchmetrics


_COCO_NAMES = {"map": "map", "map50": "map_50", "map75": "map_75", "mar100": "mar_100"}  # ours -> torchmetrics'


def _prediction(p: dict[str, torch.Tensor], masks: bool) -> dict[str, torch.Tensor]:
    """A detector's output for torchmetrics: float boxes and scores, (N, H, W) bool masks from the (N, 1, H, W)
    probabilities."""
    out = {"boxes": p["boxes"].float().cpu(), "scores": p["scores"].float().cpu(), "labels": p["labels"].cpu()}
    if masks:
        out["masks"] = p["masks"][:, 0].cpu() >= MASK_THRESHOLD  # (N, H, W)
    return out


def _boxes(items: list[dict]) -> list[dict]:
    """Predictions or targets without their masks."""
    return [{k: d[k] for k in ("boxes", "scores", "labels") if k in d} for d in items]


def _one_class(items: list[dict]) -> list[dict]:
    """The same boxes, all labelled 1."""
    return [dict(d, labels=torch.ones_like(d["labels"])) for d in items]


def _gathered(metric, gather: Gather | None):
    """`metric` with every process's per-image lists (under DDP), computed."""
    if gather is not None:
        for name, mine in metric.metric_state.items():
            setattr(metric, name, [item for part in gather(mine) for item in part])
    return metric.compute()


def _class_ap50(result: dict) -> dict[int, float]:
    """{label: AP@.5 (percent)} from a per-class metric's result, for the labels with ground truth (COCO gives
    the others -1)."""
    found = zip(result["classes"].reshape(-1).tolist(), result["map_per_class"].reshape(-1).tolist(), strict=True)
    return {label: 100 * ap for label, ap in found if ap >= 0}


@torch.no_grad()
def evaluate_detection(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    autocast: Autocast = contextlib.nullcontext,
    masks: bool = False,
    gather: Gather | None = None,
) -> dict:
    """COCO box mAP@[.5:.95], mAP@.5, mAP@.75 and mAR@100 (percent) of a detector on (ImageBatch, TargetBatch);
    with `masks` (Mask R-CNN, targets with 'masks'), the same of the masks too (`MASK_METRICS`), each predicted
    mask cut at MASK_THRESHOLD as torchvision's COCO evaluation does. Under DDP, `gather` joins every process's
    per-image lists (boxes, RLE masks, scores, labels, ground truth) before the result is computed.

    Also 'map50_agnostic', the box mAP@.5 with every label made one (how well the boxes are found, whatever
    their class), and 'class_ap50', each class's box AP@.5 ({label: AP} for the labels in the ground truth, as
    mmdet's classwise table has it)."""
    tm = _torchmetrics().detection
    iou_type = ("bbox", "segm") if masks else "bbox"
    metric = tm.MeanAveragePrecision(iou_type=iou_type, backend="pycocotools", sync_on_compute=False)
    at50 = dict(iou_thresholds=[0.5], backend="pycocotools", sync_on_compute=False)
    agnostic = tm.MeanAveragePrecision(**at50)
    per_class = tm.MeanAveragePrecision(class_metrics=True, **at50)
    model.eval()
    for images, targets in loader:
        with autocast():
            preds = model(list(images.to(device)))
        if masks and any("masks" not in t for t in targets):
            raise ValueError("mask mAP needs targets with 'masks': build the data with masks (Mask R-CNN's)")
        preds = [_prediction(p, masks) for p in preds]
        metric.update(preds, targets)
        found, true = _boxes(preds), _boxes(targets)
        per_class.update(found, true)
        agnostic.update(_one_class(found), _one_class(true))
    result = _gathered(metric, gather)
    prefixes = (("", "bbox_"), ("mask_", "segm_")) if masks else (("", ""),)
    out = {  # COCO's -1 (no boxes at all) is 0
        f"{ours}{k}": 100 * max(float(result[f"{theirs}{v}"]), 0.0)
        for ours, theirs in prefixes
        for k, v in _COCO_NAMES.items()
    }
    out["map50_agnostic"] = 100 * max(float(_gathered(agnostic, gather)["map"]), 0.0)
    out["class_ap50"] = _class_ap50(_gathered(per_class, gather))
    return out


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    device: torch.device,
    autocast: Autocast = contextlib.nullcontext,
) -> dict[str, float]:
    """Cross-entropy, mIoU (the mean over `num_classes` classes, background included) and pixel accuracy
    (percent) of a segmenter on ((B, C, H, W) images, (B, H, W) maps), pixels labelled IGNORE_INDEX left out;
    also 'class_iou', each class's IoU (percent, a list in class order), as mmseg's per-class table has it."""
    tm = _torchmetrics()
    iou = tm.classification.MulticlassJaccardIndex(num_classes, ignore_index=IGNORE_INDEX).to(device)
    class_iou = tm.classification.MulticlassJaccardIndex(num_classes, average=None, ignore_index=IGNORE_INDEX)
    class_iou = class_iou.to(device)
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
        class_iou.update(pred, maps)
        acc.update(pred, maps)
    return {
        "loss": float(loss.compute()),
        "miou": 100 * float(iou.compute()),
        "pixel_acc": 100 * float(acc.compute()),
        "class_iou": [100 * float(v) for v in class_iou.compute()],
    }
