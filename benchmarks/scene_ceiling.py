"""What caps the Fashion scenes' semantic mIoU: how well a model names each garment, in its scene and alone.

For each ground-truth garment of N val scenes (each scene scored alone, as `lgvit eval` scores it):

- a detector (`--detector`, an `lgvit train --task detect` checkpoint) names it with the label of its
  highest-scoring box of IoU >= 0.5 with the garment's box; a segmenter (`--segmenter`) with the majority label
  of its predicted pixels over the garment's visible pixels;
- each is asked twice: in the scene, and on the same image with every pixel but the garment's visible ones made
  black, so that the difference is what the other garments cost (interference), and what is lost on the
  garment's own visible pixels is occlusion and the model;
- each model's labels, painted on the true (visible) masks, give the semantic mIoU a model that names garments
  as it does would reach with perfect outlines; next to it, the segmenter's own map's mIoU. The segmenter is
  scored on the detector's scenes (the same when both trained with the same `--seed` and `--scene-size`).

    python benchmarks/scene_ceiling.py --detector runs/det_scene84_125k_66k_ddp/best.pt \
        --segmenter runs/seg_scene84_125k_85k_ddp/best.pt --scenes 500 [--scene-size 192]
"""

import argparse
from collections import Counter

import torch
from torchmetrics.classification import MulticlassJaccardIndex
from torchvision.ops import box_iou

from lgvit.training.checkpoint import CheckpointError, load_checkpoint
from lgvit.training.tasks import load_dense


def load(flag: str, path: str, task: str, scenes: int, scene_size: int | None):
    """(model in eval mode, its val scenes, its normalisation (mean, std) as (C, 1, 1) tensors), from a `task`
    checkpoint on Fashion scenes; any other file ends the run with what is wrong with it."""
    try:
        ckpt = load_checkpoint(path)
        if (ckpt.get("train_config") or {}).get("task") != task:
            raise ValueError(f"not an `lgvit train --task {task}` checkpoint")
        if scene_size is not None:
            ckpt["train_config"]["scene_size"] = scene_size
        _, model, data = load_dense(ckpt, path, "auto", None, val_scenes=scenes)
    except (OSError, ValueError, CheckpointError) as e:  # missing, unreadable, another task, or folder data
        raise SystemExit(f"{flag} {path}: {e}") from None
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in (data.mean, data.std))
    return model, data, (mean, std)


def detector_labels(model, image: torch.Tensor, boxes: torch.Tensor) -> list[int]:
    """Per true box: the label of the detector's highest-scoring box of IoU >= 0.5 with it (0: none)."""
    found = model([image])[0]
    labels = [0] * len(boxes)
    if len(found["boxes"]):
        overlap = box_iou(boxes, found["boxes"])  # (garments, detections)
        for g in range(len(boxes)):
            near = (overlap[g] >= 0.5).nonzero().flatten()
            if len(near):
                labels[g] = int(found["labels"][near[found["scores"][near].argmax()]])
    return labels


def segmenter_labels(model, image: torch.Tensor, masks: torch.Tensor, norm) -> tuple[list[int], torch.Tensor]:
    """Per true mask, the majority label the segmenter gives its pixels; and its (H, W) predicted map."""
    mean, std = norm
    pred = model(((image - mean) / std)[None])[0].argmax(0)  # (H, W)
    return [int(pred[m].mode().values) for m in masks], pred


def paint(masks: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """(1, H, W) semantic map of the true (visible, so disjoint) masks in the given labels."""
    out = torch.zeros(masks.shape[1:], dtype=torch.long)
    for m, label in zip(masks, labels, strict=True):
        out[m] = label
    return out[None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detector", required=True, help="an `lgvit train --task detect` checkpoint")
    p.add_argument("--segmenter", help="an `lgvit train --task segment` checkpoint on the same scenes")
    p.add_argument("--scenes", type=int, default=500, help="val scenes (the first ones, as `lgvit eval` takes)")
    p.add_argument("--scene-size", type=int, help="score on scenes of this longest side (default: the training's)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.scenes < 1:
        raise SystemExit(f"--scenes must be at least 1, not {args.scenes}")
    det, data, _ = load("--detector", args.detector, "detect", args.scenes, args.scene_size)
    seg = load("--segmenter", args.segmenter, "segment", args.scenes, args.scene_size) if args.segmenter else None
    models = ("detector", "segmenter") if seg else ("detector",)
    right = Counter()  # (model, 'scene' | 'visible', alone?) -> garments named right; ('n', alone?) -> garments
    classes = len(data.classes)  # background included
    miou = {k: MulticlassJaccardIndex(classes, average=None) for k in ("detector", "segmenter", "segmenter's own map")}
    with torch.no_grad():
        for i in range(args.scenes):
            image, target = data.val[i]  # (C, H, W) in [0, 1]; boxes, labels, masks
            masks, truth, alone = target["masks"], target["labels"].tolist(), len(target["labels"]) == 1
            semantic = paint(masks, truth)
            named = {"detector": detector_labels(det, image, target["boxes"])}
            if seg:
                named["segmenter"], own = segmenter_labels(seg[0], image, masks, seg[2])
                miou["segmenter's own map"].update(own[None], semantic)
            right["n", alone] += len(truth)
            for model in models:
                miou[model].update(paint(masks, named[model]), semantic)
                right[model, "scene", alone] += sum(a == b for a, b in zip(named[model], truth, strict=True))
            for g, m in enumerate([] if alone else masks):  # the garment's visible pixels, the rest black
                only = image * m
                right["detector", "visible", alone] += (
                    detector_labels(det, only, target["boxes"][g : g + 1]) == truth[g : g + 1]
                )
                if seg:
                    right["segmenter", "visible", alone] += (
                        segmenter_labels(seg[0], only, m[None], seg[2])[0] == truth[g : g + 1]
                    )
    n_alone, n_among = max(right["n", True], 1), max(right["n", False], 1)  # no garments: 0% rather than 0 / 0
    alone, among = right["n", True], right["n", False]
    print(f"{args.scenes} val scenes: {alone} garments alone in their scene, {among} among others\n")
    print(
        "| model | named right: alone in its scene | among others, in the scene | among others, on its visible "
        "pixels only | mIoU of its labels on the true masks |"
    )
    print("|---|---|---|---|---|")
    for model in models:
        cells = [100 * right[model, "scene", True] / n_alone, 100 * right[model, "scene", False] / n_among]
        cells += [100 * right[model, "visible", False] / n_among, 100 * float(miou[model].compute().mean())]
        print(f"| {model} | " + " | ".join(f"{c:.1f}%" for c in cells[:3]) + f" | {cells[3]:.2f} |")
    for name in ("detector", "segmenter's own map") if seg else ("detector",):
        ious = miou[name].compute()
        per_class = ", ".join(f"{c} {100 * float(v):.1f}" for c, v in zip(data.classes, ious, strict=True))
        print(f"\n{name}: mIoU {100 * float(ious.mean()):.2f} ({per_class})")


if __name__ == "__main__":
    main()
