"""golfrun/fileio.py copy_file_atomic: the copy is whole, keeps the source's times, and a failed
copy leaves neither a partial file nor a temp file behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from golfrun.fileio import copy_file_atomic, sha256_file


def test_copy_is_whole_keeps_times_and_replaces(tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3 << 20))
    os.utime(src, (1_700_000_000, 1_700_000_000))
    dest = tmp_path / "out" / "b.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old")
    copy_file_atomic(src, dest)
    assert sha256_file(dest) == sha256_file(src)
    assert int(dest.stat().st_mtime) == 1_700_000_000
    assert sorted(p.name for p in dest.parent.iterdir()) == ["b.bin"]


def test_a_failed_copy_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "b.bin"
    dest.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        copy_file_atomic(tmp_path / "missing.bin", dest)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin"]
