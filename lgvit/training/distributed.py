"""Multi-process data parallelism under torchrun: gloo on CPU, nccl on GPU; rank 0 logs and saves."""

import ctypes
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


DEVICE_HELP = "auto, cpu, cuda or cuda:N (auto: the GPU if one is visible, else the CPU)"


def pick_device(name: str) -> torch.device:
    """The device a `--device` value names (auto, cpu, cuda, cuda:N); a ValueError says why it cannot be used."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ValueError(f"--device {name!r}: use auto, cpu, cuda or cuda:N (N a GPU number such as 0)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is visible; use --device cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(
            f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible (cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}); pick one of those or --device cpu"
        )
    return torch.device(name)


def cpu_threads(workers: int, local_world: int) -> int:
    """Compute threads per process that leave one core to each loader worker: on a busy or small machine,
    more threads than free cores stall every operation at its thread barrier."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // local_world - workers)


# glibc's mallopt parameters (malloc.h) and the size up to which freed memory is kept for reuse
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HOLD_BYTES = 1 << 30


def hold_freed_memory() -> bool:
    """Has glibc's malloc keep freed blocks of up to 1 GiB for reuse, instead of unmapping them (blocks above its
    mmap threshold) or trimming them off the heap. A CPU training step frees and re-allocates its activations,
    and by default the kernel then maps and zeroes them afresh: thousands of page faults a step (measured in
    docs/training.md, "The allocator"). The process then keeps up to 1 GiB more memory than it uses. Returns
    whether it applied: False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _HOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _HOLD_BYTES))


def init_distributed(device_name: str, threads: int | None = None, workers: int = 0) -> Dist:
    """Joins the process group torchrun set up (WORLD_SIZE > 1); on the CPU, sets the threads per process and
    keeps freed memory for reuse (`hold_freed_memory`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.type == "cpu":
        torch.set_num_threads(threads or cpu_threads(workers, local_world))
        hold_freed_memory()
    if world == 1:
        return Dist(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device)


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum of `t` over all processes (in place; `t` itself when single-process)."""
    if d.enabled:
        dist.all_reduce(t)
    return t


def gather_objects(obj: object, d: Dist) -> list:
    """`obj` of every rank, in rank order."""
    if not d.enabled:
        return [obj]
    out: list = [None] * d.world
    dist.all_gather_object(out, obj)
    return out
