"""Training speed of `lgvit train`, side by side: this tree against another checkout (e.g. an older main), in
one run, alternating fresh processes; and where an epoch's time goes (`--profile`).

Both modes train on a Fashion-MNIST subset (the first `--images` training images and a sixth as many test
images, the full set's 6:1 ratio) written once as IDX files, so an epoch takes seconds, not minutes.

    git worktree add /tmp/lgvit-base c9c769f      # the tree to compare against
    python benchmarks/train_speed.py --baseline /tmp/lgvit-base [--images 15360] [--repeats 3] \
        [--extra "--augment trivial --erase-prob 0.25"]
    python benchmarks/train_speed.py --profile [--images 15360]

The comparison prints, per variant, the median over repeats of the training seconds per epoch (data,
forward, backward, optimizer and EMA: `epoch_seconds` in metrics.jsonl), of the validation seconds
(`val_seconds`: raw and EMA weights) and of their sum, as times of the baseline, and the last epoch's val
score over the repeats: top-1 (%), or with `--extra "--task segment ..."` mIoU and with `--task detect` mAP@.5
(with `--seeds`, repeat r uses `--seed r`). Run it on a quiet machine.

Dense training on Fashion scenes built from the subset's garments (docs/dense.md, "Batches of similar size"):

    python benchmarks/train_speed.py --baseline /tmp/lgvit-base --images 6000 --variant=--no-group-sizes \
        --extra "--task segment --backbone localvit_gcvit_fmnist --scene-size 128 --train-scenes 1024 \
        --val-scenes 64 --batch-size 8 --lr 1e-3 --fpn 64"

`--ddp-variant FLAGS` trains a variant with two DDP processes of one thread each (`torchrun --nproc-per-node 2`;
`--batch-size` is then per process), as docs/dense.md's detection target runs do.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCORES = ("val_top1", "val_miou", "val_map50")  # the score of a classifier, a segmenter, a detector


def write_subset(out: Path, images: int, test_images: int | None = None) -> Path:
    """The first `images` training and `test_images` (default `images // 6`) test images of Debian's
    Fashion-MNIST as IDX files."""
    from lgvit.data.build import resolve_data_dir
    from lgvit.data.idx import load_idx_split, write_idx

    out.mkdir(parents=True, exist_ok=True)
    tests = images // 6 if test_images is None else test_images
    for prefix, split, n in (("train", "train", images), ("t10k", "val", tests)):
        x, y = load_idx_split(resolve_data_dir(None), split)
        for kind, t in (("images", x[:n, 0]), ("labels", y[:n].to(torch.uint8))):
            write_idx(out / f"{prefix}-{kind}-idx{t.ndim}-ubyte.gz", t)
    (out / "classes.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_train(tree: Path, data: Path, out: Path, args: argparse.Namespace, extra: list[str], procs: int = 1) -> dict:
    """One `lgvit train` run from `tree` (`procs` > 1: that many DDP processes under torchrun, sharing
    `--threads` between them); its epochs' training and validation seconds."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    launch = [sys.executable, "-m"]
    if procs > 1:
        launch += ["torch.distributed.run", f"--nproc-per-node={procs}", f"--master-port={free_port()}", "-m"]
    cmd = [*launch, "lgvit", "train", "--data", str(data), "--output", str(out), "--epochs", str(args.epochs)]
    cmd += ["--threads", str(max(1, args.threads // procs)), *args.extra.split(), *extra]
    start = time.perf_counter()
    # cwd: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH
    subprocess.run(cmd, env=env, cwd=tree, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "train": sum(r["epoch_seconds"] for r in rows) / len(rows),
        "val": sum(r["val_seconds"] for r in rows) / len(rows),
        "wall": wall,
        "score": next(rows[-1][k] for k in SCORES if k in rows[-1]),
    }


def compare(args: argparse.Namespace, data: Path, work: Path) -> None:
    variants = [("baseline", Path(args.baseline), [], 1), ("this tree", ROOT, [], 1)]
    variants += [(f"this tree {flags}", ROOT, flags.split(), 1) for flags in args.variant]
    variants += [(f"this tree, 2 DDP processes, {flags}", ROOT, flags.split(), 2) for flags in args.ddp_variant]
    results: dict[str, list[dict]] = {name: [] for name, *_ in variants}
    for r in range(args.repeats):
        for k, (name, tree, extra, procs) in enumerate(variants):
            seed = ["--seed", str(r)] if args.seeds else []
            results[name].append(run_train(tree, data, work / f"run{r}_{k}", args, extra + seed, procs))
            print(f"repeat {r + 1}, {name}: {results[name][-1]}", flush=True)
    med = {name: {k: statistics.median(x[k] for x in rows) for k in rows[0]} for name, rows in results.items()}
    base = med["baseline"]
    print(
        f"\n{args.images} training images, {args.epochs} epoch(s), {args.threads} threads, extra flags "
        f"'{args.extra}', median of {args.repeats}\n"
    )
    print(
        "| variant | train s/epoch | val s/epoch | train + val | speed-up (train + val) | last val score, mean ± std |"
    )
    print("|---|---|---|---|---|---|")
    for name, m in med.items():
        total = m["train"] + m["val"]
        ratio = (base["train"] + base["val"]) / total
        score = [x["score"] for x in results[name]]
        spread = f"{statistics.mean(score):.2f} ± {statistics.stdev(score) if len(score) > 1 else 0:.2f}"
        print(f"| {name} | {m['train']:.1f} | {m['val']:.1f} | {total:.1f} | {ratio:.2f}x | {spread} |")


def profile(args: argparse.Namespace, data: Path) -> None:
    """Seconds per epoch of each part of a default `lgvit train` step, measured apart in this process."""
    from dataclasses import replace

    import torch.nn.functional as F

    from lgvit.factory import create_model
    from lgvit.training.config import TrainConfig
    from lgvit.training.distributed import Dist
    from lgvit.training.ema import ModelEma
    from lgvit.training.engine import StepOptions, evaluate
    from lgvit.training.loop import _train_loader, train_data, val_loader
    from lgvit.training.optim import build_optimizer, param_groups

    torch.set_num_threads(args.threads)
    cfg = TrainConfig(data=str(data))
    bundle, d = train_data(cfg), Dist()
    batches = len(bundle.train) // cfg.batch_size

    def timed(fn, n: int) -> float:  # seconds per call, after a warm-up call
        fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n

    def epoch_of_data(batch_augment: bool) -> float:
        start = time.perf_counter()
        for _ in _train_loader(bundle, replace(cfg, batch_augment=batch_augment), d, 0, 0, None):
            pass
        return time.perf_counter() - start

    model = create_model(cfg.model, num_classes=10, in_chans=1).train()
    x, y = next(iter(_train_loader(bundle, cfg, d, 0, 0, None)))
    loop_opt = torch.optim.AdamW(param_groups(model, 0.05, 1e-4), lr=1e-4, foreach=False)
    foreach_opt = torch.optim.AdamW(param_groups(model, 0.05, 1e-4), lr=1e-4, foreach=True)
    opt, ema = build_optimizer(model, 1e-4, 0.05), ModelEma(model, 0.998)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    n = args.steps
    rows = {
        "data, per-image torchvision v2 (--no-batch-augment)": epoch_of_data(False) / batches,
        "data, batched (default)": epoch_of_data(True) / batches,
        "forward": timed(lambda: F.cross_entropy(model(x), y, label_smoothing=0.1), n),
        "forward + backward": timed(lambda: F.cross_entropy(model(x), y, label_smoothing=0.1).backward(), n),
        "gradient clipping": timed(lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0), n),
        "AdamW step, per-tensor loop (torch's CPU default)": timed(loop_opt.step, n),
        "AdamW step, foreach (multi-tensor)": timed(foreach_opt.step, n),
        "AdamW step, fused (default)": timed(opt.step, n),
        "EMA update": timed(lambda: ema.update(model), n),
    }
    val = val_loader(bundle.val, 2 * cfg.batch_size, 0, d, batched=True)
    opts = StepOptions(torch.device("cpu"))
    seconds = timed(lambda: evaluate(model, val, 10, opts, d), 1)
    print(f"{cfg.model}, batch {cfg.batch_size}, {args.threads} threads; ms per batch, and s per 60,000-image epoch\n")
    print("| part | ms per batch | s per epoch |")
    print("|---|---|---|")
    for name, sec in rows.items():
        print(f"| {name} | {1000 * sec:.1f} | {sec * 60000 / cfg.batch_size:.1f} |")
    per_image = seconds / len(bundle.val)
    print(f"| one validation pass (raw or EMA weights), 10,000 images | | {per_image * 10000:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", help="another lgvit checkout to compare with (e.g. a worktree of an older main)")
    p.add_argument("--profile", action="store_true", help="time the parts of one training step instead")
    p.add_argument("--variant", action="append", default=[], help="flags of an extra variant of this tree")
    p.add_argument(
        "--ddp-variant",
        action="append",
        default=[],
        help="flags of an extra variant of this tree trained by 2 DDP processes (torchrun), sharing --threads",
    )
    p.add_argument("--images", type=int, default=15360, help="training images of the subset")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seeds", action="store_true", help="repeat r trains with --seed r (accuracy over seeds)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="--profile: steps timed per part")
    p.add_argument("--extra", default="", help="flags given to every `lgvit train` run")
    args = p.parse_args()
    if not args.profile and not args.baseline:
        p.error("give --baseline DIR (another lgvit checkout) or --profile")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_subset(Path(tmp) / "fashion-subset", args.images)
        profile(args, data) if args.profile else compare(args, data, Path(tmp))


if __name__ == "__main__":
    main()
