"""`lgvit eval`: top-1/top-5, per-class accuracy and a confusion-matrix PNG for a checkpoint on a dataset.

Image files are prepared as the checkpoint's own data was (the same function `lgvit predict` uses). The
results are printed before eval.json and the PNG are written, so a folder that cannot be written loses nothing.
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import DataLoader

from ..training.distributed import DEVICE_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a training checkpoint on a val split")
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by lgvit train")
    p.add_argument("--data", default=None, help="IDX folder or ImageFolder tree (default: Fashion-MNIST)")
    p.add_argument("--weights", choices=("auto", "model", "ema"), default="auto", help="auto: the better at training")
    p.add_argument(
        "--batch-size", type=int, default=256, help="images per batch (a segmenter is evaluated one image at a time)"
    )
    p.add_argument(
        "--val-scenes", type=int, default=None, help="dense checkpoints on Fashion scenes: score this many val scenes"
    )
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--output", default=None, help="folder for eval.json and the PNG (default: the checkpoint's)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    if args.output and Path(args.output).exists() and not Path(args.output).is_dir():
        raise ValueError(f"--output {args.output} is a file, not a folder: give a folder for eval.json and the PNG")
    if args.val_scenes is not None and args.val_scenes < 1:
        raise ValueError(f"--val-scenes must be at least 1, not {args.val_scenes}")
    if args.batch_size < 1 or args.workers < 0:
        raise ValueError(
            f"--batch-size must be at least 1 and --workers at least 0, not {args.batch_size}, {args.workers}"
        )


def _save(out: Path, result: dict, report: dict, classes: list[str], grids: Callable[[Path], list[str]]) -> int:
    """Writes eval.json, the confusion PNG and `grids(out)` to `out`; a folder that cannot be written is an
    error line, 2."""
    from ..files import atomic_write_text
    from ..training.report import plot_confusion

    try:
        out.mkdir(parents=True, exist_ok=True)
        plot_confusion(result["confusion"], classes, out / "eval_confusion.png", f"{result['top1']:.2f}% top-1")
        written = grids(out)
        atomic_write_text(out / "eval.json", json.dumps(report | {"classes": classes}, indent=2))
    except OSError as e:
        reason = e.strerror or str(e)
        print(
            f"lgvit eval: error: cannot write eval.json and eval_confusion.png to {out} ({reason}): "
            "the results are above; pass --output DIR with a folder you can write",
            file=sys.stderr,
        )
        return 2
    print(f"confusion matrix: {out / 'eval_confusion.png'}; numbers: {out / 'eval.json'}")
    print(f"image grids: {', '.join(str(out / name) for name in written)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..data import build_data, pad_class_names
    from ..tools.inference import from_checkpoint
    from ..training.checkpoint import load_checkpoint
    from ..training.distributed import Dist, pick_device
    from ..training.engine import StepOptions, evaluate
    from ..training.report import image_grids, per_class_table
    from ..training.tasks import is_dense

    _check_args(args)
    device = pick_device(args.device)
    ckpt = load_checkpoint(args.checkpoint)
    if is_dense(ckpt):
        return _run_dense(args, ckpt, device)
    if args.val_scenes is not None:
        raise ValueError(f"--val-scenes applies to detectors and segmenters; {args.checkpoint} classifies: drop it")
    loaded = from_checkpoint(args.checkpoint, args.weights)
    norm = (loaded.mean, loaded.std)
    prep = {"crop_pct": loaded.crop_pct, "interpolation": loaded.interpolation}
    data = build_data(args.data, loaded.img_size, loaded.in_chans, train=False, norm=norm, **prep)
    if pad_class_names(data.classes, len(loaded.classes)) != loaded.classes:
        raise ValueError(
            f"{data.root} has classes {data.classes[:5]}... but the checkpoint was trained on "
            f"{loaded.classes[:5]}...: evaluate on data with the same classes"
        )
    loader = DataLoader(data.val, args.batch_size, num_workers=args.workers)
    model = loaded.model.to(device)
    result = evaluate(model, loader, model.num_classes, StepOptions(device), Dist())
    print(f"{loaded.label} on {len(data.val)} images of {data.root}")
    print(per_class_table(loaded.classes, result["per_class"]))
    print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}")
    report = {k: v for k, v in result.items() if k != "confusion"} | {"images": len(data.val), "data": data.root}

    def grids(out: Path) -> list[str]:
        return image_grids(model, data.val, loaded.classes, (data.mean, data.std), out, device, "eval_")

    return _save(Path(args.output or Path(args.checkpoint).parent), result, report, loaded.classes, grids)


def _run_dense(args: argparse.Namespace, ckpt: dict, device) -> int:
    """A detector's or segmenter's metrics on the val split (printed), then eval.json and eval_predictions.png."""
    from ..files import atomic_write_text
    from ..training.dense_report import per_class, write_predictions
    from ..training.distributed import Dist
    from ..training.engine import StepOptions
    from ..training.loop import val_loader
    from ..training.tasks import load_dense

    task, model, data = load_dense(ckpt, args.checkpoint, args.weights, args.data, val_scenes=args.val_scenes)
    model = model.to(device)
    loader = val_loader(data.val, task.eval_batch(args.batch_size), args.workers, Dist(), task.collate(data))
    result = task.evaluate(model, loader, len(data.classes), StepOptions(device), Dist())
    kind = task.cfg.detector if task.name == "detect" else f"{task.cfg.seg_head} segmenter"
    print(f"{args.checkpoint} ({task.name}, {kind}) on {len(data.val)} images of {data.root}")
    print("  ".join(f"{k} {v:.2f}" for k, v in result.items() if not isinstance(v, list | dict)))
    found = per_class(result, data.classes)
    if found is not None:  # eval.json keeps them by class name
        key, what, values = found
        result[key] = values
        print(f"{what} per class: " + ", ".join(f"{name} {v:.2f}" for name, v in values.items()))
    out = Path(args.output or Path(args.checkpoint).parent)
    report = {"task": task.name, **result, "images": len(data.val), "data": data.root, "classes": data.classes}
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(task, model, data, device, out / "eval_predictions.png")
        atomic_write_text(out / "eval.json", json.dumps(report, indent=2))
    except OSError as e:
        print(
            f"lgvit eval: error: cannot write eval.json and eval_predictions.png to {out} ({e.strerror or e}): "
            "the results are above; pass --output DIR with a folder you can write",
            file=sys.stderr,
        )
        return 2
    print(f"predictions: {out / 'eval_predictions.png'}; numbers: {out / 'eval.json'}")
    return 0
