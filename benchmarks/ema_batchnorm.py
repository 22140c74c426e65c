"""EMA of a batch-norm model: copy the running statistics, average them, or recompute them?

One `lgvit train` run keeps three EMAs of the same raw weights and evaluates each after every epoch:
  copy  - weights averaged, batch-norm statistics copied from the raw model (lgvit before Nov 2026);
  avg   - weights and float buffers averaged with the same decay (lgvit's `ModelEma` now, as timm's);
  recal - `copy` with its statistics recomputed on 61 training batches of 256 before evaluating.
The raw and `avg` columns are the run's own metrics.csv; all three go to OUT/ema_batchnorm.jsonl.

    python benchmarks/ema_batchnorm.py [--model maxvit_fmnist] [--epochs 16] [--decay 0.9995] [--data DIR]
        [--output OUT]
"""

import argparse
import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lgvit.training.config import TrainConfig
from lgvit.training.distributed import Dist
from lgvit.training.ema import ModelEma
from lgvit.training.engine import StepOptions, evaluate
from lgvit.training.loop import train, train_data


class CopyingEma(ModelEma):
    """The library's EMA (float buffers averaged) plus a shadow copy whose buffers are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, decay)
        self.copying = copy.deepcopy(self.module)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        super().update(model)
        d = self.current_decay()
        for ema_p, p in zip(self.copying.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p, 1 - d)
        for ema_b, b in zip(self.copying.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


def recalibrated(model: nn.Module, train: Dataset, batches: int = 61) -> nn.Module:
    """A copy of `model` whose batch-norm statistics are the plain average over `batches` batches."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    loader = DataLoader(train, 256, shuffle=True, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for _, (x, _) in zip(range(batches), loader, strict=False):
            model(x)
    return model.eval()


class ThreeEmas:
    """The run's EMA factory and evaluation: evaluating the EMA also evaluates `copy` and `recal` and logs all three."""

    def __init__(self, train: Dataset, log: TextIO) -> None:
        self.train, self.log, self.ema = train, log, None

    def make_ema(self, model: nn.Module, decay: float) -> CopyingEma:
        self.ema = CopyingEma(model, decay)
        return self.ema

    def evaluate(self, model: nn.Module, val: Iterable, n: int, opts: StepOptions, d: Dist) -> dict:
        result = evaluate(model, val, n, opts, d)
        if self.ema is not None and model is self.ema.module:
            row = {"updates": self.ema.updates, "avg": result["top1"]}
            row["copy"] = evaluate(self.ema.copying, val, n, opts, d)["top1"]
            row["recal"] = evaluate(recalibrated(self.ema.copying, self.train), val, n, opts, d)["top1"]
            self.log.write(json.dumps(row) + "\n")
            self.log.flush()
            print(row)
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="maxvit_fmnist")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--decay", type=float, default=0.9995)
    p.add_argument("--data", default=None, help="IDX folder or ImageFolder tree (default: Fashion-MNIST)")
    p.add_argument("--output", default="runs/ema_batchnorm")
    args = p.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(model=args.model, data=args.data, epochs=args.epochs, ema_decay=args.decay, output=str(out))
    data = train_data(cfg)  # the loop's own data, built here for the recalibration's training batches
    with (out / "ema_batchnorm.jsonl").open("a") as log:
        emas = ThreeEmas(data.train, log)
        train(cfg, ema=emas.make_ema, evaluate=emas.evaluate, data=data)


if __name__ == "__main__":
    main()
