"""lgvit.files: atomic writes replace whole files, leave nothing behind on failure, and keep open()'s permissions."""

import os
from pathlib import Path

import pytest

from lgvit.files import atomic_write, atomic_write_text


def test_atomic_write_replaces_or_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.md"
    atomic_write_text(path, "old")
    assert path.read_text() == "old"

    def fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old" and os.listdir(path.parent) == ["report.md"]


def test_atomic_write_has_the_permissions_of_open(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o640
