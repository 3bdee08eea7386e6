"""SIGKILL of golfrun in the middle of gate-b, then a rerun; the campaign lock. Real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from golfrun.pipeline.lock import CampaignLock
from tests.fixtures.pipeline_campaign import REPO, launches, run_golfrun, start_golfrun, write_campaign


def _wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_sigkill_during_gate_b_then_rerun_redoes_only_the_killed_job(tmp_path: Path, shared_data: Path) -> None:
    block = tmp_path / "block"
    block.touch()
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "2", "FAKE_BLOCK_FILE": str(block)})
    args = ["run-all", "--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]
    proc = start_golfrun(tmp_path, *args)
    try:
        _wait_for(lambda: any(line.startswith("seed2 seed=2") for line in launches(tmp_path)))
        os.kill(proc.pid, signal.SIGKILL)  # golfrun only; its trainer is left running, blocked
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "runs" / "t" / "04-gate-b" / "summary.json").exists()
    before = launches(tmp_path)
    block.unlink()  # lets a new run of seed 2 finish (the rerun first stops the orphan)

    rerun = run_golfrun(args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    new = launches(tmp_path)[len(before):]
    assert [line.split()[0] for line in new] == ["seed2"]  # only the job in flight is redone
    gate_b = json.loads((tmp_path / "runs" / "t" / "04-gate-b" / "summary.json").read_text())
    assert gate_b["verdict"] == "PASS"
    assert {j["name"]: j["cached"] for j in gate_b["jobs"]} == {"seed0": True, "seed1": True, "seed2": False}


def test_second_run_of_a_locked_campaign_exits_3_naming_the_holder(tmp_path: Path, campaign: Path) -> None:
    with CampaignLock(tmp_path / "runs" / "t", command="golfrun run-all"):
        result = run_golfrun(["run-all", "--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path)
    assert result.returncode == 3
    assert f"locked by pid {os.getpid()}" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from golfrun.pipeline.lock import CampaignLock;"
            "l = CampaignLock(sys.argv[1]); l.acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        lock = CampaignLock(tmp_path)
        try:
            lock.acquire()
            raise AssertionError("acquired a lock held by a live process")
        except Exception as exc:  # LockError
            assert f"pid {holder.pid}" in str(exc)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        with CampaignLock(tmp_path) as taken:
            assert json.loads(taken.path.read_text())["pid"] == os.getpid()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_sigterm_cancels_the_running_trainer_and_releases_the_lock(tmp_path: Path, shared_data: Path) -> None:
    from golfrun.transport.local import find_processes_with_env

    block = tmp_path / "block"
    block.touch()
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "0", "FAKE_BLOCK_FILE": str(block)})
    args = ["run-all", "--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]
    proc = start_golfrun(tmp_path, *args, stdout=subprocess.PIPE)
    job_dir = (tmp_path / "runs" / "t" / "02-gate-a" / "jobs" / "seed0").resolve()
    try:
        _wait_for(lambda: bool(launches(tmp_path)))
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted, cancelling it" in out
    assert not find_processes_with_env("GOLFRUN_JOB_DIR", str(job_dir))  # no orphan trainer
    assert json.loads((job_dir / "job.json").read_text())["state"] == "SUBMITTED"  # never cached as done
    with CampaignLock(tmp_path / "runs" / "t"):
        pass
    block.unlink()


def test_job_index_during_run_all_exits_3_and_leaves_run_all_alone(tmp_path: Path, shared_data: Path) -> None:
    block = tmp_path / "block"
    block.touch()
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "2", "FAKE_BLOCK_FILE": str(block),
                                                        "FAKE_BLOCK_STAGE": "gate-b"})
    args = ["--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]
    proc = start_golfrun(tmp_path, "run-all", *args)
    try:
        _wait_for(lambda: any(line.startswith("seed2 seed=2") for line in launches(tmp_path)))
        for index in ("2", "0"):
            other = run_golfrun(["gate-b", "--job-index", index, *args], cwd=tmp_path)
            assert other.returncode == 3, other.stdout + other.stderr
            assert "locked by pid" in other.stderr and "golfrun run-all" in other.stderr
        block.unlink()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [line.split()[0] for line in launches(tmp_path)].count("seed2") == 1  # nothing killed or relaunched
    gate_b = json.loads((tmp_path / "runs" / "t" / "04-gate-b" / "summary.json").read_text())
    assert gate_b["verdict"] == "PASS"


def test_job_index_tasks_share_the_campaign_lock_but_not_a_job(tmp_path: Path, campaign: Path) -> None:
    from golfrun.pipeline.lock import job_lock

    args = ["--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs")]
    for stage in ("verify-pod", "download-data"):
        assert run_golfrun([stage, *args], cwd=tmp_path).returncode == 0
    cdir = tmp_path / "runs" / "t"
    with CampaignLock(cdir, command="golfrun gate-a --job-index 0", shared=True):  # another array task
        with job_lock(cdir / "02-gate-a", "seed0", command="golfrun gate-a --job-index 0"):
            busy = run_golfrun(["gate-a", "--job-index", "0", *args], cwd=tmp_path)
            assert busy.returncode == 3 and ".seed0.lock" in busy.stderr, busy.stderr
            assert not (cdir / "02-gate-a" / "jobs" / "seed0").exists()
        alone = run_golfrun(["gate-a", "--job-index", "0", *args], cwd=tmp_path)
        assert alone.returncode == 0, alone.stderr
        blocked = run_golfrun(["gate-a", *args], cwd=tmp_path)  # an exclusive holder waits for the array
        assert blocked.returncode == 3 and "hold it together" in blocked.stderr


def test_a_slurm_job_waits_for_the_lock_of_the_job_that_submitted_it(tmp_path: Path) -> None:
    """A gate-b wave's aggregation job submits the next wave while it still holds the lock: the
    new array tasks wait for it (up to wait_s) instead of exiting 3."""
    import threading

    from golfrun.errors import LockError

    holder = CampaignLock(tmp_path, command="slurm job: golfrun gate-b")
    holder.acquire()
    threading.Timer(1.0, holder.release).start()
    with CampaignLock(tmp_path, command="array task", shared=True, wait_s=30.0):
        assert holder._fd is None  # got it only once the holder let go
    with CampaignLock(tmp_path, command="slurm job: golfrun gate-b"):
        try:
            CampaignLock(tmp_path, shared=True, wait_s=0.6).acquire()
            raise AssertionError("acquired a lock held exclusively")
        except LockError:
            pass
