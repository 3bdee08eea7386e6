"""The learning-curve early abort on a real single-node Slurm (tests/services): the ablation's trained
variants run as a job array, each trainer an srun step, so the srun backend (the local backend's
output reader, inside the allocation) is what watches the train loss and stops the step. With the
pipeline's instant fake trainer (tests/fixtures/pipeline_trainer.py: train loss 8, 7, 6 at steps 1-3,
plus FAKE_LOSS_DELTA), a variant 1 nat behind gate-a is stopped at step 2 while it waits on
FAKE_BLOCK_FILE; its array task still ends COMPLETED, and the aggregating stage job serves the abort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.pipeline_campaign import write_campaign
from tests.services.slurm import SlurmCluster
from tests.slurm.test_campaign_slurm import SETUP, data_dir, golfrun, squeue_states, summary  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_a_trailing_trained_variant_is_aborted_inside_the_allocation(slurm_cluster: SlurmCluster, data_dir: Path,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.write_text("")  # "behind" waits here (at most 2 minutes) until the watch stops it
    campaign = write_campaign(tmp_path, data_dir)
    variants = (f'ablation.variants=[{{name="behind", env={{FAKE_LOSS_DELTA="1.0", FAKE_BLOCK_FILE="{block}"}}}}, '
                '{name="good", env={FAKE_DELTA="-0.01"}}]')
    sets = [SETUP, 'verify_pod.required_packages=["torch"]', "ablation.mode=train", variants,
            "ablation.abort_at_steps=[2]", "ablation.abort_margin_nats=0.5"]
    runs = tmp_path / "runs"
    r = golfrun(["run-all", "--backend", "slurm", "--campaign", str(campaign), "--runs-dir", str(runs),
                 *[a for s in sets for a in ("--set", s)]], tmp_path, slurm_cluster.env)
    cdir = runs / "t"
    assert r.returncode == 0, r.stdout + r.stderr + slurm_cluster.logs()
    abl = summary(cdir, "03-ablation")
    assert abl["verdict"] == "PASS" and abl["decision"]["promoted"] == "good"
    [aborted] = abl["decision"]["aborted"]
    assert (aborted["name"], aborted["step"], aborted["observed_loss"], aborted["reference_loss"]) == ("behind", 2, 8.0, 7.0)
    jobs = {j["name"]: j for j in abl["jobs"]}
    assert jobs["behind"]["state"] == "ABORTED" and jobs["behind"]["cached"]  # the array task's abort, served
    behind = cdir / "03-ablation" / "jobs" / "behind"
    assert json.loads((behind / "job.json").read_text())["backend"] == "srun"
    assert json.loads((behind / "abort.json").read_text())["step"] == 2
    assert "3/3 train_loss" in (behind / "job.log").read_text() and not (behind / "results.json").exists()
    states = squeue_states(slurm_cluster, json.loads((cdir / "slurm.json").read_text()))
    assert set(states.values()) == {"COMPLETED"}, states  # an abort is no failed array task
    assert summary(cdir, "04-gate-b")["verdict"] == "PASS"
