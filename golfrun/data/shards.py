"""The challenge shard format (submission-format §4, trainer-facts §3.2).

A shard is a header of 256 little-endian int32 — magic 20240520, version 1, token count N, then
zeros — followed by N little-endian uint16 token ids. Its size is exactly 1024 + 2N bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from golfrun.errors import DataError
from golfrun.fileio import write_bytes_atomic

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_BYTES = 2
MAX_TOKENS = 2**31 - 1


@dataclass(frozen=True)
class ShardHeader:
    magic: int
    version: int
    num_tokens: int


def write_shard(path: Path | str, tokens: np.ndarray | Iterable[int]) -> int:
    """Write `tokens` as one shard at `path` (atomically: temp file + rename); returns bytes written."""
    path = Path(path)
    arr = np.asarray(tokens if isinstance(tokens, np.ndarray) else list(tokens))
    if arr.ndim != 1:
        raise DataError(f"{path}: tokens must be one-dimensional, got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 2**16):
        raise DataError(f"{path}: token ids must lie in [0, 65535], found range [{int(arr.min())}, {int(arr.max())}]")
    if arr.size > MAX_TOKENS:
        raise DataError(f"{path}: {arr.size} tokens exceed the format's limit of {MAX_TOKENS}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size
    body = arr.astype("<u2", copy=False)
    write_bytes_atomic(path, header.tobytes() + body.tobytes())
    return HEADER_BYTES + TOKEN_BYTES * int(arr.size)


def read_header(path: Path | str) -> ShardHeader:
    """Read the header as it is (no validation beyond its size); see `check_shard`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as exc:
        raise DataError(f"{path}: cannot read shard ({exc.strerror or exc})") from exc
    if len(raw) < HEADER_BYTES:
        raise DataError(f"{path}: truncated header: expected {HEADER_BYTES} bytes, found {len(raw)}")
    header = np.frombuffer(raw, dtype="<i4", count=3)
    return ShardHeader(magic=int(header[0]), version=int(header[1]), num_tokens=int(header[2]))


def check_shard(path: Path | str) -> ShardHeader:
    """Validate header size, magic, version, token count and the exact file size; return the header."""
    path = Path(path)
    header = read_header(path)
    if header.magic != SHARD_MAGIC:
        raise DataError(f"{path}: expected magic {SHARD_MAGIC}, found {header.magic}")
    if header.version != SHARD_VERSION:
        raise DataError(f"{path}: expected version {SHARD_VERSION}, found {header.version}")
    if header.num_tokens < 0:
        raise DataError(f"{path}: negative token count {header.num_tokens} in header")
    expected = HEADER_BYTES + TOKEN_BYTES * header.num_tokens
    actual = path.stat().st_size
    if actual != expected:
        what = "truncated" if actual < expected else "oversize"
        raise DataError(
            f"{path}: {what}: header says {header.num_tokens} tokens, so expected "
            f"{expected} bytes (1024 + 2*{header.num_tokens}), found {actual}"
        )
    return header


def read_tokens(path: Path | str) -> np.ndarray:
    """The shard's tokens as a read-only uint16 memmap (after `check_shard`)."""
    header = check_shard(path)
    if header.num_tokens == 0:
        return np.zeros(0, dtype="<u2")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(header.num_tokens,))
