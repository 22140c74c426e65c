"""`lgvit models`: registered models with params and GMACs beside the official figures."""

import argparse
import time

import torch

from ..factory import create_model
from ..registry import get_spec, list_models
from ..tools.bench import sync_device
from ..tools.flops import count_macs, count_params
from ..training.distributed import DEVICE_HELP, pick_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list models: params, GMACs (computed vs official), optional images/s")
    p.add_argument("pattern", nargs="?", default=None, help="shell pattern, e.g. 'gcvit_*'")
    p.add_argument("--speed", action="store_true", help="also measure images/s (batch 1, native size, fp32)")
    p.add_argument("--device", default="auto", help=f"where --speed runs: {DEVICE_HELP}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def _images_per_s(name: str, size: int, device: torch.device) -> float:
    """Batch-1 forward passes per second at `size`, with the model's own channels."""
    model = create_model(name).eval().to(device)
    x = torch.randn(1, model.in_chans, size, size, device=device)
    with torch.no_grad():  # not inference_mode: the layers cache masks, which must stay usable for training
        model(x)
        sync_device(device)
        start = time.perf_counter()
        model(x)
        sync_device(device)
    return 1 / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r}: run `lgvit models` for the list")
    device = pick_device(args.device) if args.speed else None
    print("| model | size | params M (official) | GMACs (official) |" + (f" img/s ({device}) |" if device else ""))
    print("|---|---|---|---|" + ("---|" if device else ""))
    for name in names:
        spec = get_spec(name)
        with torch.device("meta"):
            model = create_model(name)
        size = spec.native_size
        params, macs = count_params(model) / 1e6, count_macs(model, (model.in_chans, size, size)) / 1e9
        official = lambda v: f"{v:g}" if v is not None else "-"  # noqa: E731
        shown = f"{macs:.2f}" if macs >= 0.1 else f"{macs:.4f}"  # the 28 px configs have a few MMACs
        row = f"| {name} | {size} | {params:.2f} ({official(spec.params_m)}) | {shown} ({official(spec.gmacs)}) |"
        if device:
            row += f" {_images_per_s(name, size, device):.1f} |"
        print(row, flush=True)
    return 0
