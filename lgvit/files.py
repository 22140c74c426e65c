"""Writing files atomically: the one helper behind checkpoints, weights, metrics and reports."""

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

_TEMP = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")  # atomic_write's temporary files: .{name}.{uuid hex}.tmp
# what torch.save (its zip writer) and safetensors raise when a write fails, e.g. on a full disk
_WRITE_FAILURES = ("inline_container.cc", "PytorchStreamWriter", "unexpected pos", "IoError")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Calls `write(tmp)` on a temporary file beside `path`, then renames it over `path`.

    Readers see the old file or the new one, never half of one: a crash or a full disk while writing
    leaves `path` as it was and no temporary file behind (a kill may leave one: `remove_stale_temps`).
    The file and then its folder are fsync'ed around the rename, so a power loss cannot leave a renamed
    but empty file. A failed write raises OSError naming `path`. Missing parent folders are created.
    The file gets the permissions `open(path, "w")` would give (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(str(tmp))
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as e:
        message = f"could not write {path} ({e}): is the disk full or the folder read-only?"
        raise (OSError(e.errno, message) if e.errno else OSError(message)) from e
    except Exception as e:
        if not any(marker in str(e) for marker in _WRITE_FAILURES):
            raise
        raise OSError(f"could not write {path}: the disk may be full ({type(e).__name__}: {str(e)[:200]})") from e
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync(path: Path) -> None:
    """Flushes a file (or, on POSIX, a folder's entries) to the disk."""
    if path.is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`path.write_text(text)`, atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Removes the temporary files a killed `atomic_write` left in `folder` (only `.{name}.{32 hex}.tmp`).

    Call it when no other process is writing into `folder` (e.g. when a run starts). Returns what it removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TEMP.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def probe_writable(folder: str | os.PathLike) -> Path:
    """The nearest existing folder at or above `folder` (where it is, or will be, made), once a file could be
    created and removed there; raises OSError (e.g. PermissionError, NotADirectoryError) when not."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(20, "a file, not a folder", str(existing))
    probe = existing / f".lgvit-write-probe.{uuid.uuid4().hex}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(existing)) from None  # name the folder, not the probe
    os.remove(probe)
    return existing
