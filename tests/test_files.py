"""lgvit.files: atomic writes replace whole files, leave nothing behind on failure, and keep open()'s permissions."""

import os
from pathlib import Path

import pytest

from lgvit.files import atomic_write, atomic_write_text, remove_stale_temps


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


def test_atomic_write_fsyncs_the_file_before_and_the_folder_after_the_rename(tmp_path: Path, monkeypatch) -> None:
    path, events = tmp_path / "last.pt", []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    atomic_write_text(path, "weights")
    monkeypatch.setattr(os, "fsync", real_fsync)
    (fsync_tmp, tmp), replace, fsync_dir = events
    assert fsync_tmp == "fsync" and Path(tmp).name.startswith(".last.pt.") and Path(tmp).parent == tmp_path
    assert replace == ("replace", str(path)) and fsync_dir == ("fsync", str(tmp_path))
    assert path.read_text() == "weights"


def test_a_failing_torch_save_is_an_oserror_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    atomic_write_text(path, "old")

    def full_disk(tmp: str) -> None:  # what torch.save raises when the disk fills up
        Path(tmp).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4054")

    with pytest.raises(OSError, match=f"could not write {path}: the disk may be full"):
        atomic_write(path, full_disk)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["best.pt"]
    with pytest.raises(ValueError, match="not a write failure"):  # other errors pass through unchanged
        atomic_write(path, lambda tmp: (_ for _ in ()).throw(ValueError("not a write failure")))


def test_remove_stale_temps_removes_only_atomic_writes_leftovers(tmp_path: Path) -> None:
    stale = [tmp_path / f".last.pt.{'a' * 32}.tmp", tmp_path / f".metrics.csv.{'0123456789abcdef' * 2}.tmp"]
    kept = [tmp_path / "last.pt", tmp_path / ".last.pt.1234.tmp", tmp_path / f"last.pt.{'a' * 32}.tmp"]
    for p in stale + kept:
        p.write_text("x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert remove_stale_temps(tmp_path / "missing") == []
