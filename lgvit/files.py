"""Writing files atomically: the one helper behind checkpoints, weights, metrics and reports."""

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Calls `write(tmp)` on a temporary file beside `path`, then renames it over `path`.

    Readers see the old file or the new one, never half of one: a crash or a full disk while writing
    leaves `path` as it was and no temporary file behind. Missing parent folders are created. The file
    gets the permissions `open(path, "w")` would give (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`path.write_text(text)`, atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
