"""`lgvit export`: a model to ONNX or torch.export, dynamic in batch and H x W, checked against eager PyTorch."""

import argparse
import sys
from pathlib import Path

from ..export import DYNAMIC, FORMATS, MIN_OPSET, check_format, export, format_report, model_name

_SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export to ONNX or torch.export, checked at several sizes against PyTorch")
    p.add_argument("--model", help="registered model name (with --pretrained, or alone for random weights)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pretrained", help="pretrained tag, file or hub id (with --model)")
    src.add_argument("--checkpoint", help="best.pt or last.pt written by lgvit train (its preprocessing and classes)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or torch-export (.pt2)")
    p.add_argument("--dynamic", default="batch,hw", help="dynamic dimensions, comma-separated: batch, hw, or none")
    p.add_argument("--opset", type=int, default=18, help=f"ONNX opset, {MIN_OPSET} or newer (default 18)")
    p.add_argument("--output", help="output file (default: MODEL.onnx or MODEL.pt2 here)")
    p.add_argument("--size", type=int, default=None, help="example input side (default: the weights' input size)")
    p.add_argument("--no-check", action="store_true", help="skip running the file against eager PyTorch")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def _dynamic(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    if parts == ("none",):
        return ()
    unknown = [p for p in parts if p not in DYNAMIC]
    if unknown:
        raise ValueError(f"--dynamic {text!r}: {', '.join(unknown)} is not one of {', '.join(DYNAMIC)} (or none)")
    return parts


def _load(args: argparse.Namespace):
    """The model, and a line saying where its weights came from."""
    from ..factory import create_model
    from ..tools.inference import from_checkpoint, from_pretrained

    if args.checkpoint:
        if args.model:
            raise ValueError("--checkpoint names its own model: drop --model")
        loaded = from_checkpoint(args.checkpoint)
        return loaded.model, loaded.label
    if not args.model:
        raise ValueError("give --model NAME (with --pretrained SRC for weights), or --checkpoint best.pt")
    if args.pretrained:
        loaded = from_pretrained(args.model, args.pretrained, None)
        return loaded.model, loaded.label
    return create_model(args.model), f"{args.model} with RANDOM weights (no --pretrained or --checkpoint given)"


def run(args: argparse.Namespace) -> int:
    dynamic = _dynamic(args.dynamic)  # the flags' own errors, before any model is built
    check_format(args.format, args.opset)
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be at least 1, got {args.size}")
    model, label = _load(args)
    output = Path(args.output or f"{model_name(model)}{_SUFFIX[args.format]}")
    options = {"dynamic": dynamic, "check": not args.no_check, "size": args.size}
    if args.format == "onnx":
        options["opset"] = args.opset
    print(f"exporting {label}", file=sys.stderr)
    print(format_report(export(model, output, args.format, **options)))
    return 0
