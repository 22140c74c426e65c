"""`lgvit convert`: any supported checkpoint (official, timm, lgvit, `lgvit train`) -> lgvit safetensors.

The output carries the model name, its config overrides, preprocessing and class names (see
`lgvit.save_weights`), so `create_model(name, pretrained=dst)` rebuilds the model `predict` would use.
"""

import argparse
import os
from pathlib import Path

from torch import nn

from ..convert.reading import check_file, file_kind, load_torch
from ..factory import create_model, is_path_like, load_weights, save_weights
from ..files import probe_writable
from ..registry import get_spec
from ..tools.inference import WEIGHTS, from_checkpoint
from ..training.checkpoint import is_training_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an official, timm or training checkpoint to lgvit safetensors")
    p.add_argument("src", help="checkpoint file, pretrained tag or hub id")
    p.add_argument("dst", help="output .safetensors path")
    p.add_argument("--model", default=None, help="the registered model of the checkpoint (a training one says it)")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the checkpoint's head if not 1000")
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="auto",
        help="auto: of an `lgvit train` checkpoint whichever validated best, of other files the raw weights; "
        "model: the raw weights; ema: the EMA weights (state_dict_ema, model_ema, ema)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_destination(args.dst)
    if args.model is not None:
        get_spec(args.model)  # an unknown name fails here, with the closest names
    if _is_training_checkpoint(args.src):
        model, label = _from_training(args)
    else:
        if args.model is None:
            raise ValueError(f"{args.src} is not an `lgvit train` checkpoint: say which model it is with --model NAME")
        overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
        model = create_model(args.model, **overrides)
        ema = args.weights == "ema"
        report = load_weights(model, args.src, ema=ema)
        resized = f", resized {len(report.resized)} bias tables" if report.resized else ""
        label = f"{report.source} ({report.format} layout, {'EMA' if ema else 'raw'} weights{resized})"
    save_weights(model, args.dst, source=label)
    print(f"{label} -> {args.dst}")
    return 0


def check_destination(dst: str) -> None:
    """Refuses, before any work, a destination that is a folder or whose folder cannot be written."""
    path = Path(dst).expanduser()
    if path.is_dir():
        raise ValueError(f"{dst} is a folder: give the output file's name, e.g. {path / 'model.safetensors'}")
    try:
        probe_writable(path.parent)
    except OSError as e:
        raise ValueError(f"cannot write {dst}: {e.filename} is not writable ({e.strerror}); pick another dst") from e


def _is_training_checkpoint(src: str) -> bool:
    """Whether `src` is an `lgvit train` checkpoint (read memory-mapped, so cheaply); a missing file raises."""
    if not os.path.isfile(src):
        if is_path_like(src):
            check_file(src)  # "no such file" (or a folder), before any work
        return False
    path = check_file(src)
    return file_kind(path) != "safetensors" and is_training_checkpoint(load_torch(path, mmap=True))


def _from_training(args: argparse.Namespace) -> tuple[nn.Module, str]:
    """The model of a training checkpoint as `predict --checkpoint` loads it, and a label saying which weights."""
    loaded = from_checkpoint(args.src, args.weights)
    name = loaded.model.spec.name
    if args.model is not None and get_spec(args.model).name != name:
        raise ValueError(f"{args.src} is a {name} checkpoint, not {args.model}: drop --model or pass --model {name}")
    if args.num_classes is not None:
        raise ValueError("--num-classes does not apply to an `lgvit train` checkpoint: it knows its classes")
    return loaded.model, loaded.label  # its pretrained_cfg holds the checkpoint's preprocessing and class names
