"""A sequential gate-b on a real single-node Slurm (tests/services), with the pipeline's instant fake
trainer (tests/fixtures/pipeline_trainer.py: per-seed val_loss 4.975 + 0.0025·seed for the promoted
variant against the reference 5.0, 5.0025, 5.005): one job array and one aggregation job per wave;
the aggregation job decides or submits the next wave, and preserve runs once, at the end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.pipeline_campaign import write_campaign
from tests.services.slurm import SlurmCluster
from tests.slurm.test_campaign_slurm import SETUP, data_dir, golfrun, summary  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SEQUENTIAL = ["--set", "gate_b.seeds=[0, 1, 2, 3, 4, 5]", "--set", "gate_b.require_record=true"]


def jobs_named(cluster: SlurmCluster, name: str) -> list[str]:
    """"<job id>|<state>" of every Slurm job of that name (an array counts once), as squeue shows them."""
    r = cluster.run("squeue", "-h", "-t", "all", "-n", name, "-o", "%F|%T")
    return sorted(set(line.strip() for line in r.stdout.splitlines() if line.strip()))


def run_all(cluster: SlurmCluster, tmp: Path, data: Path, name: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    campaign = write_campaign(tmp, data)
    runs = tmp / "runs"
    r = golfrun(["run-all", "--backend", "slurm", "--campaign", str(campaign), "--runs-dir", str(runs),
                 "--set", SETUP, "--set", f'name="{name}"', *SEQUENTIAL, *extra], tmp, cluster.env, timeout=600)
    return r, runs / name


def test_waves_stop_before_max_seeds(slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path) -> None:
    r, cdir = run_all(slurm_cluster, tmp_path, data_dir, "waves-stop", "--set", "gate_b.wave_size=1")
    assert r.returncode == 0, r.stdout + r.stderr + slurm_cluster.logs()
    gate_b = summary(cdir, "04-gate-b")
    assert gate_b["verdict"] == "PASS"
    assert [(lk["n"], lk["decision"]) for lk in gate_b["decision"]["looks"]] == [(2, "continue"), (3, "PASS")]
    assert gate_b["decision"]["seeds_not_run"] == [3, 4, 5]
    ran = sorted(p.name for p in (cdir / "04-gate-b" / "jobs").iterdir() if not p.name.startswith("."))
    # seed 0 is the ablation's run of the promoted eval-only variant (reused, no job); seeds 3, 4, 5
    # never started
    assert ran == ["seed1", "seed2"]
    # the first wave (seed 0) is done before it starts, so two waves of one seed: two arrays and two
    # aggregation jobs; preserve once, after the last
    assert len(jobs_named(slurm_cluster, "waves-stop.04-gate-b.tasks")) == 2
    assert len(jobs_named(slurm_cluster, "waves-stop.04-gate-b")) == 2
    preserve = jobs_named(slurm_cluster, "waves-stop.05-preserve")
    assert len(preserve) == 1 and preserve[0].endswith("|COMPLETED")
    assert summary(cdir, "05-preserve")["verdict"] == "PASS"
    assert summary(cdir, "05-preserve")["finished_at"] >= gate_b["finished_at"]


def test_waves_run_to_max_seeds(slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path) -> None:
    r, cdir = run_all(slurm_cluster, tmp_path, data_dir, "waves-max", "--set", "gate_b.wave_size=2",
                      "--set", "gate_b.record_margin_nats=0.022", "--set", "gate_b.futility_power=0")
    assert r.returncode == 10, r.stdout + r.stderr + slurm_cluster.logs()  # KILL at the last look
    gate_b = summary(cdir, "04-gate-b")
    assert [(lk["n"], lk["decision"]) for lk in gate_b["decision"]["looks"]] == [
        (2, "continue"), (4, "continue"), (6, "KILL")]
    assert gate_b["decision"]["seeds_not_run"] == []
    assert len(jobs_named(slurm_cluster, "waves-max.04-gate-b.tasks")) == 3
    preserve = jobs_named(slurm_cluster, "waves-max.05-preserve")
    assert len(preserve) == 1 and preserve[0].endswith("|COMPLETED")
    assert summary(cdir, "05-preserve")["verdict"] == "PASS"
