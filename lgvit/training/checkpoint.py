"""Training checkpoints: atomic writes, weights-only reads, and the random-number-generator states."""

import os
import random
from pathlib import Path

import numpy as np
import torch

from ..convert import CheckpointError
from ..convert.reading import load_torch
from ..files import atomic_write

FORMAT = "lgvit-train-1"


def save_atomic(payload: dict, path: Path) -> None:
    """torch.save, atomically: a crash never leaves half a file."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint written by `lgvit train`, read with weights_only=True and lgvit's allow-list.

    A file needing any other pickled global is refused by name (see `lgvit.convert.reading`).
    """
    ckpt = load_torch(path)
    if not is_training_checkpoint(ckpt):
        raise CheckpointError(
            f"{path} is not an `lgvit train` checkpoint; for plain weights use --pretrained {path} with --model NAME"
        )
    return ckpt


def is_training_checkpoint(obj: object) -> bool:
    """Whether a loaded checkpoint is one `lgvit train` wrote."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) generator states as tensors and plain containers."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": pos, "gauss": (has_gauss, gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    key = np_state["key"].numpy().astype(np.uint32)
    np.random.set_state((np_state["kind"], key, np_state["pos"], *np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
