"""`lgvit train`: the recipe in lgvit.training.config, one flag per field."""

import argparse
import shlex
import sys

from ..training.config import add_flags, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a model (default: GC ViT on Fashion-MNIST)",
        description="Train or fine-tune. Under `torchrun --nproc_per_node N -m lgvit train ...` it runs DDP.",
    )
    add_flags(p)
    p.add_argument(  # the dense tasks' name for --model
        "--backbone", dest="model", default=argparse.SUPPRESS, help="the same as --model (for --task detect/segment)"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.loop import train

    command = shlex.join(["lgvit", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else "lgvit train"
    result = train(config_from_args(args), command=command)
    return 0 if result.completed else 130
