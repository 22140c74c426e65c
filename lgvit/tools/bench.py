"""Side-by-side speed and memory: lgvit eager, lgvit under torch.compile, and timm's model of the same
architecture, one run.

Every measurement runs in a fresh child process, so its peak memory (peak RSS during the steps
minus the RSS after building the model and the input; the peak record is reset after the build)
is its own. The implementations alternate over the rounds and the median round is reported, so
background load hits all alike. A compiled model's first call (compilation) is timed apart: `compile_s`.
"""

import multiprocessing as mp
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ..factory import create_model
from ..registry import get_spec
from ..training.distributed import pick_device
from .flops import count_macs


@dataclass
class BenchResult:
    impl: str  # one of IMPLS
    model: str
    device: str
    mode: str  # 'infer' or 'train'
    batch: int
    size: int
    images_per_s: float
    latency_ms: float  # per batch
    peak_mem_mb: float
    gmacs: float  # per image, forward
    gflops_per_s: float  # achieved (train step counted as 3x forward)
    peak_fraction: float  # of this machine's measured fp32 GEMM peak
    compile_s: float = 0.0  # torch.compile's first call less one step ('lgvit-compiled' only)


IMPLS = ("lgvit", "lgvit-compiled", "timm")  # eager lgvit; torch.compile(lgvit model, dynamic=...); timm eager


def gemm_peak_gflops(n: int = 2048, seconds: float = 1.0, device: str = "cpu") -> float:
    """Measured fp32 matmul throughput of `device` (GFLOP/s)."""
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    a @ b
    sync_device(dev)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    sync_device(dev)
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9


