"""`lgvit predict`: top-k labels with probabilities for image files of any size and mode.

An unreadable file (missing, empty, not an image, truncated) is reported on stderr and the others are
still predicted; the exit status is then 2.
"""

import argparse
import sys
from pathlib import Path

from ..training.distributed import DEVICE_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a checkpoint or pretrained weights")
    add_source_args(p)
    p.add_argument("--topk", type=int, default=3, help="how many classes to show, 1 to the number of classes")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--output",
        default=None,
        help="a detector's or segmenter's pictures: this folder (default: CHECKPOINT_DIR/predict)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def add_source_args(p: argparse.ArgumentParser) -> None:
    """The images and where the weights come from: the flags `lgvit predict` and `lgvit explain` share."""
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP, ...)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="best.pt or last.pt written by lgvit train")
    src.add_argument("--pretrained", help="pretrained tag, file or hub id (with --model)")
    p.add_argument("--model", help="registered model name, with --pretrained")
    p.add_argument(
        "--labels",
        help="text file with one class name a line, with --pretrained "
        "(default: the names the weights carry; ImageNet-1k's for an in1k tag)",
    )
    p.add_argument(
        "--weights",
        choices=("auto", "model", "ema"),
        default="auto",
        help="auto: of a --checkpoint whichever validated best, of --pretrained files the raw weights; "
        "model: the raw weights; ema: the EMA weights (state_dict_ema, model_ema, ema)",
    )


def check_source_args(args: argparse.Namespace) -> None:
    """The shared flags' own errors (and --topk's), found before any model is loaded."""
    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1, not {args.topk}")
    if args.checkpoint and args.labels:
        raise ValueError("--labels goes with --pretrained: a checkpoint carries its own class names")
    if args.pretrained and not args.model:
        raise ValueError("--pretrained needs --model NAME (see lgvit models)")
    if not any(Path(path).is_file() for path in args.images):
        raise FileNotFoundError(f"no such image file: {', '.join(args.images)}")


def load_source(args: argparse.Namespace):
    """The model and its preprocessing (`tools.inference.Loaded`) from --checkpoint or --model/--pretrained."""
    from ..data import read_labels
    from ..tools.inference import from_checkpoint, from_pretrained

    if args.checkpoint:
        return from_checkpoint(args.checkpoint, args.weights)
    labels = read_labels(args.labels) if args.labels else None
    return from_pretrained(args.model, args.pretrained, labels, ema=args.weights == "ema")


def run(args: argparse.Namespace) -> int:
    from ..tools.inference import predict_images
    from ..training.checkpoint import load_checkpoint
    from ..training.distributed import pick_device
    from ..training.tasks import is_dense

    check_source_args(args)
    device = pick_device(args.device)
    if args.checkpoint and is_dense(ckpt := load_checkpoint(args.checkpoint)):
        return _run_dense(args, ckpt, device)
    loaded = load_source(args)
    failed = 0
    for pred in predict_images(loaded, args.images, args.topk, device):
        if pred.error:
            failed += 1
            print(f"lgvit predict: error: {pred.error}", file=sys.stderr)
        else:
            print(f"{pred.path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in pred.top))
    if failed:
        rest = "none was predicted" if failed == len(args.images) else "the others were predicted"
        print(
            f"lgvit predict: error: {failed} of {len(args.images)} images could not be read (above); {rest}",
            file=sys.stderr,
        )
        return 2
    return 0


def _run_dense(args: argparse.Namespace, ckpt: dict, device) -> int:
    """A detector's or segmenter's findings for each image (printed) and the image beside its prediction (a PNG)."""
    from ..data import UnreadableImage, load_image, pil_mode
    from ..training.dense_report import write_prediction
    from ..training.tasks import load_dense

    task, model, data = load_dense(ckpt, args.checkpoint, args.weights, None, with_val=False)
    model, out, failed = model.to(device), Path(args.output or Path(args.checkpoint).parent / "predict"), 0
    for path in args.images:
        try:
            image = load_image(path, pil_mode(data.in_chans))
        except UnreadableImage as e:
            failed += 1
            print(f"lgvit predict: error: {e}", file=sys.stderr)
            continue
        found, picture = write_prediction(task, model, data, image, device, out / f"{Path(path).stem}_pred.png")
        print(f"{path}: {found} ({picture})")
    if failed:
        print(f"lgvit predict: error: {failed} of {len(args.images)} images could not be read (above)", file=sys.stderr)
        return 2
    return 0
