"""The learning-curve early abort with the real train_gpt.py on the CPU (the tiny preset, less data):
gate-a trains 12 steps, then the ablation trains two variants from scratch with
ablation.abort_at_steps = [8]. "slow" (learning rates cut a hundredfold) trails gate-a's train loss
at step 8 by far more than the margin and is stopped there; "ctx64" changes only the evaluation, so
it trains exactly as gate-a did and runs to its end. About a minute on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from golfrun.cli import main

SLOW = 'MATRIX_LR="0.0001", SCALAR_LR="0.0001", TIED_EMBED_LR="0.0001", EMBED_LR="0.001", HEAD_LR="0.0001"'
SETS = [
    "ablation.mode=train",
    f'ablation.variants=[{{name="slow", env={{{SLOW}}}}}, {{name="ctx64", env={{EVAL_SEQ_LEN="64"}}}}]',
    "ablation.abort_at_steps=[8]",
    "ablation.abort_margin_nats=0.5",
    "data.synthetic.train_docs=300",
    "data.synthetic.val_docs=20",
    "gate_a.bpb_tolerance=10",  # the preset's reference figures are for its larger data
    "ablation.promote_delta_bpb=-5",  # nothing is promoted: a KILL, which a person may overrule
    "ablation.hold_delta_bpb=-4",
    "trainer_env.ITERATIONS=12",
]


def golfrun(tmp: Path, *args: str) -> Result:
    sets = [a for s in SETS for a in ("--set", s)]
    return CliRunner().invoke(main, [*args, "--campaign", "tiny", *sets, "--runs-dir", str(tmp / "runs")])


def test_a_trailing_trained_variant_is_aborted_at_the_step_and_the_other_runs_to_its_end(tmp_path: Path) -> None:
    for stage in ("verify-pod", "download-data", "gate-a"):
        done = golfrun(tmp_path, stage)
        assert done.exit_code == 0, done.output
    result = golfrun(tmp_path, "ablation")
    assert result.exit_code == 10, result.output  # KILL (the thresholds above), not an error
    stage = tmp_path / "runs" / "tiny" / "03-ablation"
    summary = json.loads((stage / "summary.json").read_text())
    d = summary["decision"]
    [aborted] = d["aborted"]
    assert (aborted["name"], aborted["check_step"], aborted["step"], aborted["iterations"]) == ("slow", 8, 8, 12)
    assert aborted["observed_loss"] > aborted["reference_loss"] + 0.5 == aborted["margin_nats"] + aborted["reference_loss"]
    assert d["early_abort"]["reference"].startswith("gate-a's run (02-gate-a/jobs/seed0/")
    assert (d["early_abort"]["reference_last_step"], aborted["steps_not_trained"]) == (12, 4)
    # the reference is gate-a's logged loss at step 8
    gate_a_log = (tmp_path / "runs" / "tiny" / "02-gate-a" / "jobs" / "seed0" / "job.log").read_text()
    assert f"8/12 train_loss: {aborted['reference_loss']:.4f}" in gate_a_log
    # the aborted run really stopped at step 8: no later train line, no result, no checkpoint
    slow_log = (stage / "jobs" / "slow" / "job.log").read_text()
    assert "8/12 train_loss" in slow_log and "12/12 train_loss" not in slow_log
    assert not (stage / "jobs" / "slow" / "results.json").exists()
    jobs = {j["name"]: j for j in summary["jobs"]}
    assert jobs["slow"]["state"] == "ABORTED" and "step 8" in jobs["slow"]["reason"]
    assert json.loads((stage / "jobs" / "slow" / "job.json").read_text())["state"] == "ABORTED"
    # the variant within the margin ran to its end and is compared; its check is recorded
    assert jobs["ctx64"]["state"] == "SUCCEEDED"
    [row] = d["variants"]
    assert row["name"] == "ctx64" and isinstance(row["delta_bpb"], float)
    [check] = row["curve_checks"]
    assert (check["step"], check["trailing"]) == (8, False)
    assert d["promoted"] != "slow"
    curve = next(c for c in summary["checks"] if c["name"] == "curve[slow]")
    assert curve["passed"] is False and curve["severity"] == "warn"
    # the ledger keeps the aborted attempt: its time was spent
    attempts = [json.loads(p.read_text()) for p in (stage / "attempts").glob("*.json")]
    assert sorted(a["state"] for a in attempts) == ["ABORTED", "SUCCEEDED"]
    assert next(a for a in attempts if a["job"] == "slow")["duration_s"] > 0

    status = golfrun(tmp_path, "status")
    assert "aborted slow@8" in status.output, status.output
    explain = golfrun(tmp_path, "explain", "ablation")
    assert "slow: ABORTED" in explain.output and "aborted slow at step 8 of 12" in explain.output
    assert "4 of gate-a's 12 steps not trained" in explain.output
    refused = golfrun(tmp_path, "decide", "ablation", "--promote", "slow", "--reason", "try it")
    assert refused.exit_code == 2 and "aborted at step 8" in refused.output
    report = golfrun(tmp_path, "report")
    assert report.exit_code == 0, report.output
    page = json.loads((tmp_path / "runs" / "tiny" / "report" / "report.json").read_text())
    [abl] = [st for st in page["stages"] if st["stage"] == "ablation"]
    assert any(j["name"] == "slow" and j["state"] == "ABORTED" for j in abl["jobs"])
    assert not any("slow" in m for m in page["missing"])  # stopped on purpose: nothing is missing

    (stage / "summary.json").unlink()  # the stage runs again: the abort is served, nothing retrains
    again = golfrun(tmp_path, "ablation")
    assert "job slow: cached abort" in again.output and "starting" not in again.output, again.output
    assert json.loads((stage / "summary.json").read_text())["decision"]["aborted"][0]["name"] == "slow"
