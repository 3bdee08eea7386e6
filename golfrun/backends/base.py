"""DESIGN contract 2: a job is plain data; a backend runs it.

Backends submit, poll, fetch and cancel. They never look at results beyond bringing files back;
stages decide. `wait` is the one shared loop, with a deadline.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from golfrun.errors import BackendError


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


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
    outputs: tuple[str, ...] = ("results.json", "final_model.pt", "final_model.int6.ptz")
    log_name: str = "job.log"  # stdout+stderr of the job, in workdir


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


class Backend(Protocol):
    name: str

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
