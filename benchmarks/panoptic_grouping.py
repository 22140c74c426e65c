"""Where a panoptic segmenter's grouping loses: its predicted centres and offsets swapped for the true ones.

`lgvit train --task segment --seg-head panoptic` groups each garment's pixels by the instance centre its
predicted offset points to, and the group's pixels vote on their class (`lgvit.dense.segmenter`). This scores,
on N val scenes (each alone, as `lgvit eval` scores them), the semantic argmax and the grouped map with the
predicted or the true centres (the peaks of the true heatmap) and the predicted or the true offsets
(`lgvit.dense.segmentation.instance_targets`), at the group's vote weight lgvit uses (0.5) and at 1 (the group's
vote alone). With both true, the groups are the garments' own: an upper bound for grouping by centres.

    python benchmarks/panoptic_grouping.py --segmenter runs/seg_cls5_pan20k_sig4/best.pt --first 500 --scenes 500 \
        [--scene-size 192]
"""

import argparse
import sys
from pathlib import Path

import torch
from torchmetrics.classification import MulticlassJaccardIndex

from lgvit.dense.segmentation import instance_targets
from lgvit.dense.segmenter import GROUP_WEIGHT, grouped_log_probs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_ceiling import load  # noqa: E402

WEIGHTS = (GROUP_WEIGHT, 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--segmenter", required=True, help="an `lgvit train --task segment --seg-head panoptic` checkpoint")
    p.add_argument("--first", type=int, default=0, help="the first val scene scored (0: those validated in training)")
    p.add_argument("--scenes", type=int, default=500, help="how many val scenes, from --first on")
    p.add_argument("--scene-size", type=int, help="score on scenes of this longest side (default: the training's)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.first < 0 or args.scenes < 1:
        p.error("--first must be >= 0 and --scenes >= 1")
    torch.set_num_threads(args.threads)
    model, data, (mean, std) = load("--segmenter", args.segmenter, "segment", args.first + args.scenes, args.scene_size)
    if model.instances is None:
        raise SystemExit(f"--segmenter {args.segmenter}: trained with --seg-head fpn; this needs --seg-head panoptic")
    classes = len(data.classes)
    scores: dict[str, MulticlassJaccardIndex] = {}

    def score(name: str, log_probs: torch.Tensor, truth: torch.Tensor) -> None:
        metric = scores.setdefault(name, MulticlassJaccardIndex(classes, average="macro"))
        metric.update(log_probs.argmax(1), truth[None])

    with torch.no_grad():
        for i in range(args.first, args.first + args.scenes):
            canvas, owner, placements = data.val.compose(i)
            lookup = torch.tensor([0] + [q.label + 1 for q in placements])
            truth = lookup[owner + 1]  # (H, W) semantic map
            image = ((canvas / 255).expand(len(mean), -1, -1) - mean) / std  # (C, H, W)
            out = model(image[None], parts=True)
            heat, offset = instance_targets(owner)  # (H, W), (2, H, W)
            score("semantic argmax", out["logits"], truth)
            for centres, c in (("predicted", out["center"]), ("true", heat[None])):
                for offsets, o in (("predicted", out["offset"]), ("true", offset[None])):
                    for w in WEIGHTS:
                        name = f"{centres} centres, {offsets} offsets, w = {w:g}"
                        score(name, grouped_log_probs(out["logits"], c, o, w), truth)
    print(f"{args.segmenter}: val scenes {args.first}-{args.first + args.scenes - 1}\n")
    print("| grouping | mIoU |\n|---|---|")
    for name, metric in scores.items():
        print(f"| {name} | {100 * metric.compute().item():.2f} |")


if __name__ == "__main__":
    main()
