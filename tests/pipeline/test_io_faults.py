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
