"""Side-by-side speed and memory: lgvit vs timm's model of the same architecture, one run.

Every measurement runs in a fresh child process, so its peak memory (peak RSS during the steps
minus the RSS after building the model and the input; the peak record is reset after the build)
is its own. lgvit and timm alternate over the rounds
and the median round is reported, so background load hits both alike.
"""

import multiprocessing as mp
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ..factory import create_model
from ..registry import get_spec
from .flops import count_macs


@dataclass
class BenchResult:
    impl: str  # 'lgvit' or 'timm'
    model: str
    mode: str  # 'infer' or 'train'
    batch: int
    size: int
    images_per_s: float
    latency_ms: float  # per batch
    peak_mem_mb: float
    gmacs: float  # per image, forward
    gflops_per_s: float  # achieved (train step counted as 3x forward)
    peak_fraction: float  # of this machine's measured fp32 GEMM peak


def gemm_peak_gflops(n: int = 2048, seconds: float = 1.0) -> float:
    """Measured fp32 matmul throughput of this machine (GFLOP/s)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9


def _reset_peak_rss() -> None:
    """Starts the process's peak-RSS record afresh (Linux), so building the model does not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # elsewhere the peak includes the build: an upper bound


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _build(impl: str, name: str, size: int) -> torch.nn.Module:
    if impl == "lgvit":
        return create_model(name, drop_path_rate=0.0)
    import timm

    timm_name = get_spec(name).timm_name
    if timm_name is None:
        raise ValueError(f"{name} has no timm counterpart to compare with")
    kwargs = {"img_size": size} if size != get_spec(name).native_size else {}
    return timm.create_model(timm_name, drop_path_rate=0.0, **kwargs)


def _measure(impl: str, name: str, mode: str, batch: int, size: int, iters: int, threads: int) -> dict:
    """Runs in the child: (seconds per batch, peak memory MB)."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = _build(impl, name, size)
    x = torch.randn(batch, 3, size, size)
    if mode == "infer":
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(x)
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        y = torch.randint(0, 1000, (batch,))

        def step() -> None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    _reset_peak_rss()
    base = _rss_mb()
    step()  # warm-up (allocator, kernels, optimizer state)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": statistics.median(times), "peak_mb": peak - base}


def _child(args: tuple) -> dict:
    return _measure(*args)


def run_bench(
    name: str,
    batch: int = 8,
    size: int | None = None,
    compare: bool = False,
    modes: tuple[str, ...] = ("infer", "train"),
    iters: int = 5,
    rounds: int = 3,
) -> list[BenchResult]:
    """Benchmarks `name` (and timm's same model if `compare`); returns one result per (impl, mode)."""
    spec = get_spec(name)
    size = size or spec.native_size
    impls = ["lgvit", "timm"] if compare else ["lgvit"]
    ctx = mp.get_context("spawn")
    samples: dict[tuple[str, str], list[dict]] = {(m, i): [] for m in modes for i in impls}
    for mode in modes:
        for _ in range(rounds):
            for impl in impls:
                with ctx.Pool(1) as pool:
                    job = (impl, spec.name, mode, batch, size, iters, torch.get_num_threads())
                    samples[mode, impl].append(pool.apply(_child, (job,)))
    # only after the measurements: counting (FlopCounterMode imports inductor, which sets
    # TORCHINDUCTOR_CACHE_DIR for the children) and a second of large matmuls were both seen to
    # raise the children's peak RSS (by 20-80 MB on this project's VM)
    with torch.device("meta"):
        gmacs = count_macs(create_model(name), (3, size, size)) / 1e9
    peak = gemm_peak_gflops()
    results = []
    for (mode, impl), runs in samples.items():
        sec = statistics.median(s["seconds"] for s in runs)
        mem = statistics.median(s["peak_mb"] for s in runs)
        flops = gmacs * 2 * (3 if mode == "train" else 1) * batch / sec
        results.append(
            BenchResult(impl, spec.name, mode, batch, size, batch / sec, sec * 1e3, mem, gmacs, flops, flops / peak)
        )
    return results


def format_table(results: list[BenchResult]) -> str:
    """A markdown table with lgvit/timm ratios."""
    cols = ["model", "mode", "impl", "batch", "size", "img/s", "latency ms", "peak MB", "GMACs", "GFLOP/s"]
    cols += ["of GEMM peak", "vs timm"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    by_key = {(r.mode, r.impl): r for r in results}
    for r in results:
        ref = by_key.get((r.mode, "timm"))
        ratio = ""
        if r.impl == "lgvit" and ref:
            ratio = f"{r.images_per_s / ref.images_per_s:.2f}x speed, {r.peak_mem_mb / ref.peak_mem_mb:.2f}x mem"
        lines.append(
            f"| {r.model} | {r.mode} | {r.impl} | {r.batch} | {r.size} | {r.images_per_s:.1f} | {r.latency_ms:.0f} | "
            f"{r.peak_mem_mb:.0f} | {r.gmacs:.2f} | {r.gflops_per_s:.1f} | {r.peak_fraction:.0%} | {ratio} |"
        )
    return "\n".join(lines)


def results_as_dicts(results: list[BenchResult]) -> list[dict]:
    return [asdict(r) for r in results]
