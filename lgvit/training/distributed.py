"""Multi-process data parallelism under torchrun: gloo on CPU, nccl on GPU; rank 0 logs and saves."""

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


def init_distributed(device_name: str, threads: int | None = None, workers: int = 0) -> Dist:
    """Joins the process group torchrun set up (WORLD_SIZE > 1) and sets the CPU threads per process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.type == "cpu":
        torch.set_num_threads(threads or cpu_threads(workers, local_world))
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
