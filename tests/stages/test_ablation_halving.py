"""The ablation's successive halving, through the CLI with the instant fake trainer
(tests/fixtures/pipeline_trainer.py): variant "good" scores −0.01 BPB against the baseline, "bad"
+0.01. The fake's score does not depend on the validation subset, so what is tested is the mechanics:
which jobs run on which documents, who goes on, and where the promoted figures come from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from golfrun.cli import main
from golfrun.errors import TrainerResultError
from golfrun.stages.halving import chunk_deltas, survivors_of, worse_than_best
from golfrun.trainer.results import ChunkSums
from tests.fixtures.pipeline_campaign import TWIN_VARIANT as TWIN
from tests.fixtures.pipeline_campaign import launches, write_campaign

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


# The paired rule. A third variant, "twin", has good's delta and per-chunk noise of its own (sd 0.002 BPB,
# against good's 0.02 gap to bad): nothing says it is worse than good, so it goes on with it, where the rank
# rule with halving_keep = 0.3 (ceil(0.9) = 1 of 3) would keep one of the two.
KEEP_ONE = [*HALVING, "--set", "ablation.halving_keep=0.3"]
PAIRED = [*KEEP_ONE, "--set", 'ablation.halving_rule="paired"', "--set", "ablation.halving_chunks=16"]


def test_paired_rule_drops_only_the_variant_confidently_worse(tmp_path: Path, shared_data: Path) -> None:
    write_campaign(tmp_path, shared_data, extra=TWIN)
    result = golfrun(tmp_path, "run-all", *PAIRED)
    assert result.exit_code == 0, result.output
    abl_dir = tmp_path / "runs" / "t" / "03-ablation"
    d = json.loads((abl_dir / "summary.json").read_text())["decision"]
    [rung] = d["rungs"]
    assert (rung["rule"], rung["alpha"], rung["chunks"]) == ("paired", 0.05, 16)
    by_name = {v["name"]: v for v in rung["variants"]}
    assert d["dropped"] == ["bad"] and not by_name["bad"]["kept"]
    assert by_name["bad"]["p_worse_than_best"] < 1e-3  # worse on all 16 chunks (by the same 0.02: ties, so scipy
    # takes the normal approximation, 1.9e-4, not the exact 2^-16)
    best, other = sorted(("good", "twin"), key=lambda n: by_name[n]["delta_bpb"])
    assert by_name[best]["p_worse_than_best"] is None and by_name[other]["p_worse_than_best"] >= 0.05
    assert by_name["good"]["kept"] and by_name["twin"]["kept"]
    # only the rung jobs sum per chunk; the survivors' full-set runs are the ordinary ones
    for job in ("r1-baseline", "r1-good", "r1-twin", "r1-bad"):
        env = json.loads((abl_dir / "jobs" / job / "job.json").read_text())["full_env"]
        assert env["VAL_CHUNKS"] == "16"
    for job in ("baseline", "good", "twin"):
        env = json.loads((abl_dir / "jobs" / job / "job.json").read_text())["full_env"]
        assert "VAL_CHUNKS" not in env
    assert not (abl_dir / "jobs" / "bad").exists()


def test_rank_rule_on_the_same_variants_keeps_its_part(tmp_path: Path, shared_data: Path) -> None:
    """The default rule for contrast: ceil(0.3 × 3) = 1 goes on by delta, whatever the chunks would say."""
    write_campaign(tmp_path, shared_data, extra=TWIN)
    result = golfrun(tmp_path, "run-all", *KEEP_ONE)
    assert result.exit_code == 0, result.output
    d = json.loads((tmp_path / "runs" / "t" / "03-ablation" / "summary.json").read_text())["decision"]
    assert len(d["dropped"]) == 2 and "bad" in d["dropped"]
    assert d["rungs"][0]["rule"] == "rank" and d["rungs"][0]["keep"] == 0.3
    assert all("p_worse_than_best" not in v for v in d["rungs"][0]["variants"])


def test_paired_rule_needs_chunk_sums(tmp_path: Path, shared_data: Path) -> None:
    """A trainer that reports no chunk sums (here the fake told to print only the record's log lines) stops
    the stage with a message naming the job and the setting; the rung jobs stay done."""
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_LOG_ONLY": "1"})
    result = golfrun(tmp_path, "run-all", *PAIRED)
    assert result.exit_code != 0
    assert "ablation: ERROR: r1-baseline: its final score has no chunk sums" in result.output
    assert 'ablation.halving_rule = "paired"' in result.output
    job = json.loads((tmp_path / "runs" / "t" / "03-ablation" / "jobs" / "r1-good" / "job.json").read_text())
    assert job["state"] == "SUCCEEDED"


def test_worse_than_best_by_hand() -> None:
    worse = [0.01 + 0.001 * (i % 3) for i in range(10)]  # every chunk above the best
    noise = [(-1) ** i * 0.001 * (i + 1) for i in range(10)]  # as often below as above
    p = worse_than_best({"best": [0.0] * 10, "worse": worse, "noise": noise, "same": [0.0] * 10},
                        {"best": -0.02, "worse": 0.0, "noise": -0.019, "same": -0.02})
    assert p["best"] is None and p["same"] == 1.0  # a tie by name goes to "best"; identical chunks: no evidence
    assert p["worse"] == pytest.approx(2 ** -10) and p["noise"] > 0.3
    # chunks either side did not score (None) are left out of the pairs
    p = worse_than_best({"a": [None, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "b": [5.0] + [0.01] * 6}, {"a": 0.0, "b": 0.01})
    assert p["b"] == pytest.approx(2 ** -6)


def test_paired_settings_are_checked(tmp_path: Path, campaign: Path) -> None:
    for setting, name in (('ablation.halving_rule="vote"', "ablation.halving_rule"),
                          ("ablation.halving_alpha=0.9", "ablation.halving_alpha"),
                          ("ablation.halving_chunks=4", "ablation.halving_chunks")):
        result = golfrun(tmp_path, "plan", "ablation", "--set", setting)
        assert result.exit_code != 0 and name in result.output, result.output


def test_chunk_deltas_pair_only_chunks_scored_alike() -> None:
    """A chunk's delta counts only where the variant scored the same targets of it as its baseline: here the
    plain evaluator (baseline) left the last chunk's tail unscored and TTT (variant) did not."""
    ln2 = math.log(2)
    base = ChunkSums(nll=[2 * ln2 * 100, 2 * ln2 * 100, 2 * ln2 * 40], targets=[25, 25, 10], bytes=[100, 100, 40])
    ttt = ChunkSums(nll=[1.5 * ln2 * 100, 1.75 * ln2 * 100, 1.5 * ln2 * 100], targets=[25, 25, 25], bytes=[100, 100, 100])
    assert chunk_deltas({"baseline": base, "ttt": ttt}, {"ttt": "baseline"}) == {"ttt": [-0.5, -0.25, None]}
    short = ChunkSums(nll=[0.0], targets=[1], bytes=[1])
    with pytest.raises(TrainerResultError, match="different chunk counts"):
        chunk_deltas({"baseline": base, "x": short}, {"x": "baseline"})
