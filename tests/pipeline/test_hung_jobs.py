"""A hung job ends as ERROR with its log's tail: the stall detector (no output, no GPU activity)
and the per-stage `[timeouts]` deadline. The fake trainer blocks silently after training; this
machine has no nvidia-smi, so only its silence counts. Real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golfrun.backends.local import MARKER_ENV
from golfrun.transport.local import find_processes_with_env
from tests.fixtures.pipeline_campaign import run_golfrun, write_campaign


@pytest.mark.parametrize(("settings", "reason"), [
    (["timeouts.stall_s=2"], "STALLED: no output and no GPU activity for 2s"),
    (["timeouts.stall_s=0", "timeouts.gate_a_s=3"], "TIMEOUT after 3s"),
])
def test_a_hung_gate_a_job_is_an_error_with_the_log_tail(tmp_path: Path, shared_data: Path, settings: list[str],
                                                         reason: str) -> None:
    block = tmp_path / "block"
    block.touch()  # never lifted: the trainer hangs (silently) until it is stopped
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "0", "FAKE_BLOCK_FILE": str(block)})
    sets = [arg for s in settings for arg in ("--set", s)]
    result = run_golfrun(["run-all", "--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs"),
                          *sets], cwd=tmp_path)
    assert result.returncode == 12, result.stdout + result.stderr
    cdir = tmp_path / "runs" / "t"
    gate_a = json.loads((cdir / "02-gate-a" / "summary.json").read_text())
    assert gate_a["verdict"] == "ERROR"
    text = "\n".join(gate_a["reasons"])
    assert reason in text
    assert "last lines of" in text and "3/3 train_loss: 6.0000" in text  # the log's tail
    assert gate_a["jobs"][0]["state"] == "CANCELLED"
    assert not find_processes_with_env(MARKER_ENV, str((cdir / "02-gate-a" / "jobs" / "seed0").resolve()))
    assert json.loads((cdir / "04-gate-b" / "summary.json").read_text())["verdict"] == "SKIPPED"
    assert (cdir / "05-preserve" / "summary.json").is_file()  # preserve still ran
