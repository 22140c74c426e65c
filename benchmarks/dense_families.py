"""Detection backbones side by side on one detector and one schedule: lgvit's small GC ViT, Swin and MaxViT
configs and torchvision's ResNet-18 with FPN, each trained from scratch on the same Fashion scenes.

Every backbone gets the same torchvision detector (`lgvit.dense.detector_on`: anchors, heads, proposal
counts), the same FPN width, the same scenes in the same order, AdamW with lgvit's warm-up + cosine schedule,
gradient clipping at 1.0 and no EMA, then one COCO evaluation (torchmetrics, pycocotools) of the last
weights on the val scenes (built from the test garments only). ResNet-18 is torchvision's `resnet18` (no
weights), its first conv taking the scenes' one channel, its stages 1-3 (strides 4, 8, 16, as the small
lgvit configs have) under lgvit's `Backbone` FPN; its stage 4 is not used. Each backbone trains in its own
process with `--threads` threads, `--jobs` at a time; the table gives params and MACs of the backbone at
the scenes' largest size, training time, and the metrics.

    python benchmarks/dense_families.py                                   # 4 backbones, 2 processes of 1 thread
    python benchmarks/dense_families.py --backbones gcvit_fmnist resnet18 --train-scenes 200 --epochs 1  # smoke
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from lgvit.dense.backbone import Backbone
from lgvit.dense.detection import detector_on
from lgvit.tools.flops import count_macs
from lgvit.training.checkpoint import seed_all
from lgvit.training.config import TrainConfig
from lgvit.training.distributed import Dist
from lgvit.training.engine import StepOptions
from lgvit.training.optim import build_optimizer, warmup_cosine
from lgvit.training.tasks import DenseTask

BACKBONES = ("gcvit_fmnist", "swin_fmnist", "maxvit_fmnist", "resnet18")


class ResNetStages(nn.Module):
    """torchvision's ResNet-18 stem and stages 1-3 as a `Backbone` body: (B, C, H, W) -> 3 maps."""

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3])
        self.out_channels, self.strides = [64, 128, 256], [4, 8, 16]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, maps = self.stem(x), []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


def build(name: str, task: DenseTask, data, fpn: int) -> tuple[nn.Module, nn.Module]:
    """(the detector, its backbone body) for `name`; the scenes' classes include the background (11)."""
    if name == "resnet18":
        body = Backbone(ResNetStages(data.in_chans), fpn)
        detector = detector_on(task.cfg.detector, body, len(data.classes), data.img_size, data.mean, data.std)
    else:
        detector = task.model({"num_classes": len(data.classes), "in_chans": data.in_chans}, data)
    return detector, detector.backbone.body


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Trains and evaluates one backbone in this process."""
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        task="detect",
        detector=args.detector,
        model=name if name != "resnet18" else "gcvit_fmnist",  # ResNet-18: only the task's data is used
        scene_size=args.scene_size,
        train_scenes=args.train_scenes,
        val_scenes=args.val_scenes,
        fpn=args.fpn,
    )
    task = DenseTask(cfg)
    data = task.data()
    seed_all(args.seed)
    detector, body = build(name, task, data, args.fpn)
    macs = count_macs(body, (data.in_chans, args.scene_size, args.scene_size))
    collate = task.collate(data)
    order = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(
        data.train, args.batch_size, shuffle=True, drop_last=True, collate_fn=collate, generator=order
    )
    optimizer = build_optimizer(detector, args.lr, 0.05)
    steps = args.epochs * len(loader)
    scheduler = warmup_cosine(optimizer, steps, round(0.2 * len(loader)), 1e-5 / args.lr)
    start = time.perf_counter()
    losses = []
    for _ in range(args.epochs):
        detector.train()
        total = 0.0
        for images, targets in loader:
            loss = task.loss(detector, images, targets)[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(detector.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item()
        losses.append(total / len(loader))
    train_s = time.perf_counter() - start
    val = torch.utils.data.DataLoader(data.val, args.batch_size, collate_fn=collate)
    metrics = task.evaluate(detector, val, len(data.classes), StepOptions(torch.device("cpu")), Dist())
    params = sum(p.numel() for p in body.parameters())
    return dict(backbone=name, params=params, macs=macs, train_s=train_s, losses=losses, **metrics)


def table(rows: list[dict], args: argparse.Namespace) -> str:
    side = args.scene_size
    lines = [
        f"| backbone | params | MMACs at {side}x{side} | train min | last train loss | mAP@.5 | mAP@[.5:.95] "
        "| mAR@100 |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        lines.append(
            f"| {r['backbone']} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e6:.0f} | {r['train_s'] / 60:.1f} | "
            f"{r['losses'][-1]:.3f} | {r['map50']:.2f} | {r['map']:.2f} | {r['mar100']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    p.add_argument("--detector", default="fasterrcnn")
    p.add_argument("--scene-size", type=int, default=128)
    p.add_argument("--train-scenes", type=int, default=2000)
    p.add_argument("--val-scenes", type=int, default=500)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--fpn", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="per process")
    p.add_argument("--jobs", type=int, default=2, help="backbones trained at once, one process each")
    p.add_argument("--output", default="runs/dense_families", help="one JSON per backbone; finished ones are reused")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child process: train this backbone, write its JSON
    args = p.parse_args()
    out = Path(args.output)
    if args.one:
        result = run_one(args.one, args)
        tmp = out / f".{args.one}.json.tmp"
        tmp.write_text(json.dumps(result))
        tmp.replace(out / f"{args.one}.json")
        return
    out.mkdir(parents=True, exist_ok=True)
    todo = [b for b in args.backbones if not (out / f"{b}.json").is_file()]
    running: list[subprocess.Popen] = []
    for name in todo:
        while sum(r.poll() is None for r in running) >= args.jobs:
            time.sleep(1)
        running.append(subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--one", name]))
        print(f"training {name} ...", flush=True)
    failed = [r.args[-1] for r in running if r.wait() != 0]
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (their output is above)")
    rows = [json.loads((out / f"{b}.json").read_text()) for b in args.backbones if (out / f"{b}.json").is_file()]
    print(table(rows, args))


if __name__ == "__main__":
    main()
