"""gate-b's sequential seed test and rule profiles, end to end through the CLI with the instant
fake trainer (tests/fixtures/pipeline_trainer.py: val_loss = 2.5·(2.0 + 0.001·seed + FAKE_DELTA);
the promoted variant "good" has FAKE_DELTA −0.01, so per-seed val_loss = 4.975 + 0.0025·seed against
the reference 5.0, 5.0025, 5.005)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from scipy.stats import norm
from scipy.stats import t as student

from golfrun.cli import main
from golfrun.gates.sequential import make_design
from golfrun.gates.stats import welch_one_sided
from tests.fixtures.pipeline_campaign import launches

SIX = ["--set", "gate_b.seeds=[0, 1, 2, 3, 4, 5]", "--set", "gate_b.wave_size=1", "--set", "gate_b.require_record=true"]
REFERENCE = [5.0, 5.0025, 5.005]


def golfrun(tmp: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--campaign", str(tmp / "campaign.toml"), "--runs-dir", str(tmp / "runs")])


def gate_b(tmp: Path) -> dict:
    return json.loads((tmp / "runs" / "t" / "04-gate-b" / "summary.json").read_text())


def launched_seeds(tmp: Path) -> set[int]:
    """Seeds gate-b started a trainer for (gate-a's seed 0 may be reused from the ablation's run)."""
    return {int(line.split()[0][4:]) for line in launches(tmp)[4:] if line.startswith("seed")}


def test_a_clear_improvement_stops_before_max_seeds(tmp_path: Path, campaign: Path) -> None:
    result = golfrun(tmp_path, "run-all", *SIX)
    assert result.exit_code == 0, result.output
    s = gate_b(tmp_path)
    d = s["decision"]
    assert s["verdict"] == "PASS" and d["outcome"] == "PASS"
    # look 1 at 2 seeds continues (t ≈ 11 is under the first O'Brien–Fleming boundary), look 2 at 3 passes
    assert [(lk["n"], lk["decision"]) for lk in d["looks"]] == [(2, "continue"), (3, "PASS")]
    assert d["seeds"] == [0, 1, 2] and d["seeds_not_run"] == [3, 4, 5]
    assert launched_seeds(tmp_path) & {3, 4, 5} == set()  # seeds 3, 4, 5 never started
    # every look can be recomputed from the summary alone: the design and the look's statistics
    design = make_design(d["design"]["alpha"], d["design"]["looks"], d["design"]["n_reference"],
                         d["design"]["futility_power"])
    assert list(design.z_bounds) == pytest.approx(d["design"]["z_bounds"], abs=1e-12)
    for lk in d["looks"]:
        losses = [r["val_loss"] for r in d["per_seed"]][: lk["n"]]
        w = welch_one_sided(losses, REFERENCE, 0.005, 0.01)
        assert (lk["t"], lk["df"], lk["p"]) == pytest.approx((w.t, w.df, w.p), rel=1e-9)
        assert lk["boundary"] == pytest.approx(float(student.isf(norm.sf(lk["z_boundary"]), lk["df_boundary"])))
        assert (lk["t"] > lk["boundary"]) == (lk["decision"] == "PASS")
    assert d["record_test"]["passed"] is True and d["record_test"]["rule"] == "record"
    looks_file = json.loads((tmp_path / "runs" / "t" / "04-gate-b" / "looks.json").read_text())
    assert looks_file["looks"] == d["looks"]
    # decided: nothing is left to plan (a Slurm wave array would run nothing)
    assert plan_seeds(tmp_path, *SIX) == []


def plan_seeds(tmp: Path, *args: str) -> list[int]:
    result = golfrun(tmp, "plan", "gate-b", "--json", *args)
    assert result.exit_code == 0, result.output
    return [job["seed"] for job in json.loads(result.output)["jobs"]]


def test_the_plan_is_the_first_unfinished_wave(tmp_path: Path, campaign: Path) -> None:
    at_margin = [*SIX, "--set", "gate_b.wave_size=2", "--set", "gate_b.record_margin_nats=0.022",
                 "--set", "gate_b.futility_power=0"]
    assert golfrun(tmp_path, "run-all", *at_margin).exit_code == 10  # KILL at the last look, 6 seeds
    assert plan_seeds(tmp_path, *at_margin) == []
    # two more pre-registered seeds: the looks at 2, 4 and 6 seeds (all cached) continue, so the
    # plan is the fourth wave, whole
    assert plan_seeds(tmp_path, *at_margin, "--set", "gate_b.seeds=[0, 1, 2, 3, 4, 5, 6, 7]") == [6, 7]


def test_a_rerun_after_a_crash_repeats_no_seed_and_keeps_every_look(tmp_path: Path, campaign: Path) -> None:
    assert golfrun(tmp_path, "run-all", *SIX).exit_code == 0
    before = gate_b(tmp_path)["decision"]["looks"]
    started = len(launches(tmp_path))
    (tmp_path / "runs" / "t" / "04-gate-b" / "summary.json").unlink()  # died before the summary was written
    again = golfrun(tmp_path, "gate-b", *SIX)
    assert again.exit_code == 0, again.output
    assert len(launches(tmp_path)) == started  # no seed ran again
    assert gate_b(tmp_path)["decision"]["looks"] == before


def test_an_improvement_at_the_margin_runs_to_max_seeds(tmp_path: Path, campaign: Path) -> None:
    # margin 0.022 against a true improvement of ≈ 0.025: never shown at α = 0.01; no futility stop
    args = [*SIX, "--set", "gate_b.record_margin_nats=0.022", "--set", "gate_b.futility_power=0"]
    result = golfrun(tmp_path, "run-all", *args)
    assert result.exit_code == 10, result.output  # KILL
    d = gate_b(tmp_path)["decision"]
    assert [lk["n"] for lk in d["looks"]] == [2, 3, 4, 5, 6]
    assert [lk["decision"] for lk in d["looks"]] == ["continue"] * 4 + ["KILL"]
    assert d["seeds_not_run"] == [] and launched_seeds(tmp_path) >= {1, 2, 3, 4, 5}
    assert all(lk["futility_boundary"] is None for lk in d["looks"][:-1])


def test_futility_stops_a_variant_that_trails(tmp_path: Path, campaign: Path) -> None:
    # a margin of 0.04 nats against an improvement of ≈ 0.025: hopeless after two seeds
    result = golfrun(tmp_path, "run-all", *SIX, "--set", "gate_b.record_margin_nats=0.04")
    assert result.exit_code == 10, result.output
    d = gate_b(tmp_path)["decision"]
    assert [(lk["n"], lk["decision"]) for lk in d["looks"]] == [(2, "KILL")]
    assert "futility" in d["looks"][0]["reason"]
    assert d["looks"][0]["t"] < d["looks"][0]["futility_boundary"]
    assert launched_seeds(tmp_path) & {2, 3, 4, 5} == set()


def test_the_fixed_design_is_the_plain_record_test(tmp_path: Path, campaign: Path) -> None:
    result = golfrun(tmp_path, "run-all", "--set", "gate_b.require_record=true")
    assert result.exit_code == 0, result.output
    d = gate_b(tmp_path)["decision"]
    assert [lk["n"] for lk in d["looks"]] == [3] and d["design"]["z_bounds"] == pytest.approx([2.3263479])
    w = welch_one_sided([4.975, 4.9775, 4.98], REFERENCE, 0.005, 0.01)
    assert d["looks"][0]["p"] == pytest.approx(w.p) and d["looks"][0]["df_boundary"] == pytest.approx(w.df)
    assert d["record_test"]["p_boundary"] == pytest.approx(0.01)


def test_frontier_and_target_rules_with_pooled_reference(tmp_path: Path, campaign: Path) -> None:
    pooled = ["--set", "gate_b.extra_reference_val_loss=[5.001, 5.003]",
              "--set", "gate_b.extra_reference_label=a third-party reproduction"]
    result = golfrun(tmp_path, "run-all", "--set", "gate_b.rule=frontier", "--set", "gate_b.require_record=true",
                     *pooled)
    assert result.exit_code == 0, result.output
    d = gate_b(tmp_path)["decision"]
    assert d["rule"]["name"] == "frontier" and d["rule"]["alpha"] == 0.25 and d["rule"]["margin_nats"] == 0.0
    assert d["reference_sample"]["n"] == 5
    assert d["reference_sample"]["extra"] == {"label": "a third-party reproduction", "val_loss": [5.001, 5.003]}
    assert d["design"]["n_reference"] == 5
    w = welch_one_sided([4.975, 4.9775, 4.98], [*REFERENCE, 5.001, 5.003], 0.0, 0.25)
    assert d["looks"][0]["t"] == pytest.approx(w.t)

    target = golfrun(tmp_path, "gate-b", "--set", "gate_b.rule=target", "--set", "gate_b.target_val_loss=4.97",
                     "--set", "gate_b.require_record=true")
    assert target.exit_code == 10, target.output  # mean 4.9775 is not below 4.97
    d = gate_b(tmp_path)["decision"]
    assert d["rule"]["name"] == "target" and d["design"]["n_reference"] == 0
    assert d["looks"][-1]["t"] < 0


@pytest.mark.parametrize("args, message", [
    (["--set", "gate_b.wave_size=1"], "set gate_b.require_record = true"),
    (["--set", "gate_b.max_seeds=4"], "pre-register at least max_seeds seeds"),
    (["--set", "gate_b.rule=target"], "needs gate_b.target_val_loss"),
    (["--set", "gate_b.extra_reference_val_loss=[5.0, 5.1]"], "go together"),
])
def test_inconsistent_gate_b_keys_are_refused(tmp_path: Path, campaign: Path, args: list[str], message: str) -> None:
    result = golfrun(tmp_path, "plan", "gate-b", *args)
    assert result.exit_code != 0
    assert message in result.output
