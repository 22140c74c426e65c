"""`lgvit convert`: any supported checkpoint (official, timm, lgvit) -> lgvit safetensors."""

import argparse

from ..factory import create_model, load_weights, save_weights


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an official or timm checkpoint to lgvit safetensors")
    p.add_argument("src", help="checkpoint file, pretrained tag or hub id")
    p.add_argument("dst", help="output .safetensors path")
    p.add_argument("--model", required=True, help="the registered model the checkpoint belongs to")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the checkpoint's head if not 1000")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = create_model(args.model, **overrides)
    report = load_weights(model, args.src)
    save_weights(model, args.dst)
    resized = f", resized {len(report.resized)} bias tables" if report.resized else ""
    print(f"{report.source} ({report.format} layout{resized}) -> {args.dst}")
    return 0
