"""Slurm through a Transport (this machine, or a login node over SSH): sbatch, squeue/sacct, scancel.

- `SlurmClient` runs the commands. `query(ids)` asks about ALL given jobs in one call: `sacct`
  when the cluster keeps accounting, else `squeue -t all` (plus `scontrol` once per failed job for
  its exit code, and `sacct -c` for jobs squeue has already forgotten).
- Parsing is pure (`parse_*`), tested on output captured from a real cluster.
- `map_state` turns Slurm's states into golfrun's (`JobState`) with a reason a person can act on;
  a state golfrun does not know becomes UNKNOWN, never an exception.
- `Poller` is the polite loop: one query per interval for a whole campaign, back-off while nothing
  changes, a budget of consecutive transient failures before it gives up.

A trainer job inside a Slurm allocation is the `srun` job backend (golfrun/backends/srun.py); the
campaign's chain of Slurm jobs is the `slurm` campaign runner (golfrun/runners/slurm.py).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from golfrun.backends.base import JobState, JobStatus
from golfrun.errors import BackendError, TransportError
from golfrun.transport.base import CompletedRun, Transport

# --------------------------------------------------------------------------------------- states

# Slurm state → (golfrun state, what it means). Reasons name the Slurm state so a person can
# look it up; the ones that need action say what to do.
_STATES: dict[str, tuple[JobState, str]] = {
    "PENDING": (JobState.PENDING, "waiting in the queue"),
    "CONFIGURING": (JobState.RUNNING, "nodes are being configured"),
    "RUNNING": (JobState.RUNNING, ""),
    "COMPLETING": (JobState.RUNNING, "completing"),
    "STAGE_OUT": (JobState.RUNNING, "staging out"),
    "SIGNALING": (JobState.RUNNING, "being signalled"),
    "RESIZING": (JobState.RUNNING, "being resized"),
    "SUSPENDED": (JobState.PENDING, "SUSPENDED by Slurm; resumes when an admin or the scheduler allows"),
    "STOPPED": (JobState.PENDING, "STOPPED (SIGSTOP) by Slurm"),
    "REQUEUED": (JobState.PENDING, "REQUEUED by Slurm (after preemption or a node failure); will run again"),
    "REQUEUE_HOLD": (JobState.PENDING, "REQUEUE_HOLD: requeued and held; release it with scontrol release"),
    "REQUEUE_FED": (JobState.PENDING, "REQUEUE_FED: requeued by the federation"),
    "RESV_DEL_HOLD": (JobState.PENDING, "RESV_DEL_HOLD: its reservation was deleted; held"),
    "COMPLETED": (JobState.SUCCEEDED, ""),
    "FAILED": (JobState.FAILED, "FAILED"),
    "CANCELLED": (JobState.CANCELLED, "CANCELLED"),
    "REVOKED": (JobState.CANCELLED, "REVOKED: the federation ran it on another cluster"),
    "TIMEOUT": (JobState.FAILED, "TIMEOUT: the job hit its time limit (raise backend.slurm.time for this stage)"),
    "OUT_OF_MEMORY": (JobState.FAILED, "OUT_OF_MEMORY: killed for exceeding its memory (raise backend.slurm.mem)"),
    "NODE_FAIL": (JobState.FAILED, "NODE_FAIL: a node of the job failed; rerun the stage"),
    "BOOT_FAIL": (JobState.FAILED, "BOOT_FAIL: a node failed to boot; rerun the stage"),
    "PREEMPTED": (JobState.FAILED, "PREEMPTED: a higher-priority job took the nodes and it was not requeued; rerun the stage"),
    "DEADLINE": (JobState.FAILED, "DEADLINE: the job missed its --deadline"),
    "SPECIAL_EXIT": (JobState.FAILED, "SPECIAL_EXIT: the job asked to be held after a special exit code"),
}


def map_state(slurm_state: str, reason: str = "", exit_code: str = "") -> JobStatus:
    """One Slurm state (as squeue/sacct/scontrol print it, e.g. "CANCELLED by 0") → JobStatus."""
    word = (slurm_state.split() or [""])[0].rstrip("+").upper()
    code, signal = _exit_code(exit_code)
    known = _STATES.get(word)
    if known is None:
        return JobStatus(JobState.UNKNOWN, f"Slurm state {slurm_state!r} is not known to golfrun", code)
    state, meaning = known
    parts = [meaning] if meaning else []
    if word == "FAILED" and code is not None:
        parts = [f"FAILED with exit code {code}" + (f" (signal {signal})" if signal else "")]
    if word == "CANCELLED":
        if reason == "DependencyNeverSatisfied":
            parts = ["CANCELLED: an upstream job did not succeed (DependencyNeverSatisfied)"]
        elif slurm_state.upper().startswith("CANCELLED BY"):
            parts = [f"CANCELLED by user {slurm_state.split()[-1]}"]
        elif signal:
            parts = [f"CANCELLED (signal {signal})"]
    if state is JobState.PENDING and reason and reason not in ("None", "(null)"):
        if reason == "DependencyNeverSatisfied":
            parts = ["PENDING for ever: an upstream job did not succeed (DependencyNeverSatisfied)"]
        else:
            parts.append(f"reason: {reason}")
    return JobStatus(state, "; ".join(parts), code)


def _exit_code(text: str) -> tuple[int | None, int | None]:
    m = re.match(r"^\s*(\d+):(\d+)\s*$", text or "")
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(2)) or None)


# --------------------------------------------------------------------------------------- parsing


def parse_submit(stdout: str) -> str:
    """The job id from `sbatch --parsable` ("123" or "123;cluster") or plain "Submitted batch job 123"."""
    text = stdout.strip()
    m = re.search(r"Submitted batch job (\d+)", text)
    if m:
        return m.group(1)
    last = text.splitlines()[-1].strip() if text else ""
    jid = last.split(";")[0]
    if not jid.isdigit():
        raise BackendError(f"could not read a job id from sbatch's output: {stdout.strip()!r}")
    return jid


@dataclass(frozen=True)
class TaskRow:
    """One row of squeue/sacct: a job, or one task of an array."""

    job: str  # the id golfrun submitted (an array's own id for its tasks)
    task: str  # "" for a plain job; "3" or "[2-3%2]" for array tasks
    state: str
    reason: str = ""
    exit_code: str = ""
    raw_id: str = ""  # Slurm's own id of this row


def _split_job_id(text: str) -> tuple[str, str]:
    job, _, task = text.partition("_")
    return job.strip(), task.strip()


SQUEUE_FORMAT = "%i|%A|%T|%r"


def parse_squeue(stdout: str) -> list[TaskRow]:
    """Rows of `squeue -h -t all -r -o '%i|%A|%T|%r'`."""
    rows = []
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3:
            continue
        job, task = _split_job_id(parts[0])
        rows.append(TaskRow(job, task, parts[2], parts[3] if len(parts) > 3 else "", "", parts[1]))
    return rows


SACCT_FIELDS = "JobID,JobIDRaw,State,ExitCode"


def parse_sacct(stdout: str) -> list[TaskRow]:
    """Rows of `sacct -X -n -P -o JobID,JobIDRaw,State,ExitCode` (steps like 12.batch are skipped)."""
    rows = []
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or "." in parts[0]:
            continue
        job, task = _split_job_id(parts[0])
        rows.append(TaskRow(job, task, parts[2], "", parts[3], parts[1]))
    return rows


def parse_sacct_completion(stdout: str, array_of: Mapping[str, str] | None = None) -> list[TaskRow]:
    """Rows of `sacct -c -n -P -o JobID,State,ExitCode` (the jobcomp file): tasks appear under their
    raw ids; `array_of` maps a raw id back to its array's id where known."""
    rows = []
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0].strip():
            continue
        raw = parts[0].strip()
        job = (array_of or {}).get(raw, raw)
        rows.append(TaskRow(job, "" if job == raw else raw, parts[1], "", parts[2], raw))
    return rows


