"""The "add a job backend" recipe of docs/architecture.md, walked: a toy backend (one class in this
module + one `register` call) runs the tiny fake-trainer campaign end to end.

The toy runs each job to completion inside `submit`, through the one place that runs commands
(golfrun/transport/local.py), and records what it did in `toy.json` beside the job. Nothing in
golfrun knows its name: the engine, the stages and `--dry-run` reach it through the registry.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from golfrun.backends import base
from golfrun.backends.base import BackendHooks, Job, JobHandle, JobState, JobStatus
from golfrun.campaign import Campaign, load_campaign
from golfrun.fileio import write_json_atomic
from golfrun.transport import local as transport
from tests.fixtures.pipeline_campaign import launches


class ToyBackend:
    """Runs a job synchronously in `submit`; `poll` then reports what happened."""

    name = "toy"
    poll_interval_s = 0.01

    def __init__(self, python: str) -> None:
        self.python = python
        self.statuses: dict[str, JobStatus] = {}
        self.prepared: list[Path] = []

    @classmethod
    def from_campaign(cls, campaign: Campaign, hooks: BackendHooks) -> "ToyBackend":
        return cls(python=campaign.backend.local.python or sys.executable)

    def prepare(self, workdir: Path) -> None:
        self.prepared.append(Path(workdir))  # nothing of a toy job outlives its submit

    def command(self, job: Job) -> list[str]:
        return [self.python, "-u", job.script]  # -u: how the plan tells the toy from the local backend

    def submit(self, job: Job) -> JobHandle:
        workdir = Path(job.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        env = {**job.env, "ARTIFACT_DIR": str(workdir)}
        done = transport.run(self.command(job), cwd=workdir, env=env, timeout_s=job.time_limit_s or 60.0, check=False)
        (workdir / job.log_name).write_text(done.stdout + done.stderr, encoding="utf-8")
        handle = JobHandle(self.name, f"toy-{len(self.statuses)}", job)
        state = JobState.SUCCEEDED if done.returncode == 0 else JobState.FAILED
        self.statuses[handle.id] = JobStatus(state, "" if done.returncode == 0 else f"exit code {done.returncode}",
                                             done.returncode, [handle.id])
        write_json_atomic(workdir / "toy.json", {"argv": self.command(job), "exit_code": done.returncode})
        return handle

    def poll(self, handle: JobHandle) -> JobStatus:
        return self.statuses[handle.id]

    def fetch(self, handle: JobHandle) -> str:
        return handle.job.workdir

    def cancel(self, handle: JobHandle) -> None:
        pass


@pytest.fixture
def toy_registered() -> Iterator[None]:
    base.register("toy", ToyBackend.from_campaign)  # the recipe's one registry line
    yield
    base.REGISTRY.pop("toy", None)


def test_a_registered_toy_backend_runs_the_tiny_campaign(tmp_path: Path, campaign: Path, toy_registered: None) -> None:
    from golfrun.pipeline import views
    from golfrun.runners.local import make_engine

    loaded = load_campaign(str(campaign))
    cdir = tmp_path / "runs" / loaded.name
    lines: list[str] = []
    engine = make_engine(loaded, cdir, lines.append, job_backend="toy")

    plan = views.plan_lines(engine, ["gate-a"])
    assert any(line.strip().startswith("command ") and line.strip().endswith(f"-u {loaded.trainer}") for line in plan), plan

    assert engine.run_all() == 0, "\n".join(lines)
    verdicts = {s: json.loads((cdir / folder / "summary.json").read_text())["verdict"]
                for s, folder in [("gate-a", "02-gate-a"), ("ablation", "03-ablation"), ("gate-b", "04-gate-b")]}
    assert verdicts == {"gate-a": "PASS", "ablation": "PASS", "gate-b": "PASS"}
    ran = []  # every job the stages ran (a gate-b seed may reuse an upstream result instead)
    for folder in ("02-gate-a", "03-ablation", "04-gate-b"):
        jobs = [j for j in json.loads((cdir / folder / "summary.json").read_text())["jobs"] if not j["cached"]]
        assert jobs and {j["backend"] for j in jobs} == {"toy"}
        assert all(j["backend_ids"][0].startswith("toy-") for j in jobs)
        for job in jobs:
            assert json.loads((cdir / folder / "jobs" / job["name"] / "toy.json").read_text())["exit_code"] == 0
        ran += jobs
    assert len(launches(tmp_path)) == len(ran) >= 5  # gate-a, the ablation's 3, gate-b's new seeds


def test_an_unknown_job_backend_is_an_error_naming_the_known_ones(campaign: Path) -> None:
    from golfrun.errors import CampaignError

    with pytest.raises(CampaignError, match="job backend 'nope': unknown; known: .*local.*srun"):
        base.create("nope", load_campaign(str(campaign)))
