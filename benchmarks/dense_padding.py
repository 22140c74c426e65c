"""What torchvision's batch padding does to a backbone's maps: one image alone vs the same image zero-padded
(as `GeneralizedRCNNTransform` pads it next to a larger image), compared over the cells inside the image.

Random weights, perturbed so that zero-initialised tables and biases matter too; the numbers are relative L2
changes per stage. With `--checkpoint` (a detector `lgvit train --task detect` wrote) it measures what the
padding costs a trained detector instead: its COCO metrics on the val scenes evaluated one image at a time (no
padding) and in batches (each image padded to the batch's largest, as in training).

    python benchmarks/dense_padding.py [--size 67 93] [--padded 96 128]
    python benchmarks/dense_padding.py --checkpoint runs/gcvit_fmnist_fasterrcnn/best.pt [--batch-size 8]
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import lgvit
from lgvit import CheckpointError

MODELS = {
    "gcvit_fmnist": {},
    "swin_fmnist": {},
    "maxvit_fmnist": {},
    "pvt_tiny": dict(in_chans=1, embed_dims=(32, 64, 96, 128), num_heads=(1, 2, 2, 4), depths=(1, 1, 1, 1)),
}


def perturb_(model: nn.Module) -> None:
    """Adds N(0, 0.05) noise to every parameter (bias tables start at zero and would hide the layout)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def trained_cost(path: str, batch_size: int, threads: int) -> None:
    """mAP of a trained detector on its val scenes at batch 1 and at `batch_size`."""
    from lgvit.training.checkpoint import load_checkpoint
    from lgvit.training.distributed import Dist
    from lgvit.training.engine import StepOptions
    from lgvit.training.loop import val_loader
    from lgvit.training.tasks import load_dense

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(path)
    task, model, data = load_dense(ckpt, path, "auto", None)
    if task.name != "detect":
        raise SystemExit(f"{path} is a {task.name} checkpoint: --checkpoint takes a detector's")
    opts = StepOptions(torch.device("cpu"))
    for batch in (1, batch_size):
        loader = val_loader(data.val, batch, 0, Dist(), task.collate(data))
        metrics = task.evaluate(model, loader, len(data.classes), opts, Dist())
        shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
        print(
            f"batch {batch} ({len(data.val)} val scenes, {'padded to the batch' if batch > 1 else 'no padding'}): "
            f"{shown}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(67, 93), metavar=("H", "W"))
    parser.add_argument("--padded", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--checkpoint", help="a trained detector: its mAP alone vs in padded batches")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.checkpoint:
        try:
            trained_cost(args.checkpoint, args.batch_size, args.threads)
        except (OSError, ValueError, CheckpointError) as e:  # missing, unreadable, or not a detector lgvit reads
            raise SystemExit(f"--checkpoint {args.checkpoint}: {e}") from None
        return
    torch.manual_seed(0)
    (h, w), (ph, pw) = args.size, args.padded
    x = torch.rand(1, 1, h, w) - 0.5  # (1, 1, H, W), normalised: the padding zeros are the mean
    padded = F.pad(x, (0, pw - w, 0, ph - h))  # (1, 1, pH, pW)
    for name, overrides in MODELS.items():
        backbone = lgvit.create_backbone(name, fpn=None, **overrides).eval()
        perturb_(backbone.body.model)
        with torch.no_grad():
            alone, beside = backbone(x).values(), backbone(padded).values()
        changes = []
        for a, b, s in zip(alone, beside, backbone.strides, strict=True):
            a, b = a[..., : h // s, : w // s], b[..., : h // s, : w // s]  # the cells inside the image
            changes.append(f"stride {s}: {float((a - b).norm() / a.norm()):.3f}")
        print(f"{name:14s} " + ", ".join(changes))


if __name__ == "__main__":
    main()
