"""`lgvit bench`: images/s, latency, peak memory, GMACs and GFLOP/s, side by side with timm and torch.compile."""

import argparse
import json

import torch

from ..files import atomic_write_text
from ..tools.bench import COMPILE_MODES, format_table, results_as_dicts, run_bench
from ..training.distributed import DEVICE_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed and memory, optionally beside timm's same model")
    p.add_argument("--model", required=True, help="registered model name or alias")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=None, help="input side (default: the model's native size)")
    p.add_argument("--compare", choices=["timm"], default=None, help="also run timm's model, interleaved")
    p.add_argument(
        "--compile",
        nargs="?",
        const="dynamic",
        choices=list(COMPILE_MODES),
        default=None,
        help="also run torch.compile(model, dynamic=True) ('static': dynamic=False; 'max-autotune': static, "
        "autotuned matmuls, frozen weights: fastest on CPU, slowest to compile), interleaved; "
        "its compile time is reported",
    )
    p.add_argument("--mode", choices=["infer", "train", "both"], default="both")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for flag in ("batch", "size", "iters", "rounds"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be at least 1, got {value}")
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    results = run_bench(
        args.model,
        args.batch,
        args.size,
        args.compare == "timm",
        modes,
        args.iters,
        args.rounds,
        args.device,
        args.compile,
    )
    peak = results[0].gflops_per_s / results[0].peak_fraction
    print(
        f"torch {torch.__version__} on {results[0].device}, {torch.get_num_threads()} threads, "
        f"fp32 GEMM peak {peak:.0f} GFLOP/s"
    )
    print(format_table(results))
    if args.json:
        atomic_write_text(args.json, json.dumps(results_as_dicts(results), indent=2))
    return 0
