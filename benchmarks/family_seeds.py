"""The five small Fashion-MNIST configs side by side, 3 seeds each: at equal epochs, then at equal training time.

Does GC ViT beat Swin, and LocalViT beat DeiT, as their papers claim, at this scale? Every run is one fresh
`lgvit train` process with its defaults, on the first `--images` training images (test: all 10,000 test
images, validated once, after the last epoch), the runs interleaved seed by seed so that background load
hits every model alike.

- **Equal epochs:** every model trains `--epochs` epochs.
- **Equal time:** every model gets the training seconds `gcvit_fmnist` took for `--epochs` epochs (median
  over its seeds): its epochs are that budget over its own median epoch time, rounded (at least 1). The
  cosine schedule spans each run's own epochs.

Test top-1 is the raw weights' after the last epoch (no checkpoint picked on the test set); the EMA
weights' is kept in the JSON. Params and MMACs are at 28 px, 1 channel. images/s is training images per
second of training time (data, forward, backward, optimizer, EMA). Finished runs are kept in `--work` and
reused when the command is run again, so an interrupted benchmark resumes.

    python benchmarks/family_seeds.py --images 15360 --epochs 5 --seeds 3 --work runs/family_seeds
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lgvit
from lgvit.tools.flops import count_macs, count_params

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import write_subset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("gcvit_fmnist", "swin_fmnist", "maxvit_fmnist", "deit_fmnist", "localvit_fmnist")
ANCHOR = "gcvit_fmnist"  # whose training time is the equal-time budget


def train(model: str, seed: int, epochs: int, data: Path, out: Path, threads: int) -> dict:
    """One `lgvit train` run (reused if `out` holds a finished one): final top-1 and its timings."""
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    cmd = [sys.executable, "-m", "lgvit", "train", "--model", model, "--data", str(data), "--output", str(out)]
    cmd += ["--epochs", str(epochs), "--seed", str(seed), "--val-every", str(epochs), "--threads", str(threads)]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_s = sum(r["epoch_seconds"] for r in rows)
    result = {
        "model": model,
        "seed": seed,
        "epochs": epochs,
        "top1": rows[-1]["val_top1"],
        "ema_top1": rows[-1].get("ema_top1"),
        "train_seconds": train_s,
        "epoch_seconds": train_s / len(rows),
        "img_s": statistics.median(r["img_s"] for r in rows),
        "wall_seconds": wall,
    }
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, done)
    return result


def run_all(epochs: dict[str, int], seeds: int, data: Path, work: Path, threads: int) -> list[dict]:
    """Every model at its epochs, for each seed; seeds outer, so models alternate. A run of the same model,
    seed and epochs is the same run (training is deterministic): the equal-time pass reuses the anchor's."""
    results = []
    for seed in range(seeds):
        for model in MODELS:
            r = train(model, seed, epochs[model], data, work / f"{model}_e{epochs[model]}_s{seed}", threads)
            print(
                f"{model} seed {seed}, {r['epochs']} epochs: top-1 {r['top1']:.2f}%, "
                f"{r['train_seconds']:.0f} s training",
                flush=True,
            )
            results.append(r)
    return results


def table(results: list[dict], title: str) -> str:
    """Markdown: mean +- std of test top-1 per model, with epochs, params, MMACs, images/s, training time."""
    lines = [
        f"**{title}**",
        "",
        "| model | epochs | test top-1 (mean ± std) | params | MMACs | img/s | training s |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        rows = [r for r in results if r["model"] == model]
        top1 = [r["top1"] for r in rows]
        std = statistics.stdev(top1) if len(top1) > 1 else 0.0
        net = lgvit.create_model(model)
        params, macs = count_params(net) / 1e6, count_macs(net, (1, 28, 28)) / 1e6
        lines.append(
            f"| {model} | {rows[0]['epochs']} | {statistics.mean(top1):.2f} ± {std:.2f} | {params:.2f} M | "
            f"{macs:.1f} | {statistics.median(r['img_s'] for r in rows):.0f} | "
            f"{statistics.median(r['train_seconds'] for r in rows):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=15360, help="training images (the first N of the train split)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the equal-epoch runs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("runs/family_seeds"), help="run folders (reused on rerun)")
    args = p.parse_args()
    args.work = args.work.resolve()  # the runs' cwd is the repository
    if args.images < 1 or args.epochs < 1 or args.seeds < 1:
        p.error("--images, --epochs and --seeds must be at least 1")
    data = args.work / f"fashion-{args.images}"
    if not (data / "classes.txt").exists():
        write_subset(data, args.images, test_images=10_000)
    equal = run_all(dict.fromkeys(MODELS, args.epochs), args.seeds, data, args.work, args.threads)
    epoch_s = {m: statistics.median(r["epoch_seconds"] for r in equal if r["model"] == m) for m in MODELS}
    budget = statistics.median(r["train_seconds"] for r in equal if r["model"] == ANCHOR)
    timed = {m: max(1, round(budget / epoch_s[m])) for m in MODELS}
    same_time = run_all(timed, args.seeds, data, args.work, args.threads)
    report = [
        f"{args.images} training images, 10,000 test images, {args.seeds} seeds, {args.threads} threads",
        "",
        table(equal, f"Equal epochs ({args.epochs})"),
        "",
        table(same_time, f"Equal training time ({budget:.0f} s, {ANCHOR}'s {args.epochs} epochs)"),
    ]
    print("\n" + "\n".join(report))
    (args.work / "results.json").write_text(json.dumps({"equal_epochs": equal, "equal_time": same_time}, indent=1))
    (args.work / "results.md").write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
