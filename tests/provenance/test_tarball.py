"""Deterministic tarballs and verify_tarball on real files."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from golfrun.errors import ProvenanceError
from golfrun.provenance.tarball import (
    SUMS_NAME,
    Member,
    build_tarball,
    parse_sums,
    render_sums,
    sha256_bytes,
    verify_tarball,
)


def _members(tmp_path: Path) -> list[Member]:
    big = tmp_path / "final_model.pt"
    big.write_bytes(bytes(range(256)) * 4000)
    return [
        Member("02-gate-a/summary.json", data=b'{"verdict": "PASS"}\n'),
        Member("02-gate-a/checkpoint/final_model.pt", source=big),
        Member("00-verify-pod/summary.json", data=b"{}\n"),
    ]


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    a = build_tarball(tmp_path / "a" / "x.tar.gz", "camp-preserve", _members(tmp_path))
    b = build_tarball(tmp_path / "b" / "x.tar.gz", "camp-preserve", list(reversed(_members(tmp_path))))
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.sha256 == b.sha256
    raw = a.path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    with tarfile.open(a.path) as tar:
        infos = tar.getmembers()
    names = [i.name for i in infos]
    assert names == sorted(names[:-1]) + ["camp-preserve/SHA256SUMS"]
    assert all(i.mtime == 0 and i.uid == 0 and i.gid == 0 and i.uname == "" and i.mode == 0o644 for i in infos)


def test_sha256sums_covers_every_other_member(tmp_path: Path) -> None:
    info = build_tarball(tmp_path / "x.tar.gz", "r", _members(tmp_path))
    with tarfile.open(info.path) as tar:
        sums = parse_sums(tar.extractfile("r/SHA256SUMS").read().decode())  # type: ignore[union-attr]
        for name, digest in sums.items():
            assert sha256_bytes(tar.extractfile(f"r/{name}").read()) == digest  # type: ignore[union-attr]
    assert set(sums) == {"02-gate-a/summary.json", "02-gate-a/checkpoint/final_model.pt", "00-verify-pod/summary.json"}
    report = verify_tarball(info.path)
    assert report.ok and report.checked == 3, report.describe()


def test_a_flipped_byte_in_the_file_is_caught(tmp_path: Path) -> None:
    info = build_tarball(tmp_path / "x.tar.gz", "r", _members(tmp_path))
    data = bytearray(info.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    info.path.write_bytes(bytes(data))
    report = verify_tarball(info.path)
    assert not report.ok
    assert "FAILED" in report.describe()


def _retar(src: Path, dst: Path, change: dict[str, bytes | None]) -> None:
    """Rewrite a tarball member by member (valid gzip and tar), replacing or dropping members."""
    with tarfile.open(src) as tin, gzip.open(dst, "wb") as gz, tarfile.open(fileobj=gz, mode="w") as tout:
        for ti in tin.getmembers():
            data = tin.extractfile(ti).read()  # type: ignore[union-attr]
            if ti.name in change:
                if change[ti.name] is None:
                    continue
                data = change[ti.name]  # type: ignore[assignment]
                ti.size = len(data)
            tout.addfile(ti, io.BytesIO(data))


def test_changed_missing_and_extra_members_are_named(tmp_path: Path) -> None:
    info = build_tarball(tmp_path / "x.tar.gz", "r", _members(tmp_path))
    bad = tmp_path / "bad.tar.gz"
    _retar(info.path, bad, {"r/02-gate-a/summary.json": b'{"verdict": "KILL"}\n', "r/00-verify-pod/summary.json": None})
    report = verify_tarball(bad)
    assert report.mismatches == ["02-gate-a/summary.json"]
    assert report.missing == ["00-verify-pod/summary.json"]
    assert not report.ok

    extra = tmp_path / "extra.tar.gz"
    with tarfile.open(info.path) as tin, gzip.open(extra, "wb") as gz, tarfile.open(fileobj=gz, mode="w") as tout:
        for ti in tin.getmembers():
            tout.addfile(ti, tin.extractfile(ti))
        ti = tarfile.TarInfo("r/planted.txt")
        ti.size = 3
        tout.addfile(ti, io.BytesIO(b"bad"))
    assert verify_tarball(extra).extra == ["planted.txt"]


def test_no_sums_member_is_a_failed_report(tmp_path: Path) -> None:
    info = build_tarball(tmp_path / "x.tar.gz", "r", _members(tmp_path))
    stripped = tmp_path / "nosums.tar.gz"
    _retar(info.path, stripped, {f"r/{SUMS_NAME}": None})
    report = verify_tarball(stripped)
    assert "no SHA256SUMS" in report.error


def test_bad_member_names_are_refused(tmp_path: Path) -> None:
    for bad in ("../etc/passwd", "/abs", "a//b", SUMS_NAME):
        with pytest.raises(ProvenanceError):
            build_tarball(tmp_path / "x.tar.gz", "r", [Member(bad, data=b"x")])


def test_render_and_parse_sums_round_trip() -> None:
    sums = {"b/c.txt": "a" * 64, "a.txt": "b" * 64}
    text = render_sums(sums)
    assert text.splitlines()[0].endswith("  a.txt")
    assert parse_sums(text) == sums
    with pytest.raises(ProvenanceError, match="line 1"):
        parse_sums("nothex  a.txt\n")
