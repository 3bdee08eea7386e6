"""What preserve refuses to archive silently: a binary member holding a secret (left out and
named), and job folders that the summaries name but that are gone (the verdict says so)."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from golfrun.stages import preserve
from golfrun.summary import Verdict
from tests.provenance.test_preserve_stage import _ctx

TOKEN = "hf_binarysecret1234567890"


def _members(tar: Path) -> set[str]:
    with tarfile.open(tar) as t:
        return {n.removeprefix("camp-preserve/") for n in t.getnames()}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le"])
def test_a_binary_holding_a_secret_is_withheld_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         encoding: str) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    ctx = _ctx(tmp_path, [])
    job = ctx.campaign_dir / "02-gate-a" / "jobs" / "seed0"
    (job / "debug.bin").write_bytes(b"\x00\xff\x80binary" + TOKEN.encode(encoding) + b"\x00\xfe")
    (job / "clean.bin").write_bytes(b"\x00\xff\x80 nothing secret \x00")
    s = preserve.run(ctx)
    names = _members(ctx.stage_dir / "camp-preserve.tar.gz")
    assert "02-gate-a/jobs/seed0/debug.bin" not in names and "02-gate-a/jobs/seed0/clean.bin" in names
    check = next(c for c in s.checks if c.name == "binaries_without_secrets")
    assert not check.passed and "02-gate-a/jobs/seed0/debug.bin" in str(check.observed)
    assert TOKEN not in str(s.to_dict())
    assert s.verdict is Verdict.PASS  # a warning: everything else is preserved


def test_a_checkpoint_holding_a_private_key_is_withheld(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, [])
    ckpt = ctx.campaign_dir / "02-gate-a" / "checkpoint" / "final_model.pt"
    ckpt.write_bytes(b"PK\x03\x04\x00\xff" + b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n" + b"\x00")
    preserve.run(ctx)
    assert "02-gate-a/checkpoint/final_model.pt" not in _members(ctx.stage_dir / "camp-preserve.tar.gz")


def test_a_deleted_job_folder_makes_preserve_say_what_is_missing(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, [])
    shutil.rmtree(ctx.campaign_dir / "04-gate-b" / "jobs" / "seed2")
    s = preserve.run(ctx)
    assert s.verdict is Verdict.ERROR
    assert any("04-gate-b/jobs/seed2" in r for r in s.reasons), s.reasons
    check = next(c for c in s.checks if c.name == "job_folders_present")
    assert not check.passed and check.observed == "04-gate-b/jobs/seed2"
