"""The ablation's successive halving, through the CLI with the instant fake trainer
(tests/fixtures/pipeline_trainer.py): variant "good" scores −0.01 BPB against the baseline, "bad"
+0.01. The fake's score does not depend on the validation subset, so what is tested is the mechanics:
which jobs run on which documents, who goes on, and where the promoted figures come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from golfrun.cli import main
from golfrun.stages.halving import survivors_of
from tests.fixtures.pipeline_campaign import launches

HALVING = ["--set", "ablation.halving_fractions=[0.25]", "--set", "ablation.halving_doc_seed=7"]


def golfrun(tmp: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--campaign", str(tmp / "campaign.toml"), "--runs-dir", str(tmp / "runs")])


def test_the_loser_is_dropped_at_the_first_rung(tmp_path: Path, campaign: Path) -> None:
    result = golfrun(tmp_path, "run-all", *HALVING)
    assert result.exit_code == 0, result.output
    abl_dir = tmp_path / "runs" / "t" / "03-ablation"
    s = json.loads((abl_dir / "summary.json").read_text())
    d = s["decision"]
    assert d["dropped"] == ["bad"]
    [rung] = d["rungs"]
    assert (rung["rung"], rung["fraction"], rung["doc_seed"]) == (1, 0.25, 7)
    assert [(v["name"], v["kept"]) for v in rung["variants"]] == [("good", True), ("bad", False)]
    assert rung["variants"][0]["delta_bpb"] == pytest.approx(-0.01)
    # every rung job scores the same documents: one fraction, one VAL_DOC_SEED; the full set has neither
    for job in ("r1-baseline", "r1-good", "r1-bad"):
        env = json.loads((abl_dir / "jobs" / job / "job.json").read_text())["full_env"]
        assert (env["VAL_DOC_FRACTION"], env["VAL_DOC_SEED"]) == ("0.25", "7")
    for job in ("baseline", "good"):
        env = json.loads((abl_dir / "jobs" / job / "job.json").read_text())["full_env"]
        assert "VAL_DOC_FRACTION" not in env
    assert not (abl_dir / "jobs" / "bad").exists()  # the loser never ran on the full set
    # the promoted variant's figures are the full-set run's
    assert [r["name"] for r in d["variants"]] == ["good"] and d["promoted"] == "good"
    full = json.loads((abl_dir / "jobs" / "good" / "job.json").read_text())
    assert d["variants"][0]["val_bpb"] == pytest.approx(s["jobs"][-1]["result"]["final"]["val_bpb"])
    assert full["state"] == "SUCCEEDED"
    ablation_runs = [line.split()[0] for line in launches(tmp_path)[1:6]]  # after gate-a's one job
    assert ablation_runs == ["r1-baseline", "r1-bad", "r1-good", "baseline", "good"]

    before = len(launches(tmp_path))
    again = golfrun(tmp_path, "run-all", *HALVING, "--force", "ablation")
    assert again.exit_code == 0, again.output
    rerun = [line.split()[0] for line in launches(tmp_path)[before:before + 5]]
    assert rerun == ablation_runs  # --force ignores the job cache: the rung and the full set rerun


def test_survivors_by_hand() -> None:
    assert survivors_of({"a": 0.01, "b": -0.02, "c": 0.0}, 0.5) == ["b", "c"]  # ceil(1.5) = 2
    assert survivors_of({"a": 0.01, "b": -0.02, "c": 0.0}, 0.1) == ["b"]  # at least one
    assert survivors_of({"a": float("nan"), "b": 0.3}, 0.5) == ["b"]  # NaN is never better
    assert survivors_of({"x": 0.0, "a": 0.0}, 0.5) == ["a"]  # ties by name


@pytest.mark.parametrize("value", ["[0.5, 0.25]", "[1.0]", "[0.0]"])
def test_bad_fractions_are_refused(tmp_path: Path, campaign: Path, value: str) -> None:
    result = golfrun(tmp_path, "plan", "ablation", "--set", f"ablation.halving_fractions={value}")
    assert result.exit_code != 0 and "ablation.halving_fractions" in result.output
