"""The campaign budget and `golfrun spend`, with the pipeline's fake trainer on this CPU machine
(its jobs hold processes, so the budget counts process-hours here as it counts GPU-hours on a
GPU): a stage that would pass `[budget]` is not started (exit 4, its old summary untouched), the
estimate comes from what earlier jobs of the campaign measured, and `spend` lists every campaign
under a runs folder, a RunPod campaign with its pods' own cost."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from golfrun.backends.runpod import pods
from golfrun.cli import main
from golfrun.summary import EXIT_BUDGET
from tests.fixtures.pipeline_campaign import write_campaign


def cli(tmp: Path, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, [*args, "--campaign", str(tmp / "campaign.toml"), "--runs-dir", str(tmp / "runs")])
    return r.exit_code, r.output


def test_a_stage_past_the_budget_is_not_started(tmp_path: Path, shared_data: Path) -> None:
    write_campaign(tmp_path, shared_data)
    code, out = cli(tmp_path, "run-all")
    assert code == 0, out
    gate_b = tmp_path / "runs" / "t" / "04-gate-b" / "summary.json"
    before = gate_b.read_text()
    launches = (tmp_path / "launches.txt").read_text().count("\n")

    code, out = cli(tmp_path, "run-all", "--force", "gate-b", "--set", "budget.gpu_hours=0.000001")
    assert code == EXIT_BUDGET, out
    out = out.splitlines()[-1]
    assert re.search(r"gate-b plans [1-9] job\(s\) not in cache", out), out  # its first wave, or all seeds and "[budget] gpu_hours = 1e-06" in out
    assert "mean of gate-b's" in out  # the estimate is what gate-b's own jobs measured
    assert "not started" in out
    assert gate_b.read_text() == before and (tmp_path / "launches.txt").read_text().count("\n") == launches

    # a Slurm array task (`--job-index`) holds to the budget as its stage does
    code, out = cli(tmp_path, "gate-b", "--job-index", "0", "--set", "budget.gpu_hours=0.000001",
                    "--set", "trainer_env.FAKE_OTHER=1")
    assert code == EXIT_BUDGET and "job(s) not in cache" in out and "gate-b not started" in out, out
    assert (tmp_path / "launches.txt").read_text().count("\n") == launches

    # a budget that covers it lets the stage run; cached jobs cost nothing in the estimate
    code, out = cli(tmp_path, "run-all", "--set", "budget.gpu_hours=100")
    assert code == 0, out


def test_usd_budget_uses_the_price_per_gpu_hour(tmp_path: Path, shared_data: Path) -> None:
    write_campaign(tmp_path, shared_data)
    code, out = cli(tmp_path, "run-all", "--set", "budget.usd=0.01", "--set", "usd_per_gpu_hour=100000")
    assert code == EXIT_BUDGET, out
    # nothing measured yet: the job's time limit bounds it
    assert "no job measured yet" in out and "USD at 100000.00 USD/GPU-hour" in out and "[budget] usd = 0.01" in out


def test_spend_lists_every_campaign_with_its_pods(tmp_path: Path, shared_data: Path) -> None:
    write_campaign(tmp_path, shared_data)
    assert cli(tmp_path, "run-all")[0] == 0
    pod_campaign = tmp_path / "runs" / "podcamp"
    record = pods.PodRecord(campaign="podcamp", name="golfrun-podcamp-abc123", pod_id="p2", cost_per_hr=2.0,
                            running_since_epoch=1000.0, ended_at="1970-01-01T00:46:40Z",  # 1800 s at 2 USD/h
                            earlier_pods=[{"pod_id": "p1", "cost_usd": 0.25, "end_reason": "re-roll: verify-pod"}])
    pods.save_record(pod_campaign, record)
    r = CliRunner().invoke(main, ["spend", "--json", "--runs-dir", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    rows = {row["campaign"]: row for row in json.loads(r.output)}
    assert rows["podcamp"]["usd"] == 1.25 and rows["podcamp"]["pods"] == 2 and rows["podcamp"]["usd_source"] == "pods"
    assert rows["t"]["cpu_seconds"] > 0 and rows["t"]["usd"] is None and len(rows["t"]["stages"]) == 6
    text = CliRunner().invoke(main, ["spend", "--runs-dir", str(tmp_path / "runs")]).output
    assert "podcamp" in text and "1.25" in text and text.splitlines()[-1].startswith("total")
