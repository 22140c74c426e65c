"""Reading checkpoint files without running code: torch's weights-only unpickler with a short allow-list.

Real release files pickle a few inert objects beside their tensors: timm's `train.py` (the GC ViT
trainer) and DeiT's `main.py` (LocalViT's) save their `argparse.Namespace` as `args`. `SAFE_GLOBALS`
lets exactly those through; any other class or function a file needs is refused by name, because
unpickling it could run code. Nothing here ever calls `torch.load(weights_only=False)`.
"""

import argparse
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .common import CheckpointError

SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)
"""Globals allowed beyond torch's own weights-only set (tensors, dtypes, OrderedDict, set, ...)."""

_FIX = (
    "If you trust the file, keep only its tensors where its classes are importable: "
    "torch.save(torch.load(PATH, weights_only=False)['model'], 'weights.pth') (or ['state_dict'])"
)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), at most 200 chars."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def check_file(path: str | Path) -> Path:
    """`path` as a Path when it is a non-empty file; otherwise an error saying what it is instead."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path} (looked for {path.absolute()}); check the path")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint: pass the .pth or .safetensors file in it")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): its download or save was cut short; fetch or save it again")
    return path


def file_kind(path: Path) -> str:
    """'zip' (torch.save), 'pickle' (legacy torch.save) or 'safetensors', from the first bytes; else raises."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if head.startswith(b"\x80"):
        return "pickle"
    raise CheckpointError(
        f"cannot read {path}: the file is truncated, corrupt or not a checkpoint: it starts with {head!r}, not as "
        "a torch.save or safetensors file does (a text or HTML page saved as a checkpoint?). Download or save it again."
    )


def _unsafe_globals(path: Path, error: pickle.UnpicklingError) -> list[str]:
    """The globals `path` needs beyond the allow-list (from its pickle, or from the unpickler's message)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError):  # a legacy (non-zip) file: the unpickler names the first one
        found = re.findall(r"GLOBAL (\S+) was not an allowed global", str(error))
    return sorted(found)


def load_torch(path: str | Path, mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU with `SAFE_GLOBALS` allowed, and clear errors.

    A file that needs another global raises CheckpointError naming it; an empty, truncated or non-torch
    file raises CheckpointError saying so. `mmap` maps the tensors instead of reading them (zip files only).
    """
    path = check_file(path)
    kind = file_kind(path)
    if kind == "safetensors":
        raise CheckpointError(f"{path} is a safetensors file: read it with lgvit.read_state_dict")
    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and kind == "zip")
        except pickle.UnpicklingError as e:
            unsafe = _unsafe_globals(path, e)
            if unsafe:
                allowed = ", ".join(f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS)
                raise CheckpointError(
                    f"refused to load {path}: it needs {', '.join(unsafe)}, and unpickling that could run code; "
                    f"lgvit loads only tensors, plain containers and {allowed}. The file is not necessarily "
                    f"corrupt. {_FIX.replace('PATH', repr(str(path)))}"
                ) from e
            raise _corrupt(path, e) from e
        except (RuntimeError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile, OSError) as e:
            raise _corrupt(path, e) from e


def _corrupt(path: Path, e: BaseException) -> CheckpointError:
    return CheckpointError(
        f"cannot read {path}: the file is truncated, corrupt or not a checkpoint "
        f"({type(e).__name__}: {first_line(e)}). Download or save it again."
    )