def parse_scontrol(stdout: str) -> list[dict[str, str]]:
    """`scontrol -o show job [...]`: one dict of Key=Value per job (values without spaces, which
    is what the one-line form gives for the keys golfrun reads)."""
    jobs = []
    for line in stdout.splitlines():
        if not line.strip().startswith("JobId="):
            continue
        fields: dict[str, str] = {}
        for token in line.split():
            k, sep, v = token.partition("=")
            if sep and k not in fields:
                fields[k] = v
        jobs.append(fields)
    return jobs


def combine(rows: Iterable[TaskRow]) -> dict[str, JobStatus]:
    """Job id → status. Array tasks are folded into their array's status: running while any task
    runs or waits, SUCCEEDED only if every task did, else FAILED/CANCELLED naming the tasks."""
    by_job: dict[str, list[TaskRow]] = {}
    for row in rows:
        by_job.setdefault(row.job, []).append(row)
    out: dict[str, JobStatus] = {}
    for job, tasks in by_job.items():
        plain = [t for t in tasks if not t.task]
        if plain and len(tasks) == 1:
            t = plain[0]
            st = map_state(t.state, t.reason, t.exit_code)
            st.backend_ids = [job]
            out[job] = st
            continue
        statuses = [(t, map_state(t.state, t.reason, t.exit_code)) for t in tasks]
        ids = [f"{job}_{t.task}" if t.task else job for t in tasks]
        states = {s.state for _, s in statuses}
        if JobState.RUNNING in states:
            agg = JobStatus(JobState.RUNNING, f"array: {_count(statuses)}")
        elif JobState.PENDING in states:
            agg = JobStatus(JobState.PENDING, f"array: {_count(statuses)}")
        elif states == {JobState.SUCCEEDED}:
            agg = JobStatus(JobState.SUCCEEDED, "", 0)
        else:
            bad = [(t, s) for t, s in statuses if s.state is not JobState.SUCCEEDED]
            worst = JobState.FAILED if any(s.state is JobState.FAILED for _, s in bad) else (
                JobState.CANCELLED if any(s.state is JobState.CANCELLED for _, s in bad) else JobState.UNKNOWN
            )
            detail = "; ".join(f"task {t.task or job}: {s.reason or s.state.value}" for t, s in bad)
            agg = JobStatus(worst, f"array: {detail}", next((s.exit_code for _, s in bad if s.exit_code), None))
        agg.backend_ids = ids
        out[job] = agg
    return out


