"""Faults of the disk and of timing around a job: temp files of an interrupted write, a result
finished just before golfrun died, a full disk, a read-only runs folder. Real processes and real
file systems (a small tmpfs where the test may mount one)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.pipeline_campaign import launches, run_golfrun, write_campaign


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
    import subprocess
    import time

    from tests.fixtures.pipeline_campaign import REPO, golfrun_argv

    block = tmp_path / "block"
    block.touch()
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "2", "FAKE_BLOCK_FILE": str(block),
                                                        "FAKE_BLOCK_STAGE": "gate-b", "FAKE_BLOCK_AFTER": "1"})
    job = tmp_path / "runs" / "t" / "04-gate-b" / "jobs" / "seed2"
    proc = subprocess.Popen(golfrun_argv(*_args(tmp_path)), cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
