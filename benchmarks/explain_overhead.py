"""What the attention recording costs while it is off: gcvit_tiny forwards with two lgvit trees, in alternate processes.

    python benchmarks/explain_overhead.py --base /path/to/main --new /path/to/branch [--rounds 6] [--threads 1]

Each process builds gcvit_tiny (random weights), runs 2 warm-up forwards of a (batch, 3, 224, 224) batch under
no_grad, then times `--iters` forwards and prints the median. The ratio is new / base of the medians over rounds.
"""

import argparse
import os
import statistics
import subprocess
import sys

CHILD = """
import time, torch
torch.set_num_threads({threads})
from lgvit import create_model
m = create_model("gcvit_tiny").eval()
x = torch.randn({batch}, 3, 224, 224)
with torch.no_grad():
    for _ in range(2):
        m(x)
    times = []
    for _ in range({iters}):
        t = time.perf_counter(); m(x); times.append(time.perf_counter() - t)
print(sorted(times)[len(times) // 2])
"""


def one(tree: str, args: argparse.Namespace) -> float:
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": str(args.threads)}
    code = CHILD.format(threads=args.threads, batch=args.batch, iters=args.iters)
    return float(
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the lgvit tree without the change (its repository root)")
    p.add_argument("--new", required=True, help="the lgvit tree with the change")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    base, new = [], []
    for r in range(args.rounds):
        order = (("base", args.base, base), ("new", args.new, new))
        for _, tree, out in order if r % 2 == 0 else order[::-1]:  # alternate which goes first
            out.append(one(tree, args))
        print(f"round {r + 1}: base {base[-1]:.3f} s, new {new[-1]:.3f} s")
    b, n = statistics.median(base), statistics.median(new)
    print(f"median forward: base {b:.3f} s, new {n:.3f} s, ratio new/base {n / b:.3f}")


if __name__ == "__main__":
    main()