def _count(statuses: list[tuple[TaskRow, JobStatus]]) -> str:
    counts: dict[str, int] = {}
    for _, s in statuses:
        counts[s.state.value] = counts.get(s.state.value, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


# --------------------------------------------------------------------------------------- client

_ACCOUNTING_OFF = "accounting storage is disabled"
# client errors that mean "try again later", not "this job is bad"
_TRANSIENT = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|Zero Bytes were transmitted|"
    r"Transport endpoint|temporarily unavailable|slurm_persist_conn|Resource temporarily",
    re.IGNORECASE,
)


class TransientSlurmError(BackendError):
    """A Slurm command failed in a way worth retrying (controller busy or unreachable, lost connection)."""


@dataclass
class SlurmClient:
    transport: Transport
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    timeout_s: float = 60.0
    accounting: bool | None = None  # None = not known yet; found out by the first sacct
    _array_of: dict[str, str] = field(default_factory=dict)  # raw task id → array id
    _exit_codes: dict[str, str] = field(default_factory=dict)  # job id → "N:S" (scontrol, cached)

    def _run(self, argv: Sequence[str], timeout_s: float | None = None) -> CompletedRun:
        try:
            return self.transport.run(list(argv), cwd=self.cwd, env=self.env, timeout_s=timeout_s or self.timeout_s)
        except TransportError as exc:
            raise TransientSlurmError(str(exc)) from exc

    def _check(self, r: CompletedRun) -> CompletedRun:
        if r.returncode != 0:
            text = (r.stderr or r.stdout).strip()
            msg = f"{shlex.join(r.argv)} failed (exit {r.returncode}): {text}"
            raise (TransientSlurmError if _TRANSIENT.search(text) else BackendError)(msg)
        return r

    def submit(self, script: str, dependency: str = "", kill_on_invalid_dep: bool = True, extra: Sequence[str] = ()) -> str:
        from golfrun.sbatch.render import sbatch_argv

        r = self._check(self._run(sbatch_argv(script, dependency, kill_on_invalid_dep, extra)))
        return parse_submit(r.stdout)

    def cancel(self, ids: Sequence[str]) -> None:
        if ids:
            self._check(self._run(["scancel", *ids]))

    def query(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        """Status of every job in `ids` (array ids stand for all their tasks), one call at best."""
        ids = [str(i) for i in ids]
        if not ids:
            return {}
        if self.accounting is not False:
            r = self._run(["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", SACCT_FIELDS])
            if r.returncode == 0:
                self.accounting = True
                found = combine(parse_sacct(r.stdout))
                return {i: found.get(i, JobStatus(JobState.PENDING, "not yet in sacct", None, [i])) for i in ids}
            if _ACCOUNTING_OFF in (r.stderr + r.stdout):
                self.accounting = False
            else:
                self._check(r)
        return self._query_squeue(ids)

    def _query_squeue(self, ids: list[str]) -> dict[str, JobStatus]:
        r = self._run(["squeue", "-h", "-t", "all", "-r", "-j", ",".join(ids), "-o", SQUEUE_FORMAT])
        if r.returncode != 0 and "Invalid job id" in r.stderr:
            rows: list[TaskRow] = []  # every id already forgotten by the controller
        else:
            rows = parse_squeue(self._check(r).stdout)
        for row in rows:
            if row.task and row.raw_id and row.raw_id != row.job:
                self._array_of[row.raw_id] = row.job
        # squeue has no exit code: scontrol, once per failed plain job
        rows = [self._with_exit_code(row) for row in rows]
        found = combine(rows)
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(self._query_completion(missing))
        return {
            i: found.get(i, JobStatus(JobState.UNKNOWN, "no longer known to Slurm (squeue, sacct)", None, [i]))
            for i in ids
        }

    def _with_exit_code(self, row: TaskRow) -> TaskRow:
        if row.state.split()[0] not in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY"):
            return row
        # an array task by its own id (squeue's %A): the code says why it ended (4: the [budget] refused it)
        which = row.raw_id if row.task else row.job
        if not which:
            return row
        code = self._exit_codes.get(which)
        if code is None:
            r = self._run(["scontrol", "-o", "show", "job", which])
            jobs = parse_scontrol(r.stdout) if r.returncode == 0 else []
            code = jobs[0].get("ExitCode", "") if jobs else ""
            self._exit_codes[which] = code
        return TaskRow(row.job, row.task, row.state, row.reason, code, row.raw_id)

    def _query_completion(self, ids: list[str]) -> dict[str, JobStatus]:
        wanted = set(ids) | {raw for raw, job in self._array_of.items() if job in ids}
        r = self._run(["sacct", "-c", "-n", "-P", "-j", ",".join(sorted(wanted)), "-o", "JobID,State,ExitCode"])
        if r.returncode != 0:
            return {}
        return combine(parse_sacct_completion(r.stdout, self._array_of))


# --------------------------------------------------------------------------------------- polling


@dataclass
class Poller:
    """Polls a set of jobs with one query per interval; backs off while nothing changes."""

    client: SlurmClient
    min_interval_s: float = 2.0
    max_interval_s: float = 60.0
    failure_budget: int = 10  # consecutive transient failures before giving up
    sleep: Callable[[float], None] = time.sleep
    failures: int = 0

    def poll_once(self, ids: Sequence[str]) -> dict[str, JobStatus] | None:
        """Statuses, or None after a transient failure (raises once the budget is spent)."""
        try:
            statuses = self.client.query(ids)
        except TransientSlurmError as exc:
            self.failures += 1
            if self.failures >= self.failure_budget:
                raise BackendError(
                    f"Slurm did not answer {self.failures} times in a row; giving up. Last error: {exc}"
                ) from exc
            return None
        self.failures = 0
        return statuses

    def wait(
        self,
        ids: Sequence[str],
        deadline_s: float,
        on_change: Callable[[dict[str, JobStatus]], None] | None = None,
    ) -> dict[str, JobStatus]:
        """Until every job finished (SUCCEEDED/FAILED/CANCELLED) or the deadline passes (raises)."""
        end = time.monotonic() + deadline_s
        interval = self.min_interval_s
        last: dict[str, tuple[str, str]] = {}
        while True:
            statuses = self.poll_once(ids)
            if statuses is not None:
                now = {k: (v.state.value, v.reason) for k, v in statuses.items()}
                if now != last:
                    interval = self.min_interval_s
                    last = now
                    if on_change is not None:
                        on_change(statuses)
                else:
                    interval = min(interval * 1.5, self.max_interval_s)
                if all(s.state.finished for s in statuses.values()):
                    return statuses
            else:
                interval = min(interval * 2, self.max_interval_s)
            if time.monotonic() + interval > end:
                raise BackendError(f"Slurm jobs {', '.join(ids)} did not finish within {deadline_s:.0f}s")
            self.sleep(interval)


def _slurm_time(seconds: float) -> str:
    total = max(60, int(seconds + 59) // 60 * 60)
    h, rem = divmod(total, 3600)
    return f"{h:02d}:{rem // 60:02d}:00"


def slurm_time(value: str | int | float) -> str:
    """A campaign time value (seconds as a number, or Slurm's own text) as Slurm time text."""
    if isinstance(value, (int, float)):
        return _slurm_time(float(value))
    text = str(value).strip()
    if not re.match(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$", text):
        raise BackendError(f"backend.slurm.time: {value!r} is not a Slurm time (MM, HH:MM:SS, D-HH:MM:SS)")
    return text
