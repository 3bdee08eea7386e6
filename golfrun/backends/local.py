"""The local backend: each job is a subprocess (or a torch.distributed.run launch) in its own folder.

- `submit` creates the job folder, writes `launch.json` (what was launched, secrets redacted) and
  `job.pid`, and starts `python <script>` — or `python -m torch.distributed.run --standalone
  --nproc_per_node=N <script>` when the job asks for more than one process (the module, so no
  `torchrun` binary on PATH is needed) — with the environment `os.environ + job.env +
  ARTIFACT_DIR=<workdir>` (and `RUN_ID=<job name>` unless the job sets one). Output goes to
  `<workdir>/<job.log_name>`.
- `poll` reports the process's state; a job past its time limit is cancelled with reason
  "TIMEOUT after …s".
- `cancel` signals the whole process tree (SIGTERM, then SIGKILL after a grace period).
- A job with `abort` (a learning-curve rule, golfrun/trainer/curve_abort.py) has its output lines
  fed to a `CurveWatch` as they stream (this is the one place that reads them, for every backend
  that runs the trainer here: local, srun, a pod's local run); at the first trailing check `poll`
  writes `abort.json` (schema golfrun.curve-abort/1: the step, observed and reference loss, margin)
  and stops the job as `cancel` does, reporting ABORTED.

The trainer runs under the job guard (golfrun/transport/guard.py, through `transport.spawn`): if
golfrun itself is killed, SIGKILL included, the guard kills the job's whole tree (torchrun's
workers too) within a fraction of a second and then notes when in `job.orphaned.json` (the ledger's
end of that attempt); a trainer that exits leaving workers behind has them stopped before its exit
counts. `job.pid` holds the guard's pid. As a second line of defence
(a guard killed too), the next `submit` of a job into that folder first calls `reap_stale(workdir)`,
which stops any process still running for it (found by pid + start time, and by the
`GOLFRUN_JOB_DIR` marker in its environment, which also catches torchrun workers whose launcher
is gone), so two trainers never write one folder.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from golfrun.backends.base import BackendHooks, Job, JobHandle, JobState, JobStatus
from golfrun.errors import BackendError, TransportError
from golfrun.fileio import now_iso, sha256_file, write_json_atomic
from golfrun.jobfolder import ORPHAN_FILE, read_json
from golfrun.secrets import redact_env
from golfrun.trainer.curve_abort import ABORT_FILE, ABORT_SCHEMA, Check, CurveWatch
from golfrun.transport import local as transport

if TYPE_CHECKING:
    from golfrun.campaign import Campaign

LAUNCH_FILE = "launch.json"  # job.json belongs to the stage (its cache key)
PID_FILE = "job.pid"
JOB_SCHEMA = "golfrun.local-job/1"
MARKER_ENV = "GOLFRUN_JOB_DIR"  # set in every job's environment: finds its processes later
TAIL_LINES = 20


@dataclass
class _Running:
    job: Job
    process: transport.LocalProcess
    started_monotonic: float
    cancel_reason: str | None = None
    final: JobStatus | None = None
    gpu_busy_at: float = 0.0  # monotonic time nvidia-smi last showed a GPU computing
    next_gpu_probe: float = 0.0
    watch: CurveWatch | None = None  # the job's learning-curve abort rule, fed by the reader thread
    aborted: Check | None = None  # the trailing check this backend stopped the job for


class LocalBackend:
    name = "local"
    poll_interval_s = 0.1  # a poll is a waitpid: cheap
    orphan_signal = "KILL"  # how the job guard ends the job when golfrun is gone (transport/guard.py)
    orphan_grace_s = 1.0

    def __init__(
        self,
        python: str | None = None,
        on_line: Callable[[Job, str], None] | None = None,
        grace_s: float = 10.0,
        on_finish: Callable[[Job, JobStatus], None] | None = None,
    ) -> None:
        self.python = python or sys.executable
        self.on_line = on_line
        self.on_finish = on_finish
        self.grace_s = grace_s
        self._jobs: dict[str, _Running] = {}

    @classmethod
    def from_campaign(cls, campaign: "Campaign", hooks: BackendHooks) -> "LocalBackend":
        return cls(python=campaign.backend.local.python or None, on_line=hooks.on_line, on_finish=hooks.on_finish)

    # ----------------------------------------------------------------- verbs

    def prepare(self, workdir: Path) -> None:
        """A trainer left running by a killed golfrun must not write into a fresh folder."""
        reap_stale(workdir, grace_s=self.grace_s)

    def command(self, job: Job) -> list[str]:
        """The argv that runs `job` (also what --dry-run prints)."""
        nproc = job.nproc_per_node * job.nodes
        if job.nodes != 1:
            raise BackendError(f"job {job.name}: the local backend runs on one node, not nodes={job.nodes}")
        if nproc < 1:
            raise BackendError(f"job {job.name}: nproc_per_node must be >= 1, got {job.nproc_per_node}")
        if nproc == 1:
            return [self.python, job.script]
        return [self.python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", job.script]

    def environment(self, job: Job) -> dict[str, str]:
        """What the job adds to os.environ: its env, ARTIFACT_DIR, RUN_ID (default: the job's name)."""
        env = {str(k): str(v) for k, v in job.env.items()}
        env["ARTIFACT_DIR"] = str(Path(job.workdir))
        env.setdefault("RUN_ID", job.name)
        env[MARKER_ENV] = str(Path(job.workdir).resolve())
        return env

    def submit(self, job: Job) -> JobHandle:
        workdir = Path(job.workdir)
        if not workdir.is_absolute():
            raise BackendError(f"job {job.name}: workdir must be absolute, got {job.workdir!r}")
        if not Path(job.script).is_file():
            raise BackendError(f"job {job.name}: trainer script not found: {job.script}")
        for running in self._jobs.values():
            if running.job.workdir == job.workdir and running.final is None and running.process.poll() is None:
                raise BackendError(f"job {job.name}: another job is still running in {workdir}")
        argv = self.command(job)
        workdir.mkdir(parents=True, exist_ok=True)
        reap_stale(workdir, grace_s=self.grace_s)
        env = self.environment(job)
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json_atomic(
            workdir / LAUNCH_FILE,
            {
                "schema": JOB_SCHEMA,
                "name": job.name,
                "script": job.script,
                "script_sha256": sha256_file(job.script),
                "argv": argv,
                "env": redact_env(env),
                "nproc_per_node": job.nproc_per_node,
                "time_limit_s": job.time_limit_s,
                "started_at": started_at,
            },
        )
        watch = None if job.abort is None else CurveWatch(job.abort)
        on_line = self._line_handler(job, watch)
        try:
            process = transport.spawn(argv, cwd=str(workdir), env=env, log_path=workdir / job.log_name, on_line=on_line,
                                      orphan_signal=self.orphan_signal, orphan_grace_s=self.orphan_grace_s,
                                      orphan_note=workdir / ORPHAN_FILE)
        except TransportError as exc:
            raise BackendError(f"job {job.name}: {exc}") from exc
        write_json_atomic(
            workdir / PID_FILE,
            {
                "pid": process.pid,
                "start_time": transport.process_start_time(process.pid),
                "argv": argv,
                "started_at": started_at,
                "golfrun_pid": os.getpid(),
            },
        )
        handle = JobHandle(backend=self.name, id=str(process.pid), job=job)
        self._jobs[handle.id] = _Running(job, process, time.monotonic(), watch=watch)
        return handle

    def _line_handler(self, job: Job, watch: CurveWatch | None) -> Callable[[str], None] | None:
        """What the reader thread calls per output line: the curve watch, then the progress display."""
        if watch is None and self.on_line is None:
            return None
        display = [self.on_line]

        def handle(line: str) -> None:
            if watch is not None:
                watch.feed(line)
            if display[0] is not None:
                try:
                    display[0](job, line)
                except Exception:  # a display bug must stop neither the log nor the watch
                    display[0] = None

        return handle

    def poll(self, handle: JobHandle) -> JobStatus:
        running = self._jobs.get(handle.id)
        if running is None:
            return _poll_foreign(handle)
        if running.final is not None:
            return running.final
        process = running.process
        code = process.poll()
        if code is None:
            limit = running.job.time_limit_s
            if limit is not None and time.monotonic() - running.started_monotonic > limit:
                self._stop(running, f"TIMEOUT after {limit:g}s")
                return self.poll(handle)
            stall = running.job.stall_s
            if stall and _stalled(running, stall):
                self._stop(running, f"STALLED: no output and no GPU activity for {stall:g}s")
                return self.poll(handle)
            if running.watch is not None and running.watch.abort is not None and running.cancel_reason is None:
                self._abort(running, running.watch, running.watch.abort)
                return self.poll(handle)
            return JobStatus(JobState.RUNNING, exit_code=None, backend_ids=[handle.id])
        tail = "\n".join(process.last_lines(TAIL_LINES))
        if running.aborted is not None:
            status = JobStatus(JobState.ABORTED, running.cancel_reason or "", code, [handle.id])
        elif running.cancel_reason is not None:
            status = JobStatus(JobState.CANCELLED, running.cancel_reason, code, [handle.id])
        elif code == 0:
            status = JobStatus(JobState.SUCCEEDED, "", 0, [handle.id])
        else:
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            status = JobStatus(JobState.FAILED, f"{how}; last lines of {process.log_path}:\n{tail}".rstrip(), code, [handle.id])
        running.final = status
        _remove(Path(running.job.workdir) / PID_FILE)
        if self.on_finish is not None:
            self.on_finish(running.job, status)
        return status

    def fetch(self, handle: JobHandle) -> str:
        return handle.job.workdir  # already here

    def cancel(self, handle: JobHandle) -> None:
        running = self._jobs.get(handle.id)
        if running is None:
            reap_stale(Path(handle.job.workdir), grace_s=self.grace_s)
            return
        # a job that already ended keeps its own outcome: nothing was cancelled
        if running.final is None and running.cancel_reason is None and running.process.poll() is None:
            self._stop(running, "cancelled")

    def reap_stale(self, workdir: Path | str) -> bool:
        """Stop whatever still runs for `workdir` (see the module function); call before cleaning a folder."""
        return reap_stale(workdir, grace_s=self.grace_s)

    def _abort(self, running: _Running, watch: CurveWatch, check: Check) -> None:
        """Stop a run that trails its reference curve; abort.json first, so the stage can tell an
        abort from a crash even if the stop itself is interrupted."""
        write_json_atomic(Path(running.job.workdir) / ABORT_FILE, {
            "schema": ABORT_SCHEMA, "aborted_at": now_iso(), **check.to_dict(),
            "reference_source": watch.rule.reference_source, "checks": [c.to_dict() for c in watch.checks],
        })
        running.aborted = check
        self._stop(running, f"ABORTED (learning-curve early abort) at {check.describe()}")

    def _stop(self, running: _Running, reason: str) -> None:
        running.cancel_reason = reason
        running.process.terminate(self.grace_s)
        # torchrun workers live in sessions of their own: sweep anything left for this folder
        leftovers = transport.find_processes_with_env(MARKER_ENV, str(Path(running.job.workdir).resolve()))
        if leftovers:
            transport.terminate_processes(leftovers, self.grace_s)


def reap_stale(workdir: Path | str, grace_s: float = 10.0) -> bool:
    """Stop any process still running for the job folder `workdir`; True if one was found.

    Such a process is left over from a golfrun that was killed while the job ran. It is found by
    the pid file (pid + start time, so a reused pid is never touched) and by the job-folder
    marker in its environment (torchrun workers whose launcher died). Removes `job.pid`.
    """
    workdir = Path(workdir)
    procs: set[tuple[int, int]] = set()
    pid_info = read_json(workdir / PID_FILE)
    if isinstance(pid_info, dict) and isinstance(pid_info.get("pid"), int) and isinstance(pid_info.get("start_time"), int):
        pid, start = pid_info["pid"], pid_info["start_time"]
        if transport.process_start_time(pid) == start:
            procs.add((pid, start))
            procs |= transport.descendants(pid)
    procs |= transport.find_processes_with_env(MARKER_ENV, str(workdir.resolve()))
    if procs:
        transport.terminate_processes(procs, grace_s)
    _remove(workdir / PID_FILE)
    return bool(procs)


def _stalled(running: _Running, stall_s: float) -> bool:
    """No output line and no GPU activity for `stall_s`. nvidia-smi is asked only once the job has
    been quiet a while, then at most every `every` seconds (GPU activity counts as a sign of life:
    a long silent evaluation or compile on the GPU is not a hang)."""
    now = time.monotonic()
    quiet_since = max(running.process.last_output, running.gpu_busy_at)
    every = max(1.0, min(30.0, stall_s / 4))
    if now - quiet_since < every:
        return False
    if now >= running.next_gpu_probe:
        running.next_gpu_probe = now + every
        if gpu_busy():
            running.gpu_busy_at = now
            return False
    return now - quiet_since > stall_s


def gpu_busy() -> bool:
    """Whether a GPU of this machine is computing now (nvidia-smi utilization > 0); False without
    nvidia-smi, or when it does not answer within 15 s."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = transport.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                            timeout_s=15.0, check=False)
    except TransportError:
        return False
    return any(v.strip().isdigit() and int(v.strip()) > 0 for v in out.stdout.splitlines())


def _poll_foreign(handle: JobHandle) -> JobStatus:
    """A job this backend object did not start (golfrun was restarted): only its liveness is known."""
    workdir = Path(handle.job.workdir)
    pid_info = read_json(workdir / PID_FILE)
    if isinstance(pid_info, dict) and str(pid_info.get("pid")) == handle.id:
        if transport.process_start_time(int(handle.id)) == pid_info.get("start_time"):
            return JobStatus(JobState.RUNNING, "started by an earlier golfrun process", None, [handle.id])
    return JobStatus(JobState.UNKNOWN, f"process {handle.id} was not started by this golfrun process and is gone", None, [handle.id])


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass

