"""Training-step time and page faults with glibc's default malloc against `hold_freed_memory()` (what
`lgvit train` calls on the CPU), in fresh processes that alternate, since the setting cannot be undone.

    python benchmarks/allocator.py [--model localvit_gcvit_fmnist] [--rounds 4] [--steps 60]

Each step is a forward, a label-smoothed cross-entropy, a backward, gradient clipping and a foreach AdamW step
on a batch of 128 random 28 px images (2 threads). It prints each process's ms per step and page faults per
step, then the medians.
"""

import argparse
import resource
import statistics
import subprocess
import sys
import time


def child(model_name: str, hold: bool, steps: int) -> None:
    """One process: times `steps` training steps after 5 warm-up steps; prints 'ms faults'."""
    import torch

    from lgvit import create_model
    from lgvit.training.distributed import hold_freed_memory

    if hold and not hold_freed_memory():
        sys.exit("hold_freed_memory() did not apply: this C library is not glibc")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = create_model(model_name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))

    def step() -> None:
        torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(steps):
        step()
    ms = (time.perf_counter() - start) / steps * 1e3
    print(ms, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="localvit_gcvit_fmnist")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--child", choices=("default", "hold"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.model, args.child == "hold", args.steps)
    times: dict[str, list[float]] = {"default": [], "hold": []}
    for r in range(args.rounds):
        for mode in times:
            cmd = [sys.executable, __file__, "--child", mode, "--model", args.model, "--steps", str(args.steps)]
            ms, faults = map(float, subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split())
            times[mode].append(ms)
            print(f"round {r + 1}, {mode}: {ms:.1f} ms/step, {faults:.0f} page faults/step", flush=True)
    base, held = statistics.median(times["default"]), statistics.median(times["hold"])
    print(f"\n{args.model}: median {base:.1f} ms/step by default, {held:.1f} held ({base / held:.2f}x)")


if __name__ == "__main__":
    main()