def sync_device(device: torch.device) -> None:
    """Waits for the GPU's queued work, so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    if impl != "timm":
        return create_model(name, drop_path_rate=0.0)
    import timm

    timm_name = get_spec(name).timm_name
    if timm_name is None:
        raise ValueError(f"{name} has no timm counterpart to compare with")
    kwargs = {"img_size": size} if size != get_spec(name).native_size else {}
    return timm.create_model(timm_name, drop_path_rate=0.0, **kwargs)


COMPILE_MODES = ("dynamic", "static", "max-autotune")


def compiled(net: torch.nn.Module, how: str) -> torch.nn.Module:
    """`torch.compile(net)` as `how` says: 'dynamic' (`dynamic=True`: one graph for every size), 'static'
    (`dynamic=False`) or 'max-autotune' (static; inductor autotunes each matmul between its own kernels and
    MKL's, and freezes the weights into inference graphs: the fastest on CPU, the slowest to compile)."""
    if how == "max-autotune":
        # process-wide, set before the first call compiles: `options={"freezing": True, "max_autotune": True}`
        # was seen not to autotune on CPU (0 autotuned matmuls against 10 with `mode`); inference graphs only
        torch._inductor.config.freezing = True
        return torch.compile(net, dynamic=False, mode="max-autotune")
    return torch.compile(net, dynamic=how == "dynamic")


def _measure(
    impl: str, name: str, mode: str, batch: int, size: int, iters: int, threads: int, device: str, how: str
) -> dict:
    """Runs in the child: seconds per batch, peak memory MB (RSS on the CPU, allocated memory on a GPU) and, for
    'lgvit-compiled' (`compiled(model, how)`), the seconds the first call took beyond a step."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    dev = torch.device(device)
    net = _build(impl, name, size).to(dev)
    x = torch.randn(batch, 3 if impl == "timm" else net.in_chans, size, size, device=dev)
    model = compiled(net, how) if impl == "lgvit-compiled" else net
    if mode == "infer":
        net.eval()

        def step() -> None:
            with torch.inference_mode():
                model(x)
    else:
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        y = torch.randint(0, net.num_classes, (batch,), device=dev)

        def step() -> None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    _reset_peak(dev)
    base = _memory_mb(dev)
    first = time.perf_counter()
    step()  # warm-up (allocator, kernels, optimizer state; compilation)
    sync_device(dev)
    first = time.perf_counter() - first
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        sync_device(dev)
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    compile_s = max(first - seconds, 0.0) if impl == "lgvit-compiled" else 0.0
    return {"seconds": seconds, "peak_mb": _peak_mb(dev) - base, "compile_s": compile_s}


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_peak_rss()


def _memory_mb(device: torch.device) -> float:
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mb()


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    device: str = "auto",
    compile: str | None = None,
) -> list[BenchResult]:
    """Benchmarks `name` (and timm's same model if `compare`; and torch.compile of it if `compile` is one of
    `COMPILE_MODES`) on `device` (a `--device` value) with the model's own channels and classes, at `size`
    (default: its native size); returns one result per (impl, mode)."""
    if compile not in (None, *COMPILE_MODES):
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, not {compile!r}")
    spec = get_spec(name)
    size = size or spec.native_size
    dev = str(pick_device(device))
    impls = ["lgvit"] + (["lgvit-compiled"] if compile else []) + (["timm"] if compare else [])
    ctx = mp.get_context("spawn")
    samples: dict[tuple[str, str], list[dict]] = {(m, i): [] for m in modes for i in impls}
    for mode in modes:
        for _ in range(rounds):
            for impl in impls:
                with ctx.Pool(1) as pool:
                    job = (
                        impl,
                        spec.name,
                        mode,
                        batch,
                        size,
                        iters,
                        torch.get_num_threads(),
                        dev,
                        compile,
                    )
                    samples[mode, impl].append(pool.apply(_child, (job,)))
    # only after the measurements: counting (FlopCounterMode imports inductor, which sets
    # TORCHINDUCTOR_CACHE_DIR for the children) and a second of large matmuls were both seen to
    # raise the children's peak RSS (by 20-80 MB on this project's VM)
    with torch.device("meta"):
        model = create_model(name)
        gmacs = count_macs(model, (model.in_chans, size, size)) / 1e9
    peak = gemm_peak_gflops(device=dev)
    results = []
    for (mode, impl), runs in samples.items():
        sec = statistics.median(s["seconds"] for s in runs)
        mem = statistics.median(s["peak_mb"] for s in runs)
        compile_s = statistics.median(s["compile_s"] for s in runs)
        flops = gmacs * 2 * (3 if mode == "train" else 1) * batch / sec
        results.append(
            BenchResult(
                impl,
                spec.name,
                dev,
                mode,
                batch,
                size,
                batch / sec,
                sec * 1e3,
                mem,
                gmacs,
                flops,
                flops / peak,
                compile_s,
            )
        )
    return results


def format_table(results: list[BenchResult]) -> str:
    """A markdown table with lgvit/timm ratios, and compiled/eager ratios with the compile time."""
    cols = ["model", "mode", "impl", "batch", "size", "img/s", "latency ms", "peak MB", "GMACs", "GFLOP/s"]
    cols += ["of GEMM peak", "vs timm", "vs eager"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    by_key = {(r.mode, r.impl): r for r in results}
    for r in results:
        ref = by_key.get((r.mode, "timm"))
        ratio, eager = "", by_key[(r.mode, "lgvit")]
        if r.impl != "timm" and ref:
            ratio = f"{r.images_per_s / ref.images_per_s:.2f}x speed, {r.peak_mem_mb / ref.peak_mem_mb:.2f}x mem"
        vs_eager = (
            f"{r.images_per_s / eager.images_per_s:.2f}x, compile {r.compile_s:.1f} s"
            if r.impl == "lgvit-compiled"
            else ""
        )
        gmacs = f"{r.gmacs:.2f}" if r.gmacs >= 0.1 else f"{r.gmacs:.4f}"  # the 28 px configs: a few MMACs
        lines.append(
            f"| {r.model} | {r.mode} | {r.impl} | {r.batch} | {r.size} | {r.images_per_s:.1f} | {r.latency_ms:.0f} | "
            f"{r.peak_mem_mb:.0f} | {gmacs} | {r.gflops_per_s:.1f} | {r.peak_fraction:.0%} | {ratio} | {vs_eager} |"
        )
    return "\n".join(lines)


def results_as_dicts(results: list[BenchResult]) -> list[dict]:
    return [asdict(r) for r in results]
