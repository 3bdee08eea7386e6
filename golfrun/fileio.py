"""File primitives every room uses: content hashes, atomic writes, timestamps.

A leaf module (stdlib only). An atomic write is temp file + fsync + rename + fsync of the folder,
so a reader sees the old file or the new one, never half of one; an interrupted write leaves only
a `.<name>.*.tmp` file beside it, which `remove_stale_temps` clears.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def now_iso() -> str:
    """UTC wall-clock time, to the second, as ISO 8601 with a trailing Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def iso_at(epoch: float) -> str:
    """`now_iso`'s form of an epoch time (a file's mtime)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def epoch_of(iso: str) -> float | None:
    """Seconds since the epoch of a `now_iso` timestamp (or any ISO 8601 with a zone); None if it is not one."""
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def sha256_file(path: Path | str, chunk: int = _CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` atomically (see the module docstring)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise
    _fsync_dir(path.parent)


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error, naming the file being written (a failed write() names no file)."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def os_error_text(exc: OSError) -> str:
    """One line for a disk error: the path and the system's reason (`…/summary.json: No space left on device`)."""
    where = exc.filename if exc.filename is not None else "(no path)"
    return f"{where}: {exc.strerror or exc}"


def copy_file_atomic(src: Path | str, dest: Path | str) -> None:
    """Copy `src` (bytes and times) to `dest` atomically: a reader never sees half a copy."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def write_text_atomic(path: Path | str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def finite_or_null(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None, in nested dicts, lists and tuples.
    A diverged run scores NaN; JSON has no such number and strict parsers reject the `NaN` token,
    so it is written as null (the checks that read the number already failed on it)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_or_null(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_null(v) for v in data]
    return data


def dumps_json(data: Any) -> str:
    """JSON text as golfrun writes it: indented, newline-terminated, and never NaN or Infinity
    (a non-finite number is written as null: `finite_or_null`)."""
    return json.dumps(finite_or_null(data), indent=2, allow_nan=False) + "\n"


def write_json_atomic(path: Path | str, data: Any) -> None:
    """Write `data` as JSON to `path` atomically (`dumps_json`: no NaN or Infinity)."""
    write_text_atomic(path, dumps_json(data))


def remove_stale_temps(folder: Path | str) -> list[Path]:
    """Delete the temp files an interrupted atomic write left in `folder`; return them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
