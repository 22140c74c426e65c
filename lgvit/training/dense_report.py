"""What a dense run (`--task detect|segment`) leaves beside its checkpoints: curves.png (loss and metrics per
epoch), predictions.png (val images: ground truth left, prediction right) and summary.md linking both."""

import dataclasses
import json
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from ..dense.draw import SCORE_SHOWN, draw_boxes, draw_label_map, save_grid, to_rgb
from ..explain.maps import eval_mode
from ..files import atomic_write_text
from .report import plot_history
from .tasks import DenseData, DenseTask

SHOWN = 6  # val images in predictions.png

_NAMES = {  # what each metric is, for the summary
    "map": "COCO box mAP@[.5:.95]",
    "map50": "box mAP@.5",
    "map75": "box mAP@.75",
    "mar100": "box mAR@100",
    "mask_map": "COCO mask mAP@[.5:.95]",
    "mask_map50": "mask mAP@.5",
    "mask_map75": "mask mAP@.75",
    "mask_mar100": "mask mAR@100",
    "loss": "cross-entropy",
    "miou": "mIoU",
    "pixel_acc": "pixel accuracy",
}


def plot_dense_curves(history: list[dict], metrics: tuple[str, ...], path: Path) -> None:
    """Training (and val, when measured) loss, and the val (and EMA) metrics per epoch, side by side."""
    curves = [(0, key, key) for key in ("train_loss", "val_loss", "ema_loss")]
    curves += [(1, f"{p}_{k}", f"{p} {k}") for k in metrics if k != "loss" for p in ("val", "ema")]
    plot_history(history, curves, ("loss", "val metrics (%)"), path)


@torch.no_grad()
def predict_picture(
    task: DenseTask, model: nn.Module, data: DenseData, image: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, str]:
    """A (C, H, W) image in [0, 1] with the prediction of `model` drawn on it ((3, H, W) uint8), and one line
    saying what was found: the boxes scoring >= SCORE_SHOWN, or each class's share of the pixels."""
    with eval_mode(model):
        if task.name == "detect":
            pred = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
            keep = (pred["scores"] >= SCORE_SHOWN).nonzero().flatten().tolist()
            boxes = [[round(v) for v in pred["boxes"][i].tolist()] for i in keep]  # xyxy pixels
            found = [
                f"{data.classes[pred['labels'][i]]} {pred['scores'][i]:.2f} at {b}"
                for i, b in zip(keep, boxes, strict=True)
            ]
            return draw_boxes(image, pred, data.classes), ", ".join(found) or f"no box scoring >= {SCORE_SHOWN}"
        blank = torch.zeros(image.shape[1:], dtype=torch.int64)  # (H, W): the collate wants a map
        x, _ = task.collate(data)([(image, blank)])
        pred = model(x.to(device))[0].argmax(0).cpu()  # (H, W)
    k = len(data.classes)
    shares = torch.bincount(pred.flatten(), minlength=k).double() / pred.numel()  # (k,)
    order = [c for c in shares.argsort(descending=True).tolist() if shares[c] > 0]
    return draw_label_map(image, pred, k), ", ".join(f"{data.classes[c]} {100 * shares[c]:.1f}%" for c in order)


