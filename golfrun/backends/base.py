"""DESIGN contract 2: a job is plain data; a job backend runs it.

A job backend is where ONE trainer job runs (a subprocess or torchrun here, an srun step inside a
Slurm allocation). Its verbs: `prepare` (make a job folder safe to clean: stop leftovers),
`command` (the argv it would run; --dry-run shows it), `submit`, `poll`, `fetch`, `cancel`.
Backends never look at results beyond bringing files back; stages decide. `wait` is the one shared
loop, with a deadline.

Where a whole campaign's control runs (this machine, a chain of Slurm jobs, a pod) is the other
contract: the campaign runner (golfrun/runners/base.py).

Adding a job backend = one module with a class that has these verbs and a
`from_campaign(campaign, hooks)` constructor, plus one line in `REGISTRY` below (and its settings'
section in golfrun/campaign/schema.py when it has settings).
"""

from __future__ import annotations

import enum
import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from golfrun.errors import BackendError, CampaignError
from golfrun.trainer.curve_abort import CurveAbort

if TYPE_CHECKING:
    from golfrun.campaign import Campaign


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    ABORTED = "ABORTED"  # stopped on purpose: its training curve trailed the reference (Job.abort)
    UNKNOWN = "UNKNOWN"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.ABORTED)


@dataclass(frozen=True)
class Job:
    """One trainer run. `workdir` is the job's own folder; the trainer's ARTIFACT_DIR is set to it.

    The backend chooses the launcher: `python script` when nproc_per_node*nodes == 1, else
    torchrun (local) or srun (Slurm).
    """

    name: str
    script: str  # absolute path of the trainer file
    env: Mapping[str, str]  # overrides on top of the backend's environment
    workdir: str  # absolute path; created by the backend
    nproc_per_node: int = 1
    nodes: int = 1
    time_limit_s: float | None = None
    stall_s: float | None = None  # no output line and no GPU activity this long → cancelled as STALLED
    outputs: tuple[str, ...] = ("results.json", "final_model.pt", "final_model.int6.ptz")
    log_name: str = "job.log"  # stdout+stderr of the job, in workdir
    # stop the run when its train loss trails a reference curve (golfrun/trainer/curve_abort.py); the
    # backend that reads the output watches it, writes abort.json and reports ABORTED
    abort: CurveAbort | None = None


@dataclass
class JobStatus:
    state: JobState
    reason: str = ""
    exit_code: int | None = None
    backend_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobHandle:
    backend: str
    id: str
    job: Job


@dataclass(frozen=True)
class BackendHooks:
    """What a caller wants to hear while jobs run (the progress display): each output line, each end."""

    on_line: Callable[[Job, str], None] | None = None
    on_finish: Callable[[Job, JobStatus], None] | None = None


class Backend(Protocol):
    name: str
    poll_interval_s: float  # how often `wait` polls: a waitpid is cheap, a scheduler query is not

    def prepare(self, workdir: Path) -> None:
        """Make the job folder `workdir` safe to clean and reuse: stop whatever still runs for it."""
        ...

    def command(self, job: Job) -> list[str]:
        """The argv that runs `job` (what --dry-run and `golfrun plan` show)."""
        ...

    def submit(self, job: Job) -> JobHandle: ...

    def poll(self, handle: JobHandle) -> JobStatus: ...

    def fetch(self, handle: JobHandle) -> str:
        """Bring the job's outputs into handle.job.workdir (no-op when already local); return it."""
        ...

    def cancel(self, handle: JobHandle) -> None: ...


def wait(
    backend: Backend,
    handle: JobHandle,
    deadline_s: float,
    poll_interval_s: float = 1.0,
    on_poll: Callable[[JobStatus], None] | None = None,
) -> JobStatus:
    """Poll until the job finishes or the deadline passes; on the deadline cancel and raise."""
    end = time.monotonic() + deadline_s
    while True:
        status = backend.poll(handle)
        if on_poll is not None:
            on_poll(status)
        if status.state.finished:
            return status
        if time.monotonic() > end:
            backend.cancel(handle)
            raise BackendError(f"job {handle.job.name} ({handle.id}) did not finish within {deadline_s:.0f}s; cancelled")
        time.sleep(poll_interval_s)


# ----------------------------------------------------------------------------------- registry

# name → "module:Class" (imported when first used, so naming a backend costs nothing); the class
# has `from_campaign(campaign, hooks) -> Backend`. One line per backend.
REGISTRY: dict[str, str | Callable[["Campaign", BackendHooks], Backend]] = {
    "local": "golfrun.backends.local:LocalBackend",  # a subprocess (python, or torchrun for N > 1)
    "srun": "golfrun.backends.srun:SrunBackend",  # an srun step inside a Slurm allocation
}


def register(name: str, factory: str | Callable[["Campaign", BackendHooks], Backend]) -> None:
    """Add a job backend: a "module:Class" string or a callable `(campaign, hooks) -> Backend`."""
    REGISTRY[name] = factory


def create(name: str, campaign: "Campaign", hooks: BackendHooks | None = None) -> Backend:
    """The job backend `name`, configured from the campaign."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise CampaignError(f"job backend {name!r}: unknown; known: {', '.join(sorted(REGISTRY))}") from None
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr).from_campaign
    return factory(campaign, hooks or BackendHooks())
