"""Faults of the disk and of timing around a job: temp files of an interrupted write, a result
finished just before golfrun died, a full disk, a read-only runs folder. Real processes and real
file systems (a small tmpfs where the test may mount one)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from golfrun.pipeline.lock import CampaignLock
from tests.fixtures.pipeline_campaign import launches, run_golfrun, start_golfrun, write_campaign


def _args(tmp_path: Path) -> list[str]:
    return ["run-all", "--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]


def test_temp_files_of_an_interrupted_summary_write_are_removed_by_the_next_run(tmp_path: Path, shared_data: Path) -> None:
    write_campaign(tmp_path, shared_data)
    run_golfrun(_args(tmp_path), cwd=tmp_path)
    cdir = tmp_path / "runs" / "t"
    gate_b = json.loads((cdir / "04-gate-b" / "summary.json").read_text())
    assert gate_b["verdict"] == "PASS"
    # what a kill between mkstemp and rename leaves (golfrun.fileio.write_bytes_atomic's names)
    planted = [cdir / "04-gate-b" / ".summary.json.k3j2x9.tmp", cdir / ".campaign.resolved.toml.a1b2c3.tmp",
               cdir / "04-gate-b" / "jobs" / "seed1" / ".job.json.zz9.tmp", cdir / "02-gate-a" / ".last_run.json.q.tmp"]
    for path in planted:
        path.write_text('{"half": ')
    rerun = run_golfrun(_args(tmp_path), cwd=tmp_path)
    assert "04-gate-b/.summary.json.k3j2x9.tmp" in rerun.stdout and "04-gate-b/jobs/seed1/.job.json.zz9.tmp" in rerun.stdout
    assert not any(path.exists() for path in planted)
    assert json.loads((cdir / "04-gate-b" / "summary.json").read_text()) == gate_b  # served from cache, untouched


def test_a_finished_result_of_a_killed_golfrun_is_adopted_not_retrained(tmp_path: Path, shared_data: Path) -> None:
    import os
    import signal
    import time


    block = tmp_path / "block"
    block.touch()
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "2", "FAKE_BLOCK_FILE": str(block),
                                                        "FAKE_BLOCK_STAGE": "gate-b", "FAKE_BLOCK_AFTER": "1"})
    job = tmp_path / "runs" / "t" / "04-gate-b" / "jobs" / "seed2"
    proc = start_golfrun(tmp_path, *_args(tmp_path))
    try:
        end = time.monotonic() + 120
        while not (job / "results.json").is_file() and time.monotonic() < end:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the result is written; golfrun never sees the exit
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads((job / "job.json").read_text())["state"] == "SUBMITTED"
    written = (job / "results.json").read_bytes()
    before = launches(tmp_path)
    block.unlink()
    rerun = run_golfrun(_args(tmp_path), cwd=tmp_path)
    assert "gate-b: job seed2: adopted its finished results.json" in rerun.stdout, rerun.stdout + rerun.stderr
    assert launches(tmp_path) == before  # nothing retrained
    assert (job / "results.json").read_bytes() == written
    recorded = json.loads((job / "job.json").read_text())
    assert recorded["state"] == "SUCCEEDED" and recorded["adopted"] is True
    summary = json.loads((tmp_path / "runs" / "t" / "04-gate-b" / "summary.json").read_text())
    assert summary["verdict"] == "PASS"
    assert {j["name"]: j["reason"] for j in summary["jobs"]}["seed2"].startswith("adopted")


def test_a_half_written_result_is_not_adopted(tmp_path: Path, shared_data: Path) -> None:
    """results.json cut off (not the trainer's atomic write): the job reruns in a clean folder."""
    write_campaign(tmp_path, shared_data)
    run_golfrun(_args(tmp_path), cwd=tmp_path)
    job = tmp_path / "runs" / "t" / "04-gate-b" / "jobs" / "seed2"
    recorded = json.loads((job / "job.json").read_text())
    (job / "job.json").write_text(json.dumps({**recorded, "state": "SUBMITTED"}))
    (job / "results.json").write_text((job / "results.json").read_text()[:40])
    (job.parents[1] / "summary.json").unlink()  # as if golfrun died in gate-b
    before = len(launches(tmp_path))
    rerun = run_golfrun(_args(tmp_path), cwd=tmp_path)
    assert "adopted" not in rerun.stdout
    assert [line.split()[0] for line in launches(tmp_path)[before:]] == ["seed2"]
    assert json.loads((job / "job.json").read_text())["state"] == "SUCCEEDED"


# ------------------------------------------------------------------------------ a full or read-only disk


@contextlib.contextmanager
def mounted(target: Path, *options: str) -> Iterator[None]:
    """A real mount for the test (root and a kernel that allows it), else the test is skipped."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount {' '.join(options)} here ({done.stderr.strip() or 'not root'}); "
                    "the disk-error behaviour needs a real full or read-only file system")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _assert_one_line_error(result: subprocess.CompletedProcess[str], path_part: str, reason: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 12, out
    assert "Traceback" not in result.stderr and 'golfrun/' not in out.replace("golfrun/tests", "")  # only the trainer's own
    lines = [line for line in result.stdout.splitlines() if "ERROR: I/O error: " in line]
    assert any(path_part in line and reason in line for line in lines), out


def test_disk_full_during_gate_b_is_an_error_naming_the_file(tmp_path: Path, shared_data: Path) -> None:
    """A tmpfs of 4 MiB holds the whole campaign; gate-b's seed 2 then fills it (a checkpoint that
    outgrew the disk): job.json and the summary cannot be written."""
    runs = tmp_path / "runs"
    with mounted(runs, "-t", "tmpfs", "-o", "size=4m", "tmpfs"):
        write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "2", "FAKE_BLOCK_STAGE": "gate-b",
                                                            "FAKE_FILL_DISK": str(runs / "filler")})
        result = run_golfrun(_args(tmp_path), cwd=tmp_path)
        _assert_one_line_error(result, "04-gate-b/", "No space left on device")
        assert "preserve: running" in result.stdout  # attempted, whatever became of it
        cdir = runs / "t"
        for stage in ("00-verify-pod", "01-download-data", "02-gate-a", "03-ablation"):  # whole, as written
            assert json.loads((cdir / stage / "summary.json").read_text())["verdict"] == "PASS"
        assert not list(cdir.rglob(".*.tmp"))  # no half-written temp file left behind
        with CampaignLock(cdir):  # released
            pass
        (runs / "filler").unlink()
        # space again, and a trainer that no longer fills it: gate-b completes
        rerun = run_golfrun([*_args(tmp_path), "--set", "trainer_env.FAKE_FILL_DISK=''"], cwd=tmp_path)
        assert json.loads((cdir / "04-gate-b" / "summary.json").read_text())["verdict"] == "PASS", rerun.stdout


def test_read_only_stage_folder_is_an_error_naming_the_file(tmp_path: Path, shared_data: Path) -> None:
    write_campaign(tmp_path, shared_data)
    run_golfrun(_args(tmp_path), cwd=tmp_path)
    gate_b = tmp_path / "runs" / "t" / "04-gate-b"
    old = (gate_b / "summary.json").read_bytes()
    with mounted(gate_b, "--bind", str(gate_b)):
        done = subprocess.run(["mount", "-o", "remount,ro,bind", str(gate_b)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {done.stderr.strip()}")
        result = run_golfrun([*_args(tmp_path), "--set", "gate_b.mean_tolerance_bpb=0.02"], cwd=tmp_path)
        _assert_one_line_error(result, "04-gate-b/summary.json", "Read-only file system")
        # preserve is not skipped; what it reads on disk (gate-b's old summary) is unchanged, so its
        # earlier bundle still stands and is served from cache
        assert "preserve: PASS (cached" in result.stdout or "preserve: running" in result.stdout
        assert (gate_b / "summary.json").read_bytes() == old
        with CampaignLock(tmp_path / "runs" / "t"):
            pass
