"""The backend stages use INSIDE a Slurm allocation: each trainer job is an `srun` step.

`srun --nodes=N --ntasks-per-node=P --ntasks=N*P [flags] python srun_rank.py -- python train_gpt.py`:
one task per GPU, every task mapped to RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT by the
rank wrapper (golfrun/backends/srun_rank.py), so it is multi-node aware. Extra srun flags — the
pyxis container (`--container-image`, …) — come from GOLFRUN_SRUN_ARGS (a JSON list) that the
generated sbatch script exports. `GOLFRUN_SRUN_LAUNCHER=torchrun` (e.g. exported by a campaign
`setup` line) starts one task per node instead, each running `torch.distributed.run` for the node's
processes. Everything else (job folder, job.json, log, caching, cancel) is
the local backend's: the stage process runs on the allocation's first node like a local run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from golfrun.backends.base import Job
from golfrun.backends.local import LocalBackend
from golfrun.errors import BackendError

SRUN_ARGS_ENV = "GOLFRUN_SRUN_ARGS"
NODES_ENV = "GOLFRUN_SRUN_NODES"  # nodes per trainer job (the stage's allocation), set by the sbatch script
PYTHON_ENV = "GOLFRUN_SRUN_PYTHON"
LAUNCHER_ENV = "GOLFRUN_SRUN_LAUNCHER"  # "tasks" (default: one srun task per process) | "torchrun" (one per node)  # the trainer's interpreter on the compute side (e.g. in a container)


def rank_wrapper_path() -> Path:
    return Path(__file__).with_name("srun_rank.py")


def srun_args_from_env(env: dict[str, str] | None = None) -> list[str]:
    raw = (env if env is not None else os.environ).get(SRUN_ARGS_ENV, "")
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        raise BackendError(f"{SRUN_ARGS_ENV} is not a JSON list: {raw!r}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BackendError(f"{SRUN_ARGS_ENV} must be a JSON list of strings, got {raw!r}")
    return value


class SrunBackend(LocalBackend):
    name = "srun"
    poll_interval_s = 5.0  # the trainer runs across the allocation; no need to look often
    # The tasks run under slurmstepd, not under golfrun: a killed srun would leave them running.
    # Two SIGINTs make srun SIGKILL every task and end the step (docs/slurm.md).
    orphan_signal = "INT"
    orphan_grace_s = 10.0

    def __init__(self, python: str | None = None, srun_args: list[str] | None = None, **kw: object) -> None:
        env_python = os.environ.get(PYTHON_ENV)
        super().__init__(python=python or env_python or sys.executable, **kw)  # type: ignore[arg-type]
        self.srun_args = srun_args if srun_args is not None else srun_args_from_env()
        self.nodes = int(os.environ.get(NODES_ENV, "0") or 0)  # 0 = as the job asks
        self.launcher = os.environ.get(LAUNCHER_ENV, "") or "tasks"
        if self.launcher not in ("tasks", "torchrun"):
            raise BackendError(f"{LAUNCHER_ENV}={self.launcher!r}: expected 'tasks' or 'torchrun'")

    def command(self, job: Job) -> list[str]:
        if job.nodes < 1 or job.nproc_per_node < 1:
            raise BackendError(f"job {job.name}: nodes and nproc_per_node must be >= 1")
        if "SLURM_JOB_ID" not in os.environ:
            raise BackendError(f"job {job.name}: the srun backend runs inside a Slurm job (no SLURM_JOB_ID here)")
        nodes = self.nodes or job.nodes
        per_node = 1 if self.launcher == "torchrun" else job.nproc_per_node
        wrapper = [str(rank_wrapper_path())]
        if self.launcher == "torchrun":
            wrapper += ["--torchrun", str(job.nproc_per_node)]
        return [
            "srun",
            f"--nodes={nodes}",
            f"--ntasks={nodes * per_node}",
            f"--ntasks-per-node={per_node}",
            "--kill-on-bad-exit=1",
            f"--job-name={job.name}",
            *self.srun_args,
            self.python,
            *wrapper,
            "--",
            self.python,
            job.script,
        ]

    def environment(self, job: Job) -> dict[str, str]:
        env = super().environment(job)
        env.setdefault("MASTER_ADDR", _first_host())
        return env


def _first_host() -> str:
    from golfrun.backends.srun_rank import first_host

    try:
        return first_host(os.environ.get("SLURM_JOB_NODELIST", ""))
    except (SystemExit, OSError, subprocess.SubprocessError):
        return ""  # the wrapper works it out per task instead
