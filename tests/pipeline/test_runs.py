"""Whole-campaign behaviour of the engine through the CLI, with the instant fake trainer
(tests/fixtures/pipeline_trainer.py: val_bpb = 2.0 + 0.001·seed + FAKE_DELTA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from golfrun.cli import main
from tests.fixtures.pipeline_campaign import launches, write_campaign


def golfrun(tmp: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--campaign", str(tmp / "campaign.toml"), "--runs-dir", str(tmp / "runs")])


def summary(tmp: Path, folder: str) -> dict:
    return json.loads((tmp / "runs" / "t" / folder / "summary.json").read_text())


def verdicts(tmp: Path) -> dict[str, str]:
    out = {}
    for folder in sorted((tmp / "runs" / "t").glob("0*-*")):
        path = folder / "summary.json"
        if path.exists():
            out[folder.name[3:]] = json.loads(path.read_text())["verdict"]
    return out


def test_full_run_passes_then_rerun_launches_nothing(tmp_path: Path, campaign: Path) -> None:
    first = golfrun(tmp_path, "run-all")
    assert first.exit_code == 0, first.output
    assert verdicts(tmp_path) == {s: "PASS" for s in ("verify-pod", "download-data", "gate-a", "ablation", "gate-b", "preserve")}
    # gate-a, ablation baseline + 2 variants, gate-b 2 seeds: seed 0 of an eval-only variant is the
    # ablation's own run of it (same checkpoint, same env), so it is reused, not paid for twice
    assert len(launches(tmp_path)) == 1 + 3 + 2
    abl = summary(tmp_path, "03-ablation")
    assert abl["decision"]["promoted"] == "good"
    rows = {r["name"]: r for r in abl["decision"]["variants"]}
    assert rows["good"]["delta_bpb"] == pytest.approx(-0.01)  # variant − baseline: negative = better
    assert rows["bad"]["delta_bpb"] == pytest.approx(+0.01)
    gate_b = summary(tmp_path, "04-gate-b")
    assert gate_b["decision"]["variant_env"] == {"FAKE_DELTA": "-0.01"}  # flowed in, nobody copied it
    modes = {j["name"]: j["result"]["mode"] for j in gate_b["jobs"]}
    assert modes == {"seed0": "eval_only", "seed1": "train", "seed2": "train"}  # seed 0 reuses gate-a's checkpoint
    seed0 = next(j for j in gate_b["jobs"] if j["name"] == "seed0")
    assert seed0["cached"] and "reused from ablation" in seed0["reason"]

    again = golfrun(tmp_path, "run-all")
    assert again.exit_code == 0, again.output
    assert len(launches(tmp_path)) == 6  # no trainer job started
    assert again.output.count("(cached:") == 5  # all but verify-pod, which checks the machine every time
    assert "verify-pod: running (it checks the machine itself, on every run)" in again.output


def test_impossible_tolerance_kills_gate_a_skips_downstream_and_preserves(tmp_path: Path, campaign: Path) -> None:
    result = golfrun(tmp_path, "run-all", "--set", "gate_a.bpb_tolerance=-100")
    assert result.exit_code == 10, result.output  # KILL
    v = verdicts(tmp_path)
    assert v["gate-a"] == "KILL" and v["ablation"] == "SKIPPED" and v["gate-b"] == "SKIPPED"
    assert v["preserve"] == "PASS"
    assert (tmp_path / "runs" / "t" / "05-preserve" / "t-preserve.tar.gz").exists()
    assert summary(tmp_path, "03-ablation")["reasons"] == ["gate-a is KILL"]
    check = next(c for c in summary(tmp_path, "02-gate-a")["checks"] if c["name"] == "val_bpb")
    assert check["passed"] is False and check["limit"] == pytest.approx(2.0 - 100)
    assert len(launches(tmp_path)) == 1  # only gate-a's job ran


def test_hold_then_decide_continues_the_campaign(tmp_path: Path, campaign: Path) -> None:
    grey = ["--set", "ablation.promote_delta_bpb=-0.05", "--set", "ablation.hold_delta_bpb=-0.005"]
    held = golfrun(tmp_path, "run-all", *grey)
    assert held.exit_code == 11, held.output  # HOLD
    v = verdicts(tmp_path)
    assert v["ablation"] == "HOLD" and v["gate-b"] == "SKIPPED" and v["preserve"] == "PASS"
    assert "golfrun decide ablation" in summary(tmp_path, "04-gate-b")["reasons"][0]

    bad = CliRunner().invoke(main, ["decide", "ablation", "--promote", "nope", "--reason", "x", "--campaign",
                                    str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs"), *grey])
    assert bad.exit_code == 2 and "not a variant" in bad.output and "good" in bad.output

    decided = CliRunner().invoke(main, ["decide", "ablation", "--promote", "good", "--reason", "worth 3 seeds",
                                        "--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs"), *grey])
    assert decided.exit_code == 0, decided.output
    abl = summary(tmp_path, "03-ablation")
    assert abl["verdict"] == "PASS" and abl["human_decision"]["reason"] == "worth 3 seeds"
    assert abl["human_decision"]["previous_verdict"] == "HOLD"

    n = len(launches(tmp_path))
    resumed = golfrun(tmp_path, "run-all", *grey)
    assert resumed.exit_code == 0, resumed.output
    assert "ablation: PASS (cached" in resumed.output  # not rerun: the decision stands
    gate_b = summary(tmp_path, "04-gate-b")
    assert gate_b["verdict"] == "PASS" and gate_b["decision"]["chosen_by"].startswith("a person")
    assert len(launches(tmp_path)) == n + 2  # seeds 1 and 2; seed 0 is the ablation's run of "good"


def test_decide_kill_stops_the_campaign(tmp_path: Path, campaign: Path) -> None:
    grey = ["--set", "ablation.promote_delta_bpb=-0.05", "--set", "ablation.hold_delta_bpb=-0.005"]
    assert golfrun(tmp_path, "run-all", *grey).exit_code == 11
    killed = CliRunner().invoke(main, ["decide", "ablation", "--kill", "--reason", "not worth it", "--campaign",
                                       str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs"), *grey])
    assert killed.exit_code == 0, killed.output
    again = golfrun(tmp_path, "run-all", *grey)
    assert again.exit_code == 10
    assert verdicts(tmp_path)["gate-b"] == "SKIPPED"


def test_trainer_crash_is_error_with_log_tail_never_pass(tmp_path: Path, shared_data: Path) -> None:
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_CRASH": "1"})
    result = golfrun(tmp_path, "run-all")
    assert result.exit_code == 12, result.output
    gate_a = summary(tmp_path, "02-gate-a")
    assert gate_a["verdict"] == "ERROR"
    text = "\n".join(gate_a["reasons"])
    assert "fake trainer blew up on purpose" in text  # the log's tail
    assert "exit 3" in text or "exit code 3" in text
    assert gate_a["jobs"][0]["state"] == "FAILED" and gate_a["jobs"][0]["result"] is None
    v = verdicts(tmp_path)
    assert v["ablation"] == "SKIPPED" and v["gate-b"] == "SKIPPED" and v["preserve"] != "SKIPPED"
    # an ERROR is never served from cache: the next run tries again
    n = len(launches(tmp_path))
    assert golfrun(tmp_path, "run-all").exit_code == 12
    assert len(launches(tmp_path)) == n + 1


def test_upstream_style_trainer_log_lines_only(tmp_path: Path, shared_data: Path) -> None:
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_LOG_ONLY": "1"})
    for stage in ("verify-pod", "download-data", "gate-a"):
        result = golfrun(tmp_path, stage)
        assert result.exit_code == 0, result.output
    gate_a = summary(tmp_path, "02-gate-a")
    job = gate_a["jobs"][0]["result"]
    assert job["source"] == "log"
    assert gate_a["decision"]["val_bpb"] == pytest.approx(2.0)
    assert gate_a["decision"]["val_loss"] == pytest.approx(5.0)
    assert gate_a["decision"]["artifact_bytes"] == 100000
    assert not (tmp_path / "runs" / "t" / "02-gate-a" / "jobs" / "seed0" / "results.json").exists()


def test_corrupted_summary_is_reported_then_rerun_cleanly(tmp_path: Path, campaign: Path) -> None:
    assert golfrun(tmp_path, "run-all").exit_code == 0
    path = tmp_path / "runs" / "t" / "02-gate-a" / "summary.json"
    path.write_text('{"schema": "golfrun.summary/1", "stage": "gate-a", "verd')  # cut off mid-write
    n = len(launches(tmp_path))

    downstream = golfrun(tmp_path, "ablation")
    assert downstream.exit_code == 12
    assert str(path) in downstream.output and "corrupted summary" in downstream.output

    status = golfrun(tmp_path, "status", "--json")
    rows = {r["stage"]: r for r in json.loads(status.output)["stages"]}
    assert rows["gate-a"]["verdict"] == "ERROR" and "corrupted" in rows["gate-a"]["figures"]

    rerun = golfrun(tmp_path, "run-all")
    assert rerun.exit_code == 0, rerun.output
    assert "02-gate-a/summary.json: corrupted summary" in rerun.output
    assert summary(tmp_path, "02-gate-a")["verdict"] == "PASS"
    assert list(path.parent.glob("summary.json.corrupt-*"))  # kept for a look, out of the way
    assert len(launches(tmp_path)) == n  # gate-a's job came from its folder; nothing retrained


def test_force_reruns_stage_and_downstream_only(tmp_path: Path, campaign: Path) -> None:
    assert golfrun(tmp_path, "run-all").exit_code == 0
    before = launches(tmp_path)
    forced = golfrun(tmp_path, "run-all", "--force", "gate-b")
    assert forced.exit_code == 0, forced.output
    new = launches(tmp_path)[len(before):]
    assert sorted(line.split()[0] for line in new) == ["seed1", "seed2"]  # seed 0: the ablation's run
    assert "gate-a: PASS (cached" in forced.output and "preserve: running" in forced.output


def test_config_change_reruns_only_what_depends_on_it(tmp_path: Path, campaign: Path) -> None:
    assert golfrun(tmp_path, "run-all").exit_code == 0
    n = len(launches(tmp_path))
    changed = golfrun(tmp_path, "run-all", "--set", "gate_b.mean_tolerance_bpb=0.02")
    assert changed.exit_code == 0, changed.output
    assert "gate-a: PASS (cached" in changed.output and "ablation: PASS (cached" in changed.output
    assert "gate-b: running (its inputs changed: config:gate_b)" in changed.output
    assert len(launches(tmp_path)) == n  # its jobs' inputs did not change: served from their folders
    assert all(j["cached"] for j in summary(tmp_path, "04-gate-b")["jobs"])


def test_dry_run_runs_nothing(tmp_path: Path, campaign: Path) -> None:
    result = golfrun(tmp_path, "run-all", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "[gate-a]" in result.output and "job seed0 (train, seed 0)" in result.output
    assert "SEED=0" in result.output and "pipeline_trainer.py" in result.output
    assert not (tmp_path / "runs").exists()
    assert launches(tmp_path) == []


def test_job_index_runs_one_job_and_writes_no_summary(tmp_path: Path, campaign: Path) -> None:
    for stage in ("verify-pod", "download-data", "gate-a", "ablation"):
        assert golfrun(tmp_path, stage).exit_code == 0
    plan = golfrun(tmp_path, "plan", "gate-b", "--json")
    jobs = json.loads(plan.output)["jobs"]
    assert [j["name"] for j in jobs] == ["seed1", "seed2"]  # seed 0 is the ablation's run of the variant
    n = len(launches(tmp_path))
    one = golfrun(tmp_path, "gate-b", "--job-index", "1")
    assert one.exit_code == 0, one.output
    assert [line.split()[0] for line in launches(tmp_path)[n:]] == ["seed2"]
    assert not (tmp_path / "runs" / "t" / "04-gate-b" / "summary.json").exists()
    whole = golfrun(tmp_path, "gate-b")
    assert whole.exit_code == 0, whole.output
    assert sorted(line.split()[0] for line in launches(tmp_path)[n:]) == ["seed1", "seed2"]
    cached = {j["name"]: j["cached"] for j in summary(tmp_path, "04-gate-b")["jobs"]}
    assert cached == {"seed0": True, "seed1": False, "seed2": True}
    bad = golfrun(tmp_path, "gate-b", "--job-index", "7")
    assert bad.exit_code == 2 and "indices 0..1" in bad.output


def test_stage_without_upstream_says_what_to_run(tmp_path: Path, campaign: Path) -> None:
    result = golfrun(tmp_path, "gate-b")
    assert result.exit_code == 12
    assert "run `golfrun" in result.output


def test_gate_b_statistics_match_hand_computation(tmp_path: Path, campaign: Path) -> None:
    """Welch's one-sided test on val_loss: variant 2.5·(1.99, 1.991, 1.992) vs reference (5.0, 5.0025, 5.005)."""
    assert golfrun(tmp_path, "run-all").exit_code == 0
    rt = summary(tmp_path, "04-gate-b")["decision"]["record_test"]
    # Equal sample variances s² = 0.0025², n = 3 each: se = sqrt(2·s²/3); t = (0.025 − 0.005)/se; df = 4.
    se = (2 * 0.0025**2 / 3) ** 0.5
    t = (0.025 - 0.005) / se
    # Student's t with 4 degrees of freedom: F(t) = 1/2 + (3/8)·u·(1 − u²/12) with u = t/sqrt(1 + t²/4).
    u = t / (1 + t * t / 4) ** 0.5
    p = 1 - (0.5 + 3 / 8 * u * (1 - u * u / 12))
    assert rt["t"] == pytest.approx(t, rel=1e-9)
    assert rt["df"] == pytest.approx(4.0, rel=1e-9)
    assert rt["p"] == pytest.approx(p, rel=1e-6)
    assert rt["passed"] is True
    stats = summary(tmp_path, "04-gate-b")["decision"]["val_bpb"]
    assert stats["mean"] == pytest.approx(1.991) and stats["std"] == pytest.approx(0.001)


def test_decide_baseline_reuses_gate_a_for_its_seed(tmp_path: Path, campaign: Path) -> None:
    grey = ["--set", "ablation.promote_delta_bpb=-0.05", "--set", "ablation.hold_delta_bpb=-0.005"]
    assert golfrun(tmp_path, "run-all", *grey).exit_code == 11
    decided = CliRunner().invoke(main, ["decide", "ablation", "--promote", "baseline", "--reason", "confirm the reproduction",
                                        "--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs"), *grey])
    assert decided.exit_code == 0, decided.output
    n = len(launches(tmp_path))
    assert golfrun(tmp_path, "run-all", *grey).exit_code == 0
    assert sorted(line.split()[0] for line in launches(tmp_path)[n:]) == ["seed1", "seed2"]
    gate_b = summary(tmp_path, "04-gate-b")
    assert gate_b["decision"]["variant"] == "baseline" and gate_b["decision"]["variant_env"] == {}
    seed0 = next(j for j in gate_b["jobs"] if j["name"] == "seed0")
    assert seed0["cached"] and "reused from gate-a" in seed0["reason"]
    assert gate_b["decision"]["val_bpb"]["mean"] == pytest.approx(2.001)
