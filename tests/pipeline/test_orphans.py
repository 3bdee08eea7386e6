"""golfrun killed while a trainer runs: SIGKILL, and two SIGTERMs in a row. The fake trainer ignores
SIGTERM and blocks silently before writing its results; once golfrun is gone, no process of the
job may remain within ORPHAN_DEADLINE_S and no file of the job folder may change afterwards, even
when the block is lifted (a surviving trainer would then write results.json). Real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from golfrun.backends.local import MARKER_ENV
from golfrun.pipeline.lock import CampaignLock
from golfrun.transport.local import find_processes_with_env, terminate_processes
from tests.fixtures.pipeline_campaign import launches, start_golfrun, write_campaign
from tests.fixtures.waiting import wait_for, snapshot

ORPHAN_DEADLINE_S = 2.0


def start(tmp_path: Path, shared_data: Path) -> tuple[subprocess.Popen[str], Path, Path, Path]:
    block = tmp_path / "block"
    block.touch()
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "0", "FAKE_BLOCK_FILE": str(block),
                                                        "FAKE_IGNORE_SIGTERM": "1"})
    out = tmp_path / "golfrun.out"
    args = ["run-all", "--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]
    with open(out, "wb") as sink:
        proc = start_golfrun(tmp_path, *args, stdout=sink, env={"PYTHONUNBUFFERED": "1"})
    job_dir = (tmp_path / "runs" / "t" / "02-gate-a" / "jobs" / "seed0").resolve()
    assert wait_for(lambda: bool(launches(tmp_path)) and (job_dir / "seed0.txt").is_file())
    return proc, job_dir, block, out


def assert_job_gone_and_still(job_dir: Path, block: Path, killed_at: float) -> float:
    def procs() -> set[tuple[int, int]]:
        return find_processes_with_env(MARKER_ENV, str(job_dir))

    try:
        assert wait_for(lambda: not procs(), ORPHAN_DEADLINE_S), procs()
        gone_after = time.monotonic() - killed_at
        before = snapshot(job_dir)
        block.unlink()  # a trainer still alive would now write results.json
        time.sleep(1.0)
        assert snapshot(job_dir) == before
        assert not (job_dir / "results.json").exists()
        return gone_after
    finally:
        terminate_processes(procs(), 1.0)


def test_sigkill_of_golfrun_leaves_no_trainer(tmp_path: Path, shared_data: Path) -> None:
    proc, job_dir, block, _ = start(tmp_path, shared_data)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(timeout=30)
        gone = assert_job_gone_and_still(job_dir, block, killed_at)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"trainer gone {gone:.2f}s after golfrun's SIGKILL")
    with CampaignLock(tmp_path / "runs" / "t"):
        pass


def test_second_sigterm_escalates_instead_of_abandoning_the_trainer(tmp_path: Path, shared_data: Path) -> None:
    proc, job_dir, block, out = start(tmp_path, shared_data)
    try:
        os.kill(proc.pid, signal.SIGTERM)  # golfrun cancels the job: SIGTERM, which the trainer ignores
        assert wait_for(lambda: "interrupted, cancelling it" in out.read_text())
        time.sleep(0.3)
        assert proc.poll() is None  # still waiting out the grace period (10 s)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        gone = assert_job_gone_and_still(job_dir, block, time.monotonic())
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    print(f"trainer gone {gone:.2f}s after golfrun's exit")
    with CampaignLock(tmp_path / "runs" / "t"):
        pass
