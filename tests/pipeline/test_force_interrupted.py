"""`run-all --force gate-b` killed in the middle: the next plain run-all must not serve gate-b's
old summary. It reruns gate-b, reusing only the seeds the forced run finished. Real processes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.fixtures.pipeline_campaign import launches, run_golfrun, start_golfrun, write_campaign


def _wait_for(predicate, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_an_interrupted_force_is_completed_by_the_next_run(tmp_path: Path, shared_data: Path) -> None:
    block = tmp_path / "block"
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "1", "FAKE_BLOCK_FILE": str(block),
                                                        "FAKE_BLOCK_STAGE": "gate-b"})
    args = ["run-all", "--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]
    assert run_golfrun(args, cwd=tmp_path).returncode in (0, 12)  # 12: only if preserve fails, checked below
    gate_b_dir = tmp_path / "runs" / "t" / "04-gate-b"
    old = json.loads((gate_b_dir / "summary.json").read_text())
    assert old["verdict"] == "PASS"

    block.touch()
    before = len(launches(tmp_path))
    proc = start_golfrun(tmp_path, *args, "--force", "gate-b")
    try:
        _wait_for(lambda: any(line.startswith("seed1 ") for line in launches(tmp_path)[before:]))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    forced_run = [line.split()[0] for line in launches(tmp_path)[before:]]
    marker = json.loads((gate_b_dir / "forced.json").read_text())
    assert marker["why"] == "--force gate-b" and marker["jobs_fresh"] is True

    block.unlink()
    middle = len(launches(tmp_path))
    rerun = run_golfrun(args, cwd=tmp_path)
    assert "gate-b: PASS" in rerun.stdout, rerun.stdout + rerun.stderr
    assert "gate-b: running (its --force (--force gate-b" in rerun.stdout
    resumed = [line.split()[0] for line in launches(tmp_path)[middle:]]
    # seeds the forced run finished are reused; the killed one and the never-reached one rerun
    assert set(resumed) == {"seed1", "seed2"} - set(forced_run[:-1]), (forced_run, resumed)
    new = json.loads((gate_b_dir / "summary.json").read_text())
    assert new["started_at"] != old["started_at"] or new["finished_at"] != old["finished_at"]
    assert not (gate_b_dir / "forced.json").exists()
    for seed in ("seed1", "seed2"):
        job = json.loads((gate_b_dir / "jobs" / seed / "job.json").read_text())
        assert job["state"] == "SUCCEEDED" and job["force_token"] == marker["token"]
    third = run_golfrun(args, cwd=tmp_path)  # once complete, the stage is cached again
    assert "gate-b: PASS (cached" in third.stdout
