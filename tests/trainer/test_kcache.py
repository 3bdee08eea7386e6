"""benchmarks/kcache.py: the kernel session's compile cache packed into parts a device call can return,
and unpacked by the next session's first call."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "kcache.py"


@pytest.fixture
def kcache():
    spec = importlib.util.spec_from_file_location("kcache", HERE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_cache_packed_into_parts_unpacks_to_the_same_files(kcache, tmp_path: Path, monkeypatch) -> None:
    """Parts of PART_BYTES each (3 here: incompressible bytes), named so that they sort in order, join and
    unpack under another parent into the same folder name and bytes; with fewer parts allowed than it
    needs nothing is written (a device call returns at most 8 files)."""
    cache = tmp_path / "torchinductor_root"
    (cache / "triton" / "0" / "abc").mkdir(parents=True)
    (cache / "fxgraph" / "x").mkdir(parents=True)
    (cache / "triton" / "0" / "abc" / "k.cubin").write_bytes(os.urandom(5000))
    (cache / "fxgraph" / "x" / "entry").write_text("graph source\n" * 50)
    monkeypatch.setattr(kcache, "PART_BYTES", 2048)
    assert kcache.pack(cache, tmp_path / "out", max_parts=2) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["kcache-survey.json"]
    parts = kcache.pack(cache, tmp_path / "out", max_parts=8)
    assert [p.name for p in parts] == [f"kcache.tar.xz.{i:02d}" for i in range(len(parts))] and len(parts) == 3
    assert all(p.stat().st_size <= 2048 for p in parts)
    assert kcache.unpack(tmp_path / "out", tmp_path / "machine")
    assert _tree(tmp_path / "machine" / "torchinductor_root") == _tree(cache)
    assert not kcache.unpack(tmp_path / "nothing", tmp_path / "machine")  # no .kcache carried


def test_a_cache_too_large_is_surveyed_not_compressed(kcache, tmp_path: Path, monkeypatch, capsys) -> None:
    """Over MAX_RAW_BYTES nothing is compressed (xz on the 1.3 GB a session left took longer than the time
    kept for it); the survey that comes back says where the bytes are, by top-level folder and suffix."""
    cache = tmp_path / "torchinductor_root"
    (cache / "triton" / "0" / "abc").mkdir(parents=True)
    (cache / "fxgraph").mkdir()
    (cache / "triton" / "0" / "abc" / "k.cubin").write_bytes(b"c" * 3000)
    (cache / "triton" / "0" / "abc" / "k.ptx").write_bytes(b"p" * 1000)
    (cache / "fxgraph" / "entry").write_bytes(b"g" * 500)
    monkeypatch.setattr(kcache, "MAX_RAW_BYTES", 4000)
    monkeypatch.setattr(kcache.lzma, "open", lambda *a, **k: pytest.fail("compressed a cache over the limit"))
    assert kcache.pack(cache, tmp_path / "out") == []
    found = json.loads((tmp_path / "out" / "kcache-survey.json").read_text())
    assert found["files"] == 3 and found["bytes"] == 4500
    assert found["by_top"] == {"triton": 4000, "fxgraph": 500}
    assert list(found["by_suffix"].items()) == [(".cubin", 3000), (".ptx", 1000), ("(none)", 500)]
    assert "4,500 bytes, more than 4,000; not packed" in capsys.readouterr().out
