"""The kernel session's compile cache between device sessions: each session gets a fresh machine, whose cold
compiles (Inductor's graphs and Triton's kernels: about 270 s for the plain step and 250 s for the default's
on an H100) took a third of a 30-minute session. The last call of a session packs the cache into parts that
a device call can bring back (at most 16 MiB a file); the next session carries them (.kcache) and unpacks
them before training, so its configurations start warm. Everything is keyed by Inductor and Triton
themselves (graph, source, compiler version, GPU): a stale entry is a miss, never a wrong kernel.

The first session that packed (2026-12-05, an H100, five configurations) found a 1.3 GB cache, and xz had
not finished after 95 s. So pack first surveys the folder (bytes by top-level folder and by file suffix,
written to OUT_DIR/kcache-survey.json, which comes back either way) and compresses only what can fit.

usage: python3 benchmarks/kcache.py pack CACHE_DIR OUT_DIR [MAX_PARTS]   -> OUT_DIR/kcache.tar.xz.00, .01, ...
       python3 benchmarks/kcache.py unpack PARTS_DIR DEST_PARENT          (PARTS_DIR holds kcache.tar.xz.NN)
"""
from __future__ import annotations

import io
import json
import lzma
import sys
import tarfile
from pathlib import Path

PART_BYTES = 15 * 1024 * 1024  # under the device's 16 MiB per returned file
PREFIX = "kcache.tar.xz."
SURVEY = "kcache-survey.json"
# xz -3 shrank 100 MB of a shared library (libtorch_cpu.so) 4.3x at 3.8 MB/s on one loaded core here: three
# parts hold about 190 MiB of such bytes, and a larger folder would only spend the session's PACK_S
MAX_RAW_BYTES = 192 * 1024 * 1024


def survey(cache_dir: Path) -> dict:
    """What the folder holds: files and bytes in all, by top-level folder and by file suffix (largest first)."""
    by_top: dict[str, int] = {}
    by_suffix: dict[str, int] = {}
    files = 0
    for path in cache_dir.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        size = path.stat().st_size
        files += 1
        top = path.relative_to(cache_dir).parts[0]
        by_top[top] = by_top.get(top, 0) + size
        by_suffix[path.suffix or "(none)"] = by_suffix.get(path.suffix or "(none)", 0) + size
    ranked = lambda d: dict(sorted(d.items(), key=lambda kv: -kv[1]))  # noqa: E731
    return {"cache_dir": str(cache_dir), "files": files, "bytes": sum(by_top.values()), "by_top": ranked(by_top),
            "by_suffix": ranked(by_suffix)}


def pack(cache_dir: Path, out_dir: Path, max_parts: int = 3) -> list[Path]:
    """The cache folder as an xz tarball (its folder name at the top) cut into parts of PART_BYTES; none
    written when it would need more than `max_parts` (a device call returns at most 8 files) or holds more
    than MAX_RAW_BYTES. Its survey goes to out_dir either way."""
    out_dir.mkdir(parents=True, exist_ok=True)
    found = survey(cache_dir)
    (out_dir / SURVEY).write_text(json.dumps(found, indent=1))
    if found["bytes"] > MAX_RAW_BYTES:
        print(f"kcache: {cache_dir} holds {found['bytes']:,} bytes, more than {MAX_RAW_BYTES:,}; not packed "
              f"(what it holds: {out_dir / SURVEY})")
        return []
    buf = io.BytesIO()
    with lzma.open(buf, "wb", preset=3) as xz, tarfile.open(fileobj=xz, mode="w") as tar:  # fast: the call waits
        tar.add(cache_dir, arcname=cache_dir.name)
    data = buf.getvalue()
    n = -(-len(data) // PART_BYTES)
    if n > max_parts:
        print(f"kcache: {cache_dir} packs into {len(data):,} bytes, more than {max_parts} parts; not packed")
        return []
    parts = []
    for i in range(n):
        path = out_dir / f"{PREFIX}{i:02d}"
        path.write_bytes(data[i * PART_BYTES:(i + 1) * PART_BYTES])
        parts.append(path)
    print(f"kcache: {cache_dir} packed into {len(data):,} bytes, {n} part(s) in {out_dir}")
    return parts


def unpack(parts_dir: Path, dest_parent: Path) -> bool:
    """Join the parts in order and extract them under `dest_parent`; False when there are none."""
    parts = sorted(parts_dir.glob(f"{PREFIX}[0-9][0-9]"))
    if not parts:
        return False
    data = b"".join(p.read_bytes() for p in parts)
    with lzma.open(io.BytesIO(data)) as xz, tarfile.open(fileobj=xz, mode="r") as tar:
        tar.extractall(dest_parent, filter="data")
    print(f"kcache: {len(parts)} part(s) from {parts_dir} unpacked under {dest_parent}")
    return True


def main() -> None:
    verb = sys.argv[1] if len(sys.argv) > 1 else ""
    if verb == "pack" and len(sys.argv) in (4, 5):
        pack(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) == 5 else 3)
    elif verb == "unpack" and len(sys.argv) == 4:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
