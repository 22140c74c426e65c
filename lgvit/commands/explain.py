"""`lgvit explain`: PNGs of where a model looks in each image: attention per head, GC ViT's global-query
attention, attention rollout, Grad-CAM or Layer-CAM, blended on the image with the top-k predictions in the title.

Images and weights are read as `lgvit predict` reads them (the same errors); an unreadable image is
reported on stderr and the others are still explained, the exit status is then 2.
"""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..training.distributed import DEVICE_HELP
from .predict import add_source_args, check_source_args, load_source

if TYPE_CHECKING:
    from torch import nn

METHODS = ("attention", "global", "rollout", "gradcam", "layercam")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="draw attention maps, global-query maps, Grad-CAM or Layer-CAM on images")
    add_source_args(p)
    p.add_argument(
        "--method",
        choices=METHODS,
        default="attention",
        help="attention: every head of a stage's last block; global: GC ViT's global-query attention; "
        "rollout: attention rollout (DeiT, LocalViT, TNT); gradcam: Grad-CAM per stage; layercam: Layer-CAM "
        "per stage (each position weighted by its own positive gradient)",
    )
    p.add_argument(
        "--stage",
        type=int,
        default=None,
        help="stage (block for DeiT/TNT) to show (default: the last; Grad-CAM, Layer-CAM: every stage, or the "
        "level before the last for class-token models)",
    )
    p.add_argument(
        "--layer",
        default=None,
        help="Grad-CAM, Layer-CAM: explain this module's output instead of the stages (a name from "
        "model.named_modules(), e.g. stem.conv1; its output must be a map of the image)",
    )
    p.add_argument("--topk", type=int, default=3, help="how many predictions the title lists")
    p.add_argument("--out", default="explain", help="folder for the PNGs (default: ./explain)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    """The flags' own errors, found before any model is loaded (`lgvit predict`'s, then --out's)."""
    check_source_args(args)
    if args.layer is not None and args.method not in ("gradcam", "layercam"):
        raise ValueError(f"--layer is for --method gradcam or layercam, not {args.method}")
    if args.layer is not None and args.stage is not None:
        raise ValueError("give --stage or --layer, not both")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file, not a folder: give a folder for the PNGs")


def _check_method(model: "nn.Module", method: str, label: str, layer: str | None) -> None:
    """The method's needs and --layer's name, checked on the loaded model before any image is read."""
    from ..explain.cam import target_module

    if layer is not None:
        target_module(model, None, layer)  # raises for a name that is not a module of the model
    if method == "global" and not any(getattr(m, "global_query", False) for m in model.modules()):
        raise ValueError(f"--method global needs a GC ViT (gcvit_*): {label} has no global-query attention")
    if method == "rollout" and not hasattr(model, "blocks"):
        raise ValueError(
            f"--method rollout needs a class-token model with one stack of blocks (DeiT, LocalViT, TNT), "
            f"not {label}: use --method attention or gradcam"
        )


def _stems(paths: list[str]) -> list[str]:
    """Output names: each image's file stem, numbered where two images share one."""
    stems = [Path(p).stem for p in paths]
    return [s if stems.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(stems)]


def run(args: argparse.Namespace) -> int:
    from ..data import UnreadableImage, load_image, pil_mode
    from ..explain.figures import display_image, explain_image
    from ..training.distributed import pick_device

    _check_args(args)
    device = pick_device(args.device)
    loaded = load_source(args)
    model, transform, mode = loaded.model.to(device).eval(), loaded.transform(), pil_mode(loaded.in_chans)
    _check_method(model, args.method, loaded.label, args.layer)
    failed = 0
    for path, stem in zip(args.images, _stems(args.images), strict=True):
        try:
            x = transform(load_image(path, mode)).unsqueeze(0)  # (1, C, H, W)
        except UnreadableImage as e:
            failed += 1
            print(f"lgvit explain: error: {e}", file=sys.stderr)
            continue
        image = display_image(x[0], loaded.mean, loaded.std)
        written = explain_image(
            model,
            x.to(device),
            image,
            loaded.classes,
            args.method,
            args.stage,
            args.topk,
            Path(args.out) / stem,
            args.layer,
        )
        print(f"{path}: " + ", ".join(str(p) for p in written))
    if failed:
        print(
            f"lgvit explain: error: {failed} of {len(args.images)} images could not be read (above); "
            "the others were explained",
            file=sys.stderr,
        )
        return 2
    return 0
