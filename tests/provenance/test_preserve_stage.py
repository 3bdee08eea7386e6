"""The preserve stage on a finished campaign folder: provenance, tarball, uploads, verdicts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from golfrun.campaign import load_campaign
from golfrun.provenance.tarball import parse_sums, sha256_file, verify_tarball
from golfrun.stages import preserve
from golfrun.stages.context import StageContext
from golfrun.summary import STAGE_DIRS, Summary, Verdict
from tests.fixtures.hf_hub_server import HubServer
from tests.provenance.campaign_dir import write_campaign_dir


def _ctx(tmp_path: Path, targets: list[str], include_checkpoints: bool = True) -> StageContext:
    campaign = load_campaign(None, [
        "name=\"camp\"",
        f"preserve.targets={json.dumps(targets)}",
        f"preserve.include_checkpoints={'true' if include_checkpoints else 'false'}",
        f"backend.local.python=\"{sys.executable}\"",
    ])
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", campaign)
    upstream = {}
    for stage, folder in STAGE_DIRS.items():
        p = cdir / folder / "summary.json"
        if p.is_file():
            upstream[stage] = Summary.from_dict(json.loads(p.read_text()))
    return StageContext(campaign=campaign, stage="preserve", campaign_dir=cdir, stage_dir=cdir / STAGE_DIRS["preserve"],
                        upstream=upstream, backend=None, trainer_sha256="t" * 64, fingerprint="p" * 64,  # type: ignore[arg-type]
                        log=lambda m: None)


def test_pass_with_a_folder_target(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, [f"dir:{tmp_path / 'kept'}"])
    s = preserve.run(ctx)
    assert s.verdict is Verdict.PASS, s.reasons
    tar = ctx.stage_dir / "camp-preserve.tar.gz"
    assert verify_tarball(tar).ok
    assert s.decision["tarball_sha256"] == sha256_file(tar)
    assert (tmp_path / "kept" / "camp-preserve.tar.gz").read_bytes() == tar.read_bytes()
    with tarfile.open(tar) as t:
        names = {n.removeprefix("camp-preserve/") for n in t.getnames()}
    assert {"campaign.resolved.toml", "00-verify-pod/summary.json", "02-gate-a/jobs/seed0/results.json",
            "02-gate-a/jobs/seed0/train_seed0.txt", "02-gate-a/checkpoint/final_model.pt",
            "04-gate-b/jobs/seed2/results.json", "05-preserve/provenance.json", "SHA256SUMS"} <= names
    assert not any(n.startswith("data/") for n in names)
    sums = parse_sums((ctx.stage_dir / "SHA256SUMS").read_text())
    assert set(sums) == {"camp-preserve.tar.gz", "README.md"}
    card = (ctx.stage_dir / "README.md").read_text()
    assert "| gate-b | seed2 | 2 | train | 2.77232000 | 1.07325147 | 15,988,805 | 504.9 |" in card
    assert "| gate-b | PASS |" in card


def test_preserve_never_imports_torch(tmp_path: Path) -> None:
    """In a fresh interpreter (this test process may hold torch from the trainer's tests): the preserve
    stage collects torch's versions from the trainer's Python in a subprocess, never by importing it."""
    ctx_code = (
        "import sys, pathlib; from tests.provenance.test_preserve_stage import _ctx; "
        "from golfrun.stages import preserve; "
        f"s = preserve.run(_ctx(pathlib.Path({str(tmp_path)!r}), [])); "
        "print(s.verdict.value, 'torch' in sys.modules)"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", ctx_code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["PASS", "False"]


def test_provenance_has_what_produced_the_runs(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, [])
    s = preserve.run(ctx)
    assert s.verdict is Verdict.PASS
    prov = json.loads((ctx.stage_dir / "provenance.json").read_text())
    assert prov["schema"] == "golfrun.provenance/1"
    assert prov["trainer"]["sha256"] == "t" * 64
    assert prov["campaign"]["name"] == "camp" and "[preserve]" in prov["campaign"]["resolved_toml"]
    assert prov["trainer_python"]["torch"]  # asked in a subprocess: golfrun never imports torch
    assert any(p.startswith("huggingface_hub==") for p in prov["python"]["packages"])
    repo = Path(__file__).resolve().parents[2]
    if shutil.which("git") and subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True).returncode == 0:
        git = next(g for g in prov["git"] if Path(g["toplevel"]) == repo)
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert git["commit"] == head and len(git["diff_sha256"]) == 64
    assert prov["seeds"] == [0, 1, 2]
    assert prov["stages"]["gate-a"]["jobs"][0]["backend_ids"] == ["pid:123"]
    assert prov["stages"]["gate-a"]["wall_s"] == 1800.0
    assert prov["host"]["cpu_count"] >= 1
    assert prov["nvidia_smi"]["present"] in (True, False)


def test_checkpoints_only_when_configured(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, [], include_checkpoints=False)
    assert preserve.run(ctx).verdict is Verdict.PASS
    with tarfile.open(ctx.stage_dir / "camp-preserve.tar.gz") as t:
        assert not [n for n in t.getnames() if n.endswith((".pt", ".ptz"))]


def test_a_failed_target_is_an_error_that_keeps_the_tarball(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    good = tmp_path / "good"
    ctx = _ctx(tmp_path, [f"dir:{blocker}/sub", f"dir:{good}"])
    s = preserve.run(ctx)
    assert s.verdict is Verdict.ERROR
    tar = ctx.stage_dir / "camp-preserve.tar.gz"
    assert tar.is_file() and verify_tarball(tar).ok
    assert str(tar) in s.reasons[0]
    assert any(f"retry with: golfrun upload {tar} --to dir:{blocker}/sub" in r for r in s.reasons)
    assert (good / "camp-preserve.tar.gz").is_file()  # the other target still got its copy
    assert [c.passed for c in s.checks if c.name.startswith("upload:")] == [False, True]


def test_hub_target_from_the_campaign(tmp_path: Path, hf_hub: HubServer) -> None:
    ctx = _ctx(tmp_path, ["hf:golfer/camp-evidence/runs"])
    s = preserve.run(ctx)
    assert s.verdict is Verdict.PASS, s.reasons
    files = hf_hub.files("golfer/camp-evidence")
    assert files["runs/camp-preserve.tar.gz"] == (ctx.stage_dir / "camp-preserve.tar.gz").read_bytes()
    assert "1.07325147" in files["runs/README.md"].decode()
    assert hf_hub.repo("golfer/camp-evidence").private


def test_rerun_gives_the_same_tarball(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, [])
    preserve.run(ctx)
    first = (ctx.stage_dir / "camp-preserve.tar.gz").read_bytes()
    with tarfile.open(ctx.stage_dir / "camp-preserve.tar.gz") as t:
        members_first = {m.name: t.extractfile(m).read() for m in t.getmembers()}  # type: ignore[union-attr]
    preserve.run(ctx)
    with tarfile.open(ctx.stage_dir / "camp-preserve.tar.gz") as t:
        members_second = {m.name: t.extractfile(m).read() for m in t.getmembers()}  # type: ignore[union-attr]
    # only provenance.json (its time stamps) and the sums over it may differ
    changed = {n for n in members_first if members_first[n] != members_second.get(n)}
    assert changed <= {"camp-preserve/05-preserve/provenance.json", "camp-preserve/SHA256SUMS"}
    assert first  # the archive exists and was rebuilt in place


def test_preserve_runs_after_an_upstream_error(tmp_path: Path) -> None:
    """Only verify-pod ran, and failed: preserve still keeps what there is."""
    campaign = load_campaign(None, ['name="camp"', f'preserve.targets=["dir:{tmp_path / "kept"}"]'])
    cdir = tmp_path / "runs" / "camp"
    (cdir / STAGE_DIRS["verify-pod"]).mkdir(parents=True)
    failed = Summary("verify-pod", "camp", Verdict.ERROR, "2026-11-24T10:00:00Z", "2026-11-24T10:00:05Z", "f",
                     reasons=["nvidia-smi not found"])
    (cdir / STAGE_DIRS["verify-pod"] / "summary.json").write_text(json.dumps(failed.to_dict()))
    ctx = StageContext(campaign=campaign, stage="preserve", campaign_dir=cdir, stage_dir=cdir / STAGE_DIRS["preserve"],
                       upstream={"verify-pod": failed}, backend=None, trainer_sha256="t" * 64,  # type: ignore[arg-type]
                       fingerprint="p" * 64, log=lambda m: None)
    s = preserve.run(ctx)
    assert s.verdict is Verdict.PASS, s.reasons
    with tarfile.open(ctx.stage_dir / "camp-preserve.tar.gz") as t:
        assert "camp-preserve/00-verify-pod/summary.json" in t.getnames()
    assert "| verify-pod | ERROR | nvidia-smi not found |" in (ctx.stage_dir / "README.md").read_text()
    assert "_No trainer job produced a final score._" in (tmp_path / "kept" / "README.md").read_text()


def test_members_are_kept_as_written_unless_they_hold_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SECRET", "planted-in-a-log-1234")
    campaign = load_campaign(None, ['name="camp"', "preserve.targets=[]"])
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", campaign, log_extra="oops planted-in-a-log-1234\n" + (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAplantedkeybody\n-----END OPENSSH PRIVATE KEY-----\n"))
    job = cdir / "02-gate-a/jobs/seed0"
    (job / "job.json").write_text('{"key": "0123abcd", "tokenizer_path": "/data/tok.model"}\n')
    ctx = StageContext(campaign=campaign, stage="preserve", campaign_dir=cdir, stage_dir=cdir / STAGE_DIRS["preserve"],
                       upstream={}, backend=None, trainer_sha256="t" * 64, fingerprint="p" * 64,  # type: ignore[arg-type]
                       log=lambda m: None)
    assert preserve.run(ctx).verdict is Verdict.PASS
    with tarfile.open(ctx.stage_dir / "camp-preserve.tar.gz") as t:
        def member(name: str) -> bytes:
            return t.extractfile(f"camp-preserve/{name}").read()  # type: ignore[union-attr]

        assert member("02-gate-a/jobs/seed0/job.json") == (job / "job.json").read_bytes()
        assert member("02-gate-a/summary.json") == (cdir / "02-gate-a/summary.json").read_bytes()
        log = member("02-gate-a/jobs/seed0/train_seed0.txt").decode()
    assert "planted-in-a-log-1234" not in log and "plantedkeybody" not in log
    assert "oops ***REDACTED***" in log and "quantized_ttt_phased val_loss:2.76951521" in log
