"""CPU inference paths side by side, one run: eager lgvit, torch.compile, onnxruntime and (if installed) OpenVINO.

For each model, batch and dtype (fp32; bf16 where the CPU has it) every path runs on the same input, the
paths interleaved round by round so background load hits all alike; the median round is reported as
latency per batch and images/s, with each path's max abs difference from eager. The ONNX file is
`lgvit.export.to_onnx`'s, dynamic in batch and H x W and checked against eager; a model that does not export
at any size yet is exported at its fixed size (marked "fixed") and, if that fails too, its cells say
"export failed: <reason>". onnxruntime runs with all graph optimisations; bf16 rows leave it out (its CPU
provider has no bf16 kernels for these models).

    python benchmarks/deploy_speed.py                       # the four models, batch 1 and 8, fp32 and bf16
    python benchmarks/deploy_speed.py --models gcvit_fmnist --batches 1 --iters 3 --rounds 1   # a smoke run
    python benchmarks/deploy_speed.py --models gcvit_tiny --batches 8 --dtypes fp32 --compile max-autotune
"""

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import lgvit
from lgvit.export import to_onnx
from lgvit.tools.bench import compiled

MODELS = ("gcvit_tiny", "swin_tiny", "maxvit_tiny_224", "gcvit_fmnist")
TARGET = ("gcvit_tiny", 8, "fp32")  # the row whose best path is named, with its ratio to eager


def bf16_supported() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


def eager_path(model: torch.nn.Module, dtype: str) -> Callable:
    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), _autocast(dtype):
            return model(x).float().numpy()

    return run


def compiled_path(model: torch.nn.Module, dtype: str, x: torch.Tensor, how: str) -> tuple[Callable, float]:
    """`lgvit.tools.bench.compiled(model, how)` ('static': the fastest plain compile for one size), and the
    seconds its first call took."""
    run = eager_path(compiled(model, how), dtype)
    start = time.perf_counter()
    run(x)
    return run, time.perf_counter() - start


def export_onnx(model: torch.nn.Module, folder: Path) -> tuple[Path | None, str]:
    """The model's ONNX file (any size, else fixed size) and a note; (None, why) when it does not export."""
    path = folder / f"{model.spec.name}.onnx"
    try:
        to_onnx(model, path)
        return path, ""
    except (RuntimeError, ValueError) as e:
        any_size = str(e)
    try:
        to_onnx(model, path, dynamic=("batch",))
        return path, f"fixed size (any size: {any_size})"
    except (RuntimeError, ValueError) as e:
        return None, f"export failed: {e}"


def ort_path(path: Path, threads: int) -> Callable:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x.numpy()})[0]


def openvino_path(path: Path, dtype: str, threads: int, shape: tuple[int, ...]) -> Callable | None:
    """OpenVINO's CPU plugin on the ONNX file (f32 or bf16 inference precision), or None if not installed.

    The dynamic file is reshaped to the served input `shape` before compiling, with the LATENCY hint, as a
    deployment at one size would run it (measured 1.36x and 1.40x eager against 1.30x left dynamic)."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0]: list(shape)})
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if dtype == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = core.compile_model(model, "CPU", config)
    return lambda x: compiled(x.numpy())[0]


def time_rounds(paths: dict[str, Callable], x: torch.Tensor, iters: int, rounds: int) -> dict[str, float]:
    """Median seconds per call of each path, the paths interleaved within every round."""
    for run in paths.values():
        run(x)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            start = time.perf_counter()
            for _ in range(iters):
                run(x)
            samples[name].append((time.perf_counter() - start) / iters)
    return {name: statistics.median(s) for name, s in samples.items()}


def bench_model(name: str, batches, dtypes, args, folder: Path) -> list[dict]:
    torch.manual_seed(0)
    model = lgvit.create_model(name, drop_path_rate=0.0).eval()
    side = lgvit.get_spec(name).native_size
    onnx_file, note = export_onnx(model, folder)
    rows = []
    for dtype in dtypes:
        for batch in batches:
            x = torch.randn(batch, model.in_chans, side, side)
            paths = {"eager": eager_path(model, dtype)}
            paths["torch.compile"], compile_s = compiled_path(model, dtype, x, args.compile)
            failed = {}
            if onnx_file is None:
                failed = {"onnxruntime": note, "openvino": note}
            else:
                if dtype == "fp32":
                    paths["onnxruntime"] = ort_path(onnx_file, args.threads)
                ov = openvino_path(onnx_file, dtype, args.threads, tuple(x.shape))
                if ov is not None:
                    paths["openvino"] = ov
            seconds = time_rounds(paths, x, args.iters, args.rounds)
            ref = paths["eager"](x)
            for path, sec in seconds.items():
                diff = float(np.abs(paths[path](x) - ref).max())
                extra = f"compile {compile_s:.0f} s" if path == "torch.compile" else note if path != "eager" else ""
                rows.append(dict(model=name, batch=batch, dtype=dtype, path=path, seconds=sec, diff=diff, note=extra))
            rows += [
                dict(model=name, batch=batch, dtype=dtype, path=p, seconds=None, note=n) for p, n in failed.items()
            ]
    return rows


def table(rows: list[dict]) -> str:
    """A markdown table; long notes (why a model's export is fixed-size or failed) become numbered footnotes."""
    lines = ["| model | batch | dtype | path | latency ms | img/s | vs eager | max diff | note |", "|" + "---|" * 9]
    eager = {(r["model"], r["batch"], r["dtype"]): r["seconds"] for r in rows if r["path"] == "eager"}
    notes: list[str] = []
    for r in rows:
        if len(r["note"]) > 40:
            if r["note"] not in notes:
                notes.append(r["note"])
            r = {**r, "note": f"{r['note'].split(' (')[0].split(':')[0]} [{notes.index(r['note']) + 1}]"}
        if r["seconds"] is None:
            lines.append(f"| {r['model']} | {r['batch']} | {r['dtype']} | {r['path']} | | | | | {r['note']} |")
            continue
        ratio = eager[r["model"], r["batch"], r["dtype"]] / r["seconds"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['dtype']} | {r['path']} | {r['seconds'] * 1e3:.1f} | "
            f"{r['batch'] / r['seconds']:.1f} | {ratio:.2f}x | {r['diff']:.1e} | {r['note']} |"
        )
    return "\n".join(lines + [""] + [f"[{i}] {n}" for i, n in enumerate(notes, 1)])


def best_line(rows: list[dict]) -> str:
    model, batch, dtype = TARGET
    timed = [r for r in rows if (r["model"], r["batch"], r["dtype"]) == TARGET and r["seconds"] is not None]
    if not timed:
        return f"{model} at batch {batch} {dtype} was not run"
    eager = next(r["seconds"] for r in timed if r["path"] == "eager")
    best = min(timed, key=lambda r: r["seconds"])
    return f"best path for {model} at batch {batch} {dtype}: {best['path']}, {eager / best['seconds']:.2f}x eager"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--iters", type=int, default=10, help="calls per path per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--compile", choices=["static", "max-autotune"], default="static", help="the torch.compile path")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = [d for d in args.dtypes if d == "fp32" or bf16_supported()]
    try:
        import openvino

        runtimes = f"openvino {openvino.__version__}"
    except ImportError:
        runtimes = "openvino not installed"
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {runtimes}, {args.threads} threads")
    if "bf16" in args.dtypes and "bf16" not in dtypes:
        print("bf16 skipped: this CPU has no bf16 support")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            rows += bench_model(name, args.batches, dtypes, args, Path(folder))
    print(table(rows))
    print(best_line(rows))


if __name__ == "__main__":
    main()
