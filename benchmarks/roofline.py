"""How much faster than eager any fp32 runtime can run a model on this CPU: the arithmetic floor.

The model's matrix products and convolutions are recorded op by op during one eager forward (attention on
torch's math path, so its two products are recorded too) and each is replayed alone, on random inputs of the
same shapes, with the same threads: that is what this CPU's BLAS/oneDNN takes for the arithmetic. A runtime
that computes the same fp32 products can skip everything else (layouts, norms, softmax, GELU) and still not
go below that floor, unless it multiplies faster than the CPU's best GEMM, whose throughput (a large square
product) is printed beside it. So `eager / floor` bounds the speed-up of every fp32 deployment path.
`--openvino` also runs the exported file in OpenVINO with per-layer profiling and splits its time by layer
type.

    python benchmarks/roofline.py                                  # gcvit_tiny, batch 8, 224 px, 2 threads
    python benchmarks/roofline.py --model swin_tiny --batch 1 --openvino
"""

import argparse
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import lgvit

aten = torch.ops.aten
KINDS = {
    aten.addmm.default: "matmul",
    aten.mm.default: "matmul",
    aten.bmm.default: "matmul",
    aten.convolution.default: "conv",
}

PACKETS = {op.overloadpacket: kind for op, kind in KINDS.items()}


def _spec(arg):
    """A hashable stand-in for one op argument: a tensor by its shape and strides (a transposed weight or a
    channels-last map takes another kernel), a list (stride, padding) as a tuple."""
    if isinstance(arg, torch.Tensor):
        return ("tensor", tuple(arg.shape), arg.stride())
    return tuple(arg) if isinstance(arg, list) else arg


class RecordCompute(TorchDispatchMode):
    """Counts each matmul / convolution call by its op and its arguments (tensors by shape and strides)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in KINDS:
            spec = tuple(_spec(a) for a in args)
            self.calls[func, spec] += 1
        return func(*args, **(kwargs or {}))


def seconds(fn: Callable[[], object], iters: int, rounds: int) -> float:
    """Median seconds per call over `rounds` rounds of `iters` calls, after one warm-up call."""
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        samples.append((time.perf_counter() - start) / iters)
    return statistics.median(samples)


def replay(func, spec: tuple, iters: int) -> float:
    """Seconds one recorded call takes alone, on random tensors of its shapes and strides."""
    args = [_tensor(a) if isinstance(a, tuple) and a[:1] == ("tensor",) else _list(a) for a in spec]
    return seconds(lambda: func(*args), iters, 3)


def _tensor(spec: tuple) -> torch.Tensor:
    _, shape, stride = spec
    return torch.empty_strided(shape, stride).normal_()


def _list(arg):
    return list(arg) if isinstance(arg, tuple) else arg


def peak_gemm(n: int = 2048) -> float:
    """This CPU's fp32 GEMM throughput in GFLOP/s on an n x n x n product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / seconds(lambda: torch.mm(a, b), 5, 3) / 1e9


def flops_by_kind(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:  # no_grad: inference_mode hides the composites' ops
        model(x)
    totals: dict[str, float] = defaultdict(float)
    for op, n in counter.get_flop_counts()["Global"].items():
        totals[PACKETS.get(op, "other")] += n  # counted by overload packet (aten.addmm), not aten.addmm.default
    return totals


def openvino_split(model: torch.nn.Module, x: torch.Tensor, threads: int) -> tuple[float, dict[str, float]]:
    """OpenVINO's seconds per call on the exported file (reshaped to x, LATENCY hint, as deploy_speed.py runs
    it) and its profiled milliseconds per call by layer type."""
    import openvino as ov

    from lgvit.export import to_onnx

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        to_onnx(model, path)
        core = ov.Core()
        net = core.read_model(str(path))
        net.reshape({net.inputs[0]: list(x.shape)})
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
        compiled = core.compile_model(net, "CPU", config)
    request = compiled.create_infer_request()
    data = x.numpy()
    sec = seconds(lambda: request.infer({0: data}), 3, 3)
    split: dict[str, float] = defaultdict(float)
    for info in request.profiling_info:
        split[info.node_type] += info.real_time.total_seconds() * 1e3
    return sec, dict(sorted(split.items(), key=lambda kv: -kv[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gcvit_tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target", type=float, default=1.5, help="the speed-up over eager to weigh")
    p.add_argument("--openvino", action="store_true", help="profile the exported file in OpenVINO too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = lgvit.create_model(args.model, drop_path_rate=0.0).eval()
    side = lgvit.get_spec(args.model).native_size
    x = torch.randn(args.batch, model.in_chans, side, side)

    with torch.inference_mode():
        eager = seconds(lambda: model(x), 3, 5)
    with torch.no_grad():  # not inference_mode: under it a dispatch mode sees linear/conv2d, not addmm/convolution
        recorder = RecordCompute()
        with sdpa_kernel(SDPBackend.MATH), recorder:
            model(x)
        alone: dict[str, float] = defaultdict(float)
        for (func, spec), n in recorder.calls.items():
            alone[KINDS[func]] += n * replay(func, spec, 3)
    flops = flops_by_kind(model, x)
    peak = peak_gemm()

    print(f"{args.model}, batch {args.batch}, {side} px, fp32, {args.threads} threads, torch {torch.__version__}")
    print(f"eager: {eager * 1e3:.0f} ms per batch, {args.batch / eager:.2f} img/s")
    print(f"this CPU's GEMM throughput (2048^3): {peak:.0f} GFLOP/s")
    print("| ops | GFLOP | alone, ms | GFLOP/s | share of eager |\n|---|---|---|---|---|")
    for kind in ("matmul", "conv"):
        ms = alone[kind] * 1e3
        print(
            f"| {kind} | {flops[kind] / 1e9:.1f} | {ms:.0f} | {flops[kind] / alone[kind] / 1e9:.0f} | "
            f"{alone[kind] / eager:.0%} |"
        )
    floor = alone["matmul"] + alone["conv"]
    at_peak = (flops["matmul"] + flops["conv"]) / peak / 1e9
    print(f"floor (the products alone): {floor * 1e3:.0f} ms -> at most {eager / floor:.2f}x eager")
    print(f"floor at the 2048^3 GEMM rate: {at_peak * 1e3:.0f} ms -> at most {eager / at_peak:.2f}x eager")
    budget = eager / args.target - floor
    print(
        f"{args.target}x eager is {eager / args.target * 1e3:.0f} ms per batch: it leaves {budget * 1e3:.0f} ms for "
        f"all the rest, which takes eager {(eager - floor) * 1e3:.0f} ms"
    )
    if args.openvino:
        sec, split = openvino_split(model, x, args.threads)
        total = sum(split.values())
        print(f"openvino: {sec * 1e3:.0f} ms per batch ({eager / sec:.2f}x eager); profiled layers {total:.0f} ms:")
        print(", ".join(f"{k} {v:.0f} ms ({v / total:.0%})" for k, v in list(split.items())[:8]))


if __name__ == "__main__":
    main()
