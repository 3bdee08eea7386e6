"""Deterministic tar.gz archives with a SHA256SUMS member, and their verification.

The same inputs give the same bytes: members sorted by name, mtime 0, uid/gid 0, no user or group
names, mode 0644, the gzip header's mtime 0 and no file name. Every member sits under one top
folder `<root>/`; `<root>/SHA256SUMS` lists the sha256 of every other member in `sha256sum`
format (paths relative to `<root>/`), so `tar xzf F && cd <root> && sha256sum -c SHA256SUMS`
checks an extracted copy with nothing but coreutils.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from golfrun.errors import ProvenanceError
from golfrun.fileio import sha256_bytes, sha256_file  # noqa: F401  (re-exported: targets, hub, remote, bundle)

SUMS_NAME = "SHA256SUMS"
_CHUNK = 1 << 20


def render_sums(hashes: dict[str, str]) -> str:
    """`sha256sum` format, sorted by path: '<hex>  <path>' per line."""
    return "".join(f"{h}  {p}\n" for p, h in sorted(hashes.items()))


def parse_sums(text: str, source: str = SUMS_NAME) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, path = line.partition("  ")
        if not sep or len(digest) != 64 or not path:
            raise ProvenanceError(f"{source}: line {n} is not '<sha256>  <path>': {line!r}")
        out[path.lstrip("*")] = digest.lower()
    return out


@dataclass(frozen=True)
class Member:
    """One file to archive: `name` is its path under the top folder; content from a file or bytes."""

    name: str
    source: Path | None = None
    data: bytes | None = None

    def size(self) -> int:
        return len(self.data) if self.data is not None else os.path.getsize(self.source)  # type: ignore[arg-type]

    def sha256(self) -> str:
        return sha256_bytes(self.data) if self.data is not None else sha256_file(self.source)  # type: ignore[arg-type]


@dataclass
class TarballInfo:
    path: Path
    root: str
    bytes: int
    sha256: str
    members: dict[str, str]  # name under root → sha256 (SHA256SUMS itself not included)


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or name == SUMS_NAME:
        raise ProvenanceError(f"tarball member name {name!r} is not a plain relative path (or is reserved)")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def build_tarball(out_path: Path | str, root: str, members: Iterable[Member]) -> TarballInfo:
    """Write `out_path` (atomically: a temp file renamed into place) and return its hashes."""
    out_path = Path(out_path)
    _check_name(root)
    by_name: dict[str, Member] = {}
    for m in members:
        _check_name(m.name)
        if m.name in by_name:
            raise ProvenanceError(f"tarball member {m.name!r} given twice")
        by_name[m.name] = m
    hashes = {name: m.sha256() for name, m in by_name.items()}
    sums = render_sums(hashes).encode()

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    try:
        with open(tmp, "wb") as raw:
            # filename="" and mtime=0 keep the gzip header free of the temp name and the clock
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for name in sorted(by_name):
                        m = by_name[name]
                        ti = _tarinfo(f"{root}/{name}", m.size())
                        if m.data is not None:
                            tar.addfile(ti, io.BytesIO(m.data))
                        else:
                            with open(m.source, "rb") as f:  # type: ignore[arg-type]
                                tar.addfile(ti, f)
                    tar.addfile(_tarinfo(f"{root}/{SUMS_NAME}", len(sums)), io.BytesIO(sums))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out_path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ProvenanceError(f"cannot write tarball {out_path}: {exc}") from exc
    return TarballInfo(out_path, root, out_path.stat().st_size, sha256_file(out_path), hashes)


@dataclass
class VerifyReport:
    path: str
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)  # listed, present, different hash
    missing: list[str] = field(default_factory=list)  # listed in SHA256SUMS, not in the archive
    extra: list[str] = field(default_factory=list)  # in the archive, not listed (or not a plain file)
    error: str = ""  # the archive itself could not be read (corrupt gzip/tar, no SHA256SUMS)

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.missing or self.extra or self.error)

    def describe(self) -> str:
        if self.ok:
            return f"{self.path}: OK ({self.checked} members match SHA256SUMS)"
        lines = [f"{self.path}: FAILED"]
        if self.error:
            lines.append(f"  unreadable: {self.error}")
        lines += [f"  mismatch: {p}" for p in self.mismatches]
        lines += [f"  missing:  {p}" for p in self.missing]
        lines += [f"  extra:    {p}" for p in self.extra]
        return "\n".join(lines)


def verify_tarball(path: Path | str) -> VerifyReport:
    """Re-hash every member against the archive's own SHA256SUMS. Never raises for bad content:
    a corrupt or foreign archive is a failed report naming what is wrong."""
    report = VerifyReport(str(path))
    actual: dict[str, str] = {}
    sums_text: str | None = None
    root: str | None = None
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for ti in tar:
                top, _, rel = ti.name.partition("/")
                if root is None:
                    root = top
                if top != root or not rel or not ti.isreg():
                    report.extra.append(ti.name)
                    continue
                f = tar.extractfile(ti)
                assert f is not None
                if rel == SUMS_NAME:
                    sums_text = f.read().decode("utf-8", errors="replace")
                    continue
                h = hashlib.sha256()
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    h.update(chunk)
                actual[rel] = h.hexdigest()
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        return report
    if sums_text is None:
        report.error = f"no {SUMS_NAME} member under {root or '<empty archive>'}/"
        return report
    try:
        listed = parse_sums(sums_text, f"{path}:{root}/{SUMS_NAME}")
    except ProvenanceError as exc:
        report.error = str(exc)
        return report
    for rel, digest in sorted(listed.items()):
        if rel not in actual:
            report.missing.append(rel)
        elif actual[rel] != digest:
            report.mismatches.append(rel)
        else:
            report.checked += 1
    report.extra += sorted(set(actual) - set(listed))
    return report
