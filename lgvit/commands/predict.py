"""`lgvit predict`: top-k labels with probabilities for image files of any size and mode."""

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a checkpoint or pretrained weights")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP, ...)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="best.pt or last.pt written by lgvit train")
    src.add_argument("--pretrained", help="pretrained tag, file or hub id (with --model)")
    p.add_argument("--model", help="registered model name, with --pretrained")
    p.add_argument("--labels", help="text file with one class name a line, with --pretrained")
    p.add_argument("--weights", choices=("auto", "model", "ema"), default="auto")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tools.inference import from_checkpoint, from_pretrained, predict_images

    missing = [path for path in args.images if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"no such image file: {', '.join(missing)}")
    if args.checkpoint:
        loaded = from_checkpoint(args.checkpoint, args.weights)
    else:
        if not args.model:
            raise ValueError("--pretrained needs --model NAME (see lgvit models)")
        labels = Path(args.labels).read_text().split("\n") if args.labels else None
        loaded = from_pretrained(
            args.model, args.pretrained, [s.strip() for s in labels if s.strip()] if labels else None
        )
    for path, top in zip(args.images, predict_images(loaded, args.images, args.topk), strict=True):
        print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))
    return 0
