"""The campaign's `[budget]` on the real single-node Slurm the tests start (tests/services): the
stage jobs decide on the cluster, so the budget is checked there, and the golfrun that follows the
chain on this side says why it stopped, with the exit code of a local run.

The pipeline's fake trainer (tests/fixtures/pipeline_trainer.py) prints only the record's log lines
and says it trained for 50 s (FAKE_LOG_ONLY, FAKE_TRAIN_MS): the ledger takes the trainer's clock
where it says more than the wall, so gate-a spends ~52 device-seconds although it ends at once. Its
own estimate before it starts is its job deadline (20 s, nothing measured yet), within the budget of
0.0111 device-hours (40 s); what it spent is not, so the ablation is not started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golfrun.summary import EXIT_BUDGET
from tests.fixtures.pipeline_campaign import launches, write_campaign
from tests.services.slurm import SlurmCluster
from tests.slurm.test_campaign_slurm import SETUP, golfrun, squeue_states, summary

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

BUDGET_HOURS = "0.0111"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from golfrun.data.synthetic import build_dataset

    root = tmp_path_factory.mktemp("slurm-budget-data")
    build_dataset(root)
    return root


def test_a_budget_that_gate_a_spent_stops_the_chain_before_the_ablation(slurm_cluster: SlurmCluster, data_dir: Path,
                                                                         tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, data_dir, trainer_env={"FAKE_LOG_ONLY": "1", "FAKE_TRAIN_MS": "50000"})
    runs = tmp_path / "runs"
    r = golfrun(["run-all", "--backend", "slurm", "--campaign", str(campaign), "--runs-dir", str(runs), "--set", SETUP,
                 "--set", "timeouts.gate_a_s=20", "--set", f"budget.gpu_hours={BUDGET_HOURS}"],
                tmp_path, slurm_cluster.env, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == EXIT_BUDGET, out + slurm_cluster.logs()
    # the message names the stage, the budget and what the campaign has used
    line = next(ln for ln in out.splitlines() if ln.startswith("ablation: not started: budget:"))
    assert f"of [budget] gpu_hours = {BUDGET_HOURS}" in line and "the campaign has used 0.01" in line, line
    cdir = runs / "t"
    # nothing done is lost: gate-a's PASS, its job's result and its checkpoint
    gate_a = summary(cdir, "02-gate-a")
    assert gate_a["verdict"] == "PASS" and gate_a["cpu_seconds_total"] > float(BUDGET_HOURS) * 3600
    assert (cdir / "02-gate-a" / "checkpoint" / "final_model.pt").is_file()
    assert summary(cdir, "00-verify-pod")["verdict"] == summary(cdir, "01-download-data")["verdict"] == "PASS"
    # the ablation never started a trainer job, wrote no summary (not even an ERROR one) and recorded why
    assert launches(tmp_path) == [ln for ln in launches(tmp_path) if "eval_only=False" in ln] and len(launches(tmp_path)) == 1
    assert not (cdir / "03-ablation" / "summary.json").exists() and not (cdir / "03-ablation" / "jobs").exists()
    stop = json.loads((cdir / "03-ablation" / "budget_stop.json").read_text())
    assert stop["schema"] == "golfrun.budget-stop/1" and stop["message"] in line
    # Slurm's own view: the ablation's array tasks exited 4, everything after them never ran, and no
    # sbatch came after the chain submitted at launch (every job Slurm knows is one of slurm.json's)
    state = json.loads((cdir / "slurm.json").read_text())
    states = squeue_states(slurm_cluster, state)
    assert states["ablation.tasks"] == "FAILED", states
    assert states["ablation"] == states["gate-b.tasks"] == states["gate-b"] == "CANCELLED", states
    assert states["gate-a"] == states["preserve"] == "COMPLETED", states
    ours = {j["job_id"] for j in state["jobs"]}
    known = set(slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%F").stdout.split())
    assert not {j for j in known if j not in ours and int(j) > min(int(i) for i in ours)}, (known, ours)


def test_a_campaign_that_has_spent_its_budget_submits_nothing(slurm_cluster: SlurmCluster, data_dir: Path,
                                                              tmp_path: Path) -> None:
    """gate-a ran here first (the local backend: ~52 device-seconds in the campaign folder's ledger); the
    Slurm chain of the same campaign, with a budget of 40 s, is refused on this side before any sbatch,
    with the local path's exit code and message form."""
    campaign = write_campaign(tmp_path, data_dir, trainer_env={"FAKE_LOG_ONLY": "1", "FAKE_TRAIN_MS": "50000"})
    runs = tmp_path / "runs"
    common = ["--campaign", str(campaign), "--runs-dir", str(runs)]
    for stage in ("verify-pod", "download-data", "gate-a"):
        r = golfrun([stage, *common], tmp_path, slurm_cluster.env)
        assert r.returncode == 0, r.stdout + r.stderr
    before = slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split()
    r = golfrun(["run-all", "--backend", "slurm", *common, "--set", SETUP, "--set", f"budget.gpu_hours={BUDGET_HOURS}"],
                tmp_path, slurm_cluster.env)
    out = r.stdout + r.stderr
    assert r.returncode == EXIT_BUDGET, out
    (line,) = [ln for ln in out.splitlines() if "budget:" in ln]
    used = float(line.split("the campaign has used ")[1].split()[0])
    assert used > float(BUDGET_HOURS) and f"of [budget] gpu_hours = {BUDGET_HOURS}: the Slurm chain not started " \
        "(raise the budget or plan fewer jobs)" in line, line
    # nothing reached Slurm: no job, no submission record, no sbatch script written
    assert slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split() == before
    cdir = runs / "t"
    assert not (cdir / "slurm.json").exists() and not (cdir / "slurm").exists()
    assert summary(cdir, "02-gate-a")["verdict"] == "PASS"  # what was done is kept
    # (a chain under a budget it has not spent is submitted: the test above)