def prediction_pictures(
    task: DenseTask, model: nn.Module, data: DenseData, val: Dataset, device: torch.device, n: int = SHOWN
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ground truth, prediction) pictures of the first `n` images of `val`."""
    pairs = []
    for i in range(min(n, len(val))):
        image, target = val[i]
        if task.name == "detect":
            _, y = task.collate(data)([(image, target)])  # the target keys the detector trained on
            truth = draw_boxes(image, y[0], data.classes)
        else:
            truth = draw_label_map(image, target, len(data.classes))
        pairs.append((truth, predict_picture(task, model, data, image, device)[0]))
    return pairs


def write_predictions(task: DenseTask, model: nn.Module, data: DenseData, device: torch.device, path: Path) -> Path:
    """The PNG of `prediction_pictures` on `data.val`: one row per image, ground truth left, prediction right."""
    return save_grid(prediction_pictures(task, model, data, data.val, device), path)


def write_prediction(
    task: DenseTask, model: nn.Module, data: DenseData, image: Image.Image, device: torch.device, path: Path
) -> tuple[str, Path]:
    """`predict_picture` of an image file's pixels, saved beside the image at `path`; returns (what was found, path)."""
    pixels = pil_to_tensor(image).float() / 255  # (C, H, W) in [0, 1]
    picture, found = predict_picture(task, model, data, pixels, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    return found, save_grid([(to_rgb(pixels), picture)], path)


def _metric_lines(row: dict, metrics: tuple[str, ...], prefix: str) -> str:
    return ", ".join(f"{_NAMES[k]} {row[f'{prefix}_{k}']:.2f}" for k in metrics if f"{prefix}_{k}" in row)


def per_class(result: dict, classes: list[str]) -> tuple[str, str, dict[str, float]] | None:
    """(result key, metric name, {class: value}): ('class_iou', 'IoU', ...) of a segmenter's result,
    ('class_ap50', 'AP@.5', ...) of a detector's (the classes in the val set), or None."""
    if "class_iou" in result:  # a head wider than the classes: its extra outputs have no pixels
        return "class_iou", "IoU", dict(zip(classes, result["class_iou"][: len(classes)], strict=True))
    if "class_ap50" in result:  # {label: AP} for the labels in the val set
        return "class_ap50", "AP@.5", {classes[k]: v for k, v in sorted(result["class_ap50"].items())}
    return None


def class_table(result: dict, classes: list[str]) -> list[str]:
    """`per_class(result, classes)` as summary.md lines, with a detector's class-agnostic mAP@.5."""
    found = per_class(result, classes)
    if found is None:
        return []
    _, head, values = found
    note = f" (the boxes whatever their class: mAP@.5 {result['map50_agnostic']:.2f})" if head == "AP@.5" else ""
    rows = [f"| {name} | {v:.2f} |" for name, v in values.items()]
    return [f"{head} per class (best weights){note}:", "", f"| class | {head} (%) |", "|---|---|", *rows, ""]


def dense_report(
    task: DenseTask,
    data: DenseData,
    history: list[dict],
    best: dict,
    model: nn.Module,
    out: Path,
    command: str,
    device: torch.device,
) -> Path:
    """curves.png, predictions.png (the final weights on the first val images) and summary.md in `out`."""
    cfg, last = task.cfg, history[-1]
    plot_dense_curves(history, task.metrics, out / "curves.png")
    write_predictions(task, model, data, device, out / "predictions.png")
    heads = {"fpn": "Semantic-FPN segmenter", "panoptic": "Semantic-FPN segmenter with Panoptic-DeepLab's grouping"}
    what = f"{cfg.detector} detector" if task.name == "detect" else heads[cfg.seg_head]
    minutes = sum(r["epoch_seconds"] for r in history) / 60, sum(r.get("val_seconds", 0.0) for r in history) / 60
    ema = f"; EMA: {_metric_lines(last, task.metrics, 'ema')}" if f"ema_{task.score}" in last else ""
    lines = [
        f"# Training summary: {task.name}",
        "",
        f"- model: {what} on `{cfg.model}` (FPN width {cfg.fpn}); data: `{data.root}` ({data.kind}: "
        f"{len(data.train)} train / {len(data.val)} val images, {len(data.classes)} classes with the background)",
        f"- epochs: {last['epoch']} of {cfg.epochs}, training {minutes[0]:.1f} min + validation {minutes[1]:.1f} min, "
        f"{last['img_s']:.1f} train images/s on {device}",
        f"- final val: {_metric_lines(last, task.metrics, 'val')}{ema}",
        f"- best {_NAMES[task.score]}: **{best[task.score]:.2f}** ({best['weights']} weights, epoch {best['epoch']}) "
        "saved in `best.pt`; the last state is in `last.pt`",
        "",
        "![curves](curves.png)",
        "",
        "Ground truth (left) and prediction (right) on the first val images (final weights"
        + (", boxes scoring >= 0.5" if task.name == "detect" else "")
        + "):",
        "",
        "![predictions](predictions.png)",
        "",
        *class_table(best, data.classes),
        "## Command",
        "",
        "```",
        command,
        "```",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(dataclasses.asdict(cfg), indent=2),
        "```",
        "",
    ]
    path = out / "summary.md"
    atomic_write_text(path, "\n".join(lines))
    print(f"best val {task.score} {best[task.score]:.2f} ({best['weights']} weights, epoch {best['epoch']}); {path}")
    return path
