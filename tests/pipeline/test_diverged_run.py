"""A diverged trainer (its score is NaN) is a KILL with a reason, never a traceback, and every
summary golfrun writes stays strict JSON (NaN is written as null)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.pipeline_campaign import run_golfrun, write_campaign


def _strict(text: str) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_a_nan_score_is_a_kill_and_no_summary_holds_nan(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, tmp_path / "data", trainer_env={"FAKE_BPB": "nan"})
    proc = run_golfrun(["run-all", "--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path)
    assert proc.returncode == 10, proc.stdout + proc.stderr  # KILL, not a crash
    assert "Traceback" not in proc.stderr
    summaries = sorted((tmp_path / "runs" / "t").glob("*/summary.json"))
    assert len(summaries) == 6
    for path in summaries:
        _strict(path.read_text())  # raises on NaN / Infinity
    _strict((tmp_path / "runs" / "t" / "05-preserve" / "provenance.json").read_text())
    gate_a = _strict((tmp_path / "runs" / "t" / "02-gate-a" / "summary.json").read_text())
    check = next(c for c in gate_a["checks"] if c["name"] == "val_bpb")  # type: ignore[index]
    assert check["passed"] is False and check["observed"] is None and "not a number" in check["detail"]
