"""The shard format: round trip, and every header error names the file and what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from golfrun.data.shards import (
    HEADER_BYTES,
    SHARD_MAGIC,
    ShardHeader,
    check_shard,
    read_header,
    read_tokens,
    write_shard,
)
from golfrun.errors import DataError


def test_round_trip(tmp_path: Path) -> None:
    tokens = np.array([1, 5, 65535, 0, 42], dtype=np.uint16)
    path = tmp_path / "fineweb_train_000000.bin"
    assert write_shard(path, tokens) == 1024 + 2 * 5
    assert read_header(path) == ShardHeader(magic=20240520, version=1, num_tokens=5)
    assert check_shard(path).num_tokens == 5
    got = read_tokens(path)
    assert got.dtype == np.dtype("<u2")
    assert got.tolist() == [1, 5, 65535, 0, 42]


def test_byte_layout_is_little_endian(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    write_shard(path, [1, 258])
    raw = path.read_bytes()
    assert raw[:12] == (20240520).to_bytes(4, "little") + (1).to_bytes(4, "little") + (2).to_bytes(4, "little")
    assert raw[12:HEADER_BYTES] == bytes(HEADER_BYTES - 12)
    assert raw[HEADER_BYTES:] == b"\x01\x00\x02\x01"


def test_empty_shard(tmp_path: Path) -> None:
    path = tmp_path / "e.bin"
    write_shard(path, [])
    assert read_tokens(path).size == 0


def test_writer_rejects_out_of_range_ids(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="65535"):
        write_shard(tmp_path / "x.bin", [70000])


def _shard(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, np.arange(n, dtype=np.uint16))
    return path


def _patch_int(path: Path, index: int, value: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[4 * index : 4 * index + 4] = value.to_bytes(4, "little", signed=True)
    path.write_bytes(bytes(raw))


def test_bad_magic_names_file_and_value(tmp_path: Path) -> None:
    path = _shard(tmp_path)
    _patch_int(path, 0, 12345)
    with pytest.raises(DataError) as err:
        check_shard(path)
    assert str(path) in str(err.value)
    assert f"expected magic {SHARD_MAGIC}, found 12345" in str(err.value)


def test_bad_version(tmp_path: Path) -> None:
    path = _shard(tmp_path)
    _patch_int(path, 1, 7)
    with pytest.raises(DataError, match=r"expected version 1, found 7") as err:
        read_tokens(path)
    assert str(path) in str(err.value)


def test_truncated_body(tmp_path: Path) -> None:
    path = _shard(tmp_path, n=4)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"truncated.*expected 1032 bytes.*found 1030") as err:
        check_shard(path)
    assert str(path) in str(err.value)


def test_oversize_body(tmp_path: Path) -> None:
    path = _shard(tmp_path, n=4)
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(DataError, match=r"oversize.*expected 1032 bytes.*found 1034") as err:
        check_shard(path)
    assert str(path) in str(err.value)


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"truncated header: expected 1024 bytes, found 100") as err:
        read_header(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.bin"
    with pytest.raises(DataError, match="cannot read shard") as err:
        check_shard(path)
    assert str(path) in str(err.value)
