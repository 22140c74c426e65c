"""`lgvit eval`: top-1/top-5, per-class accuracy and a confusion-matrix PNG for a checkpoint on a dataset."""

import argparse
import json
from pathlib import Path

from torch.utils.data import DataLoader


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a training checkpoint on a val split")
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by lgvit train")
    p.add_argument("--data", default=None, help="IDX folder or ImageFolder tree (default: Fashion-MNIST)")
    p.add_argument("--weights", choices=("auto", "model", "ema"), default="auto", help="auto: the better at training")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--output", default=None, help="folder for eval.json and the PNG (default: the checkpoint's)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import build_data
    from ..files import atomic_write_text
    from ..tools.inference import from_checkpoint
    from ..training.distributed import Dist
    from ..training.engine import StepOptions, evaluate
    from ..training.report import per_class_table, plot_confusion

    loaded = from_checkpoint(args.checkpoint, args.weights)
    data = build_data(args.data, loaded.img_size, loaded.in_chans, train=False, norm=(loaded.mean, loaded.std))
    if data.classes != loaded.classes:
        raise ValueError(
            f"{data.root} has classes {data.classes[:5]}... but the checkpoint was trained on "
            f"{loaded.classes[:5]}...: evaluate on data with the same classes"
        )
    loader = DataLoader(data.val, args.batch_size, num_workers=args.workers)
    result = evaluate(loaded.model, loader, len(loaded.classes), StepOptions(torch.device("cpu")), Dist())
    out = Path(args.output or Path(args.checkpoint).parent)
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(result["confusion"], loaded.classes, out / "eval_confusion.png", f"{result['top1']:.2f}% top-1")
    report = {k: v for k, v in result.items() if k != "confusion"} | {"images": len(data.val), "data": data.root}
    atomic_write_text(out / "eval.json", json.dumps(report | {"classes": loaded.classes}, indent=2))
    print(f"{loaded.label} on {len(data.val)} images of {data.root}")
    print(per_class_table(loaded.classes, result["per_class"]))
    print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}")
    print(f"confusion matrix: {out / 'eval_confusion.png'}; numbers: {out / 'eval.json'}")
    return 0
