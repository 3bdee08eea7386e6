"""What the trainer-running stages share: planning jobs, running them with per-job caching,
collecting results, and building summaries.

A job's folder is `<stage_dir>/jobs/<name>/`. Before a job starts, `job.json` records its key:
the sha256 of its resolved environment (secrets redacted, the per-run ARTIFACT_DIR left out),
the trainer's sha256, the files it reads (a checkpoint's sha256) and the hardware key of the
machine verify-pod recorded (golfrun/machine.py). The job is served from
cache when that key is unchanged and the folder holds a usable result (`results.json`, written
last by the trainer, or a log with a final score). Anything else reruns in a clean folder, so a
crash or SIGKILL loses at most the job that was running.

A job that fails, exits non-zero or leaves no final score is an error carrying the last lines of
its log; it never yields a score, so no gate can read it as PASS.

A job with a learning-curve abort rule (`JobSpec.abort`, golfrun/trainer/curve_abort.py) that the
backend stopped for trailing its reference is neither: its outcome is ABORTED with the figures of
the check (`JobOutcome.abort`, from the backend's abort.json), its attempt is in the ledger like any
other, and a rerun with the same key and the same rule serves the abort from its folder.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun.fileio import copy_file_atomic, epoch_of, iso_at, now_iso, sha256_file, sha256_text, write_json_atomic
from golfrun.jobfolder import JOB_FILE, JOBS_DIR, guard_ended, held_until, read_json
from golfrun.machine import campaign_result_key
from golfrun.errors import BackendError, CampaignError, GolfrunError, TrainerResultError
from golfrun.secrets import redact_env, redact_text, secret_values_from_env
from golfrun.summary import Artifact, Check, JobRecord, Summary, Verdict
from golfrun import compile_cache, ledger

if TYPE_CHECKING:
    from golfrun.backends.base import Job
    from golfrun.campaign import Campaign
    from golfrun.stages.context import StageContext
    from golfrun.trainer.curve_abort import CurveAbort
    from golfrun.trainer.results import TrainerResult

JOB_SCHEMA = "golfrun.job/1"
LOG_NAME = "job.log"
TAIL_LINES = 20
RUN_ALL_TAIL_LINES = 8  # of a failed job's log, printed by run-all under the failure
# Variables that name where this run's files go: they change with the folder, not the result.
_KEY_EXCLUDED = ("ARTIFACT_DIR", *compile_cache.ENV_NAMES)


def plain(value: Any) -> Any:
    """A campaign section or result (dataclass, mapping, object) as JSON-able plain data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return plain(value.to_dict())
    return value


def campaign_section(campaign: "Campaign", name: str) -> Any:
    """One section of the resolved campaign as plain data (for fingerprints)."""
    return plain(campaign.section(name))


def trainer_path(campaign: "Campaign") -> Path:
    return Path(campaign.trainer)


def artifact(ctx: "StageContext", path: Path) -> Artifact:
    path = Path(path)
    try:
        rel = str(path.relative_to(ctx.campaign_dir))
    except ValueError:
        rel = str(path)
    return Artifact(path=rel, bytes=path.stat().st_size, sha256=sha256_file(path))


# ---------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class JobSpec:
    """One planned trainer run of a stage. `env` holds the stage's overrides only (what the
    summary records); the full environment is `job_env(ctx, spec)`."""

    name: str  # folder name under <stage_dir>/jobs/
    seed: int
    mode: str  # train | eval_only
    env: Mapping[str, str]
    inputs: Mapping[str, str] = field(default_factory=dict)  # e.g. checkpoint sha256
    nproc_per_node: int = 1
    time_limit_s: float = 3600.0
    keep: Callable[[Path], None] | None = field(default=None, compare=False)  # runs before parsing
    abort: "CurveAbort | None" = None  # stop it when its training curve trails a reference (not in its key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "mode": self.mode,
            "env": redact_env(dict(self.env)),
            "inputs": dict(self.inputs),
            "nproc_per_node": self.nproc_per_node,
            "time_limit_s": self.time_limit_s,
            "abort_rule": None if self.abort is None else self.abort.to_dict(),
        }


def str_env(where: str, env: Mapping[str, Any] | None) -> dict[str, str]:
    """A campaign env table as str → str; a value that is a table or list is a CampaignError."""
    out: dict[str, str] = {}
    for key, value in (env or {}).items():
        if isinstance(value, bool):
            out[str(key)] = "1" if value else "0"
        elif isinstance(value, (str, int, float)):
            out[str(key)] = str(value)
        else:
            raise CampaignError(f"{where}.{key}: expected a string or number, got {type(value).__name__}")
    return out


def data_env(ctx: "StageContext") -> dict[str, str]:
    """DATA_DIR and VOCAB_SIZE from download-data's summary (the data the trainer must read)."""
    data = ctx.upstream.get("download-data")
    if data is None or "data_dir" not in data.decision:
        return {}
    env = {"DATA_DIR": str(data.decision["data_dir"])}
    if data.decision.get("vocab_size"):
        env["VOCAB_SIZE"] = str(data.decision["vocab_size"])
    return env


def base_env(ctx: "StageContext") -> dict[str, str]:
    """trainer_env, then the data's variables, then the gate_a section's env."""
    c = ctx.campaign
    env = str_env("trainer_env", c.trainer_env)
    for key, value in data_env(ctx).items():
        if key in env and env[key] != value and key == "VOCAB_SIZE":
            raise CampaignError(
                f"trainer_env.VOCAB_SIZE = {env[key]!r} but the data ({ctx.upstream['download-data'].decision.get('variant')}) "
                f"has vocabulary {value}; remove the key or change data.variant"
            )
        env[key] = value
    env.update(str_env("gate_a.env", c.gate_a.env))
    return env


def job_dir(ctx: "StageContext", spec: JobSpec) -> Path:
    return ctx.stage_dir / JOBS_DIR / spec.name


def job_env(ctx: "StageContext", spec: JobSpec) -> dict[str, str]:
    env = base_env(ctx)
    env.update(spec.env)
    env["SEED"] = str(spec.seed)
    env["RUN_ID"] = spec.name
    env["ARTIFACT_DIR"] = str(job_dir(ctx, spec))
    cache = compile_cache_folder(ctx)
    if cache is not None:
        env.update(compile_cache.cache_env(cache))
    return env


def machine_facts(ctx: "StageContext") -> compile_cache.MachineFacts | None:
    """torch, CUDA and GPU model for the compile cache's key: verify-pod's probe (gate-a reads it);
    later stages take the facts the first upstream jobs (gate-a's) were keyed with, so every stage
    shares one folder. None when verify-pod did not probe torch: then no cache is used rather than a
    possibly stale one."""
    verify = ctx.upstream.get("verify-pod")
    if verify is not None:
        return compile_cache.facts_from_verify_pod(verify.decision)
    for summary in ctx.upstream.values():  # in the order the SPEC names them
        for job in summary.jobs:
            facts = (job.compile or {}).get("facts")
            if isinstance(facts, dict) and set(facts) == {"torch", "cuda", "gpu"}:
                return compile_cache.MachineFacts(**{k: str(v) for k, v in facts.items()})
    return None


def compile_cache_folder(ctx: "StageContext") -> Path | None:
    """The campaign's compile cache for this trainer and machine; None when [compile_cache] is off or
    the machine's torch/CUDA/GPU are not known."""
    settings = ctx.campaign.compile_cache
    facts = machine_facts(ctx) if settings.enabled else None
    if facts is None:
        return None
    root = Path(settings.dir) if settings.dir else Path(compile_cache.DEFAULT_DIRNAME)
    root = root if root.is_absolute() else ctx.campaign_dir / root
    return compile_cache.cache_dir(root, ctx.trainer_sha256, facts)


def job_key(ctx: "StageContext", spec: JobSpec, env: Mapping[str, str]) -> str:
    keyed = {k: v for k, v in redact_env(dict(env)).items() if k not in _KEY_EXCLUDED}
    doc = {
        "env": keyed,
        "trainer_sha256": ctx.trainer_sha256,
        "inputs": dict(spec.inputs),
        "nproc_per_node": spec.nproc_per_node,
        "mode": spec.mode,
        # a result measured on other hardware is never served as this machine's (golfrun/machine.py)
        "hardware": campaign_result_key(ctx.campaign_dir),
    }
    return sha256_text(json.dumps(doc, sort_keys=True))


def trainer_file(ctx: "StageContext") -> Path:
    return trainer_path(ctx.campaign).resolve()


def launch_argv(ctx: "StageContext", spec: JobSpec) -> list[str]:
    """The command the stage's job backend runs for this job (for --dry-run and `plan`)."""
    from golfrun.backends.base import Job

    job = Job(name=spec.name, script=str(trainer_file(ctx)), env={}, workdir=str(job_dir(ctx, spec)),
              nproc_per_node=spec.nproc_per_node)
    return ctx.backend.command(job)


def plan_entry(ctx: "StageContext", spec: JobSpec) -> dict[str, Any]:
    """A job as `golfrun plan --json` and --dry-run show it (secrets redacted)."""
    env = job_env(ctx, spec)
    return {
        **spec.to_dict(),
        "workdir": str(job_dir(ctx, spec)),
        "argv": launch_argv(ctx, spec),
        "full_env": redact_env(env),
        "key": job_key(ctx, spec, env),
        "cached": cached_result(ctx, spec, env) is not None,
    }


# ---------------------------------------------------------------------------------- running


@dataclass
class JobOutcome:
    spec: JobSpec
    record: JobRecord
    result: "TrainerResult | None"
    error: str | None = None  # one paragraph: what failed and the log's tail
    abort: dict[str, Any] | None = None  # stopped trailing its reference curve: the check (abort.json)

    @property
    def ok(self) -> bool:
        return self.result is not None and self.error is None

    @property
    def aborted(self) -> bool:
        return self.abort is not None and self.error is None


def _recorded(ctx: "StageContext", spec: JobSpec, env: Mapping[str, str], state: str) -> dict[str, Any] | None:
    """The job folder's job.json when it records this very job (same key) in `state`, and is not
    older than an unfinished --force of this stage (golfrun/pipeline/forced.py); else None."""
    recorded = read_json(job_dir(ctx, spec) / JOB_FILE)
    if not recorded or recorded.get("key") != job_key(ctx, spec, env) or recorded.get("state") != state:
        return None
    if ctx.force_token and recorded.get("force_token") != ctx.force_token:
        return None
    return recorded


def cached_result(ctx: "StageContext", spec: JobSpec, env: Mapping[str, str]) -> "TrainerResult | None":
    from golfrun.trainer.results import load_results

    folder = job_dir(ctx, spec)
    if _recorded(ctx, spec, env, "SUCCEEDED") is None:
        return None
    try:
        result = load_results(folder)
    except TrainerResultError:
        return None
    return result if result.final is not None else None


def adopt_finished(ctx: "StageContext", spec: JobSpec, env: Mapping[str, str], record: JobRecord) -> "JobOutcome | None":
    """A job golfrun started (same key) but never saw finish — golfrun was killed after the
    trainer wrote results.json, which it writes atomically and last — is adopted, not retrained:
    whatever still runs for the folder is stopped, the checkpoint kept, job.json marked SUCCEEDED."""
    from golfrun.trainer.results import load_results

    folder = job_dir(ctx, spec)
    recorded = _recorded(ctx, spec, env, "SUBMITTED")
    if recorded is None or not (folder / "results.json").is_file():
        return None
    ctx.backend.prepare(folder)  # its process must be gone before its folder is trusted
    try:
        result = load_results(folder)
    except TrainerResultError:
        return None  # half a file or a foreign schema: the job reruns in a clean folder
    if result.source != "results.json" or result.final is None:
        return None
    try:
        if spec.keep is not None:
            spec.keep(folder)
    except OSError:
        return None  # the rerun reports it
    record.state = "SUCCEEDED"
    record.backend_ids = list(recorded.get("backend_ids", []))
    record.reason = "adopted: results.json of a run whose golfrun was interrupted"
    record.result = result.to_dict()
    ended = adopted_ledger(ctx, spec, folder, recorded, record)
    recorded.update(state="SUCCEEDED", adopted=True, finished_at=iso_at(ended), error=None, duration_s=record.duration_s)
    _write_job_json(folder, recorded)
    attempt_id = str(recorded.get("attempt_id") or "")
    if attempt_id and not ledger.is_recorded(ctx.stage_dir, spec.name, attempt_id):  # not already as INTERRUPTED
        record_attempt(ctx, record, str(recorded["submitted_at"]), "SUCCEEDED", attempt_id=attempt_id,
                       finished_at=iso_at(ended), source="adopted")
    ctx.log(f"{ctx.stage}: job {spec.name}: adopted its finished results.json ({folder})")
    return JobOutcome(spec, record, result)


def adopted_ledger(ctx: "StageContext", spec: JobSpec, folder: Path, recorded: dict[str, Any],
                   record: JobRecord) -> float:
    """The ledger of an adopted run, which golfrun never saw end: from job.json's start to when the job
    guard ended it (its note), else to results.json, which the trainer writes last (its phases from the
    file's `timings_s`); into the record and job.json. Returns the run's end (epoch)."""
    ended = max(guard_ended(folder) or 0.0, (folder / "results.json").stat().st_mtime)
    started = epoch_of(str(recorded.get("submitted_at") or ""))
    record.duration_s = round(ended - started, 3) if started is not None and ended >= started else None
    fill_ledger(ctx, spec, record, str(recorded.get("compile_cache") or "off"))
    facts = machine_facts(ctx) if compile_cache_folder(ctx) is not None else None
    if facts is not None:
        record.compile["facts"] = facts.to_dict()
    recorded["ledger"] = {"gpus": record.gpus, "gpu_seconds": record.gpu_seconds, "compile": record.compile}
    return ended


def log_tail(folder: Path, env: Mapping[str, str], lines: int = TAIL_LINES) -> str:
    path = folder / LOG_NAME
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    tail = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return redact_text(tail, secret_values_from_env(env))


def _write_job_json(folder: Path, data: dict[str, Any]) -> None:
    write_json_atomic(folder / JOB_FILE, data)


def served_from_folder(ctx: "StageContext", spec: JobSpec, env: Mapping[str, str], record: JobRecord) -> JobOutcome | None:
    """The job's outcome without running it: its cached result, or a finished run adopted; else None."""
    result = cached_result(ctx, spec, env)
    if result is None:
        return served_aborted(ctx, spec, env, record) or adopt_finished(ctx, spec, env, record)
    folder = job_dir(ctx, spec)
    _served_record(record, read_json(folder / JOB_FILE) or {}, "SUCCEEDED")
    record.result = result.to_dict()
    ctx.log(f"{ctx.stage}: job {spec.name}: cached ({folder})")
    return JobOutcome(spec, record, result)


def _served_record(record: JobRecord, prior: Mapping[str, Any], state: str) -> None:
    """A job served from its folder: what its run recorded; nothing held this time."""
    record.cached = True
    record.state = state
    record.backend = str(prior.get("backend", record.backend))
    record.backend_ids = list(prior.get("backend_ids", []))
    record.duration_s = prior.get("duration_s")
    held = prior.get("ledger") or {}
    record.gpus = int(held.get("gpus", 0))
    record.gpu_seconds = ledger.zero()  # served from its folder: nothing held this time
    record.gpu_seconds_original = held.get("gpu_seconds") or None
    record.compile = dict(held.get("compile") or {})


def served_aborted(ctx: "StageContext", spec: JobSpec, env: Mapping[str, str], record: JobRecord) -> JobOutcome | None:
    """A job this very rule aborted before (same key, same abort rule): its abort again, not a rerun
    that would trail the same way (a Slurm array task's abort reaches the aggregating run this way)."""
    recorded = _recorded(ctx, spec, env, "ABORTED")
    if recorded is None or spec.abort is None or recorded.get("abort_rule") != spec.abort.to_dict() \
            or not isinstance(recorded.get("abort"), dict):
        return None
    _served_record(record, recorded, "ABORTED")
    record.reason = str(recorded.get("reason") or "ABORTED")
    ctx.log(f"{ctx.stage}: job {spec.name}: cached abort ({job_dir(ctx, spec)})")
    return JobOutcome(spec, record, None, abort=dict(recorded["abort"]))


def read_abort(folder: Path) -> dict[str, Any] | None:
    """The backend's note of why it stopped the run (abort.json), or None when unreadable."""
    from golfrun.trainer.curve_abort import ABORT_FILE, ABORT_SCHEMA

    note = read_json(folder / ABORT_FILE)
    return note if note is not None and note.get("schema") == ABORT_SCHEMA else None


def run_job(ctx: "StageContext", spec: JobSpec, use_cache: bool | None = None) -> JobOutcome:
    """Run one job through ctx.backend (or serve it from its folder); never raises for a failed job."""
    from golfrun.backends.base import Job

    if use_cache is None:
        use_cache = ctx.job_cache
    env = job_env(ctx, spec)
    key = job_key(ctx, spec, env)
    folder = job_dir(ctx, spec)
    backend_name = ctx.backend.name
    record = JobRecord(name=spec.name, env=redact_env(dict(spec.env)), backend=backend_name)

    if use_cache:
        served = served_from_folder(ctx, spec, env, record)
        if served is not None:
            return served

    _fresh_folder(ctx, spec, folder)
    cache = compile_cache_folder(ctx)
    cache_state = "off" if cache is None else compile_cache.state(cache)
    facts = machine_facts(ctx) if cache is not None else None
    if cache is not None and facts is not None:
        compile_cache.prepare(cache, ctx.trainer_sha256, facts)
    job_doc: dict[str, Any] = {
        "schema": JOB_SCHEMA,
        "key": key,
        **spec.to_dict(),
        "full_env": redact_env(env),
        "trainer": str(trainer_file(ctx)),
        "trainer_sha256": ctx.trainer_sha256,
        "backend": backend_name,
        "state": "SUBMITTED",
        "submitted_at": now_iso(),
        "force_token": ctx.force_token,
        "attempt_id": ledger.new_attempt_id(),  # its attempt record's (a later run checks it was written)
        "compile_cache": cache_state,  # for the ledger of a run adopted after golfrun was killed
        "held": held_devices(ctx, spec),  # counted by `status` until the attempt's record is written
    }
    _write_job_json(folder, job_doc)
    job = Job(
        name=f"{ctx.campaign.name}-{ctx.stage}-{spec.name}",
        script=str(trainer_file(ctx)),
        env=env,
        workdir=str(folder),
        nproc_per_node=spec.nproc_per_node,
        time_limit_s=spec.time_limit_s,
        stall_s=float(ctx.campaign.timeouts.stall_s) or None,
        log_name=LOG_NAME,
        abort=spec.abort,
    )
    ctx.log(f"{ctx.stage}: job {spec.name}: starting ({spec.mode}, seed {spec.seed})")
    t0 = time.monotonic()
    try:
        error = submit_and_wait(ctx, spec, job, job_doc, record)
    except BaseException:  # stopped while it ran: the time it held was still paid for
        record_interrupted(ctx, spec, record, job_doc, round(time.monotonic() - t0, 3))
        raise
    duration = round(time.monotonic() - t0, 3)
    record.duration_s = duration
    result, error, abort = _outcome_of(spec, folder, record, error)
    tail = ""
    if error is not None:
        tail = log_tail(folder, env)
        error += f"\nlast lines of {folder / LOG_NAME}:\n{tail}"
        record.reason = error.splitlines()[0]
        result = None
    fill_ledger(ctx, spec, record, cache_state)
    if facts is not None:
        record.compile["facts"] = facts.to_dict()  # later stages key their cache with the same facts
    job_doc["ledger"] = {"gpus": record.gpus, "gpu_seconds": record.gpu_seconds, "compile": record.compile}
    job_doc.update(state=record.state if error is None else "FAILED", finished_at=now_iso(), duration_s=duration,
                   backend_ids=record.backend_ids, error=error, abort=abort, reason=record.reason)
    _write_job_json(folder, job_doc)
    record_attempt(ctx, record, job_doc["submitted_at"], job_doc["state"], attempt_id=job_doc["attempt_id"])
    _say_outcome(ctx, spec, record, folder / LOG_NAME, tail if error is not None else None)
    return JobOutcome(spec, record, result, error, abort=abort)


def _outcome_of(spec: JobSpec, folder: Path, record: JobRecord,
                error: str | None) -> tuple["TrainerResult | None", str | None, dict[str, Any] | None]:
    """(result, error, abort) of a run that ended: an abort's note, else the trainer's result."""
    if record.state != "ABORTED" or error is not None:
        return (*collect_result(spec, folder, record, error), None)
    abort = read_abort(folder)
    if abort is None:
        return None, f"job {spec.name} ABORTED but its abort.json is unreadable", None
    return None, None, abort


def _fresh_folder(ctx: "StageContext", spec: JobSpec, folder: Path) -> None:
    """A fresh run starts in a clean folder: nothing of an interrupted attempt can be mistaken for output."""
    if folder.exists():
        ctx.backend.prepare(folder)  # nothing left running may write into the fresh folder
        record_lost_attempt(ctx, spec, folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _say_outcome(ctx: "StageContext", spec: JobSpec, record: JobRecord, log: Path, tail: str | None) -> None:
    """tail None: the job succeeded. A failure says why here, not only in `golfrun explain`: the person
    watching run-all needs it now."""
    if tail is None:
        how = f"{record.reason}" if record.state == "ABORTED" else "done"
        ctx.log(f"{ctx.stage}: job {spec.name}: {how} in {record.duration_s:.1f}s")
        return
    shown = "\n".join(f"    {line}" for line in tail.splitlines()[-RUN_ALL_TAIL_LINES:])
    ctx.log(f"{ctx.stage}: job {spec.name}: FAILED in {record.duration_s:.1f}s: {record.reason}\n"
            f"  last lines of {log}:\n{shown}".rstrip())


def submit_and_wait(ctx: "StageContext", spec: JobSpec, job: "Job", job_doc: dict[str, Any],
                    record: JobRecord) -> str | None:
    """Submit through ctx.backend and wait for the end (deadline: the job's limit + 2 min); sets
    record.state/backend_ids/reason; returns the error (None when the job SUCCEEDED)."""
    from golfrun.backends.base import JobState, wait

    folder = Path(job.workdir)
    record.state = JobState.UNKNOWN.value
    try:
        handle = ctx.backend.submit(job)
        try:
            job_doc["backend_ids"] = [handle.id]
            _write_job_json(folder, job_doc)
            status = wait(ctx.backend, handle, deadline_s=spec.time_limit_s + 120.0,
                          poll_interval_s=ctx.backend.poll_interval_s)
        except (KeyboardInterrupt, SystemExit, OSError) as exc:
            # Ctrl-C, SIGTERM, or a disk error golfrun cannot record the job past (the engine
            # turns it into ERROR): stop the trainer first. If golfrun dies, the job guard does.
            how = "interrupted" if not isinstance(exc, OSError) else f"I/O error ({exc.strerror})"
            ctx.log(f"{ctx.stage}: job {spec.name}: {how}, cancelling it")
            ctx.backend.cancel(handle)
            raise
        ctx.backend.fetch(handle)
    except (BackendError, GolfrunError) as exc:
        record.state = JobState.FAILED.value
        return f"job {spec.name}: {exc}"
    record.state = status.state.value
    record.backend_ids = list(status.backend_ids or [handle.id])
    record.reason = status.reason
    if status.state in (JobState.SUCCEEDED, JobState.ABORTED):  # an abort is an outcome, not a failure
        return None
    error = f"job {spec.name} {status.state.value}" + (f" (exit {status.exit_code})" if status.exit_code is not None else "")
    # The backend's reason may carry its own log tail; ours follows below, redacted, once.
    why = headline(status.reason)
    return error + (f": {why}" if why and why != f"exit code {status.exit_code}" else "")


def collect_result(spec: JobSpec, folder: Path, record: JobRecord,
                   error: str | None) -> tuple["TrainerResult | None", str | None]:
    """Keep the checkpoint, then read the trainer's result: (result, error so far and the parser's)."""
    from golfrun.trainer.results import load_results

    # Checkpoints first: a parser failure below must not cost the trained weights.
    if spec.keep is not None:
        try:
            spec.keep(folder)
        except OSError as exc:
            error = (error + "; " if error else "") + f"could not keep the checkpoint: {exc}"
    try:
        result = load_results(folder)
        if result.final is None:
            raise TrainerResultError(f"{folder}: results have no final score")
        record.result = result.to_dict()
        return result, error
    except TrainerResultError as exc:
        return None, (error + "; " if error else f"job {spec.name} finished but ") + headline(str(exc), folder)


def headline(reason: str, folder: Path | None = None) -> str:
    """The first line of a backend's or parser's message, without the log tail it announces (the
    job's own tail, redacted, follows once) and without the job folder's path."""
    line = reason.splitlines()[0] if reason else ""
    for cut in ("; last lines of", "; its last lines"):
        line = line.split(cut)[0]
    if folder is not None:
        line = line.removeprefix(f"{folder}: ")
    return line.rstrip(":; ")


def fill_ledger(ctx: "StageContext", spec: JobSpec, record: JobRecord, cache_state: str) -> None:
    """A finished run's GPU-seconds and compile figures (golfrun/ledger.py). GPUs held: the trainer's
    world size on a GPU; a failed job without results counts verify_pod.gpu_count > 0 as GPUs."""
    result = record.result or {}
    planned, gpus = _held_processes(ctx, spec)
    processes = int(result.get("world_size") or planned)
    on_gpu = (result.get("device") not in (None, "cpu")) if result else gpus > 0
    record.gpus = processes if on_gpu else 0
    record.gpu_seconds = ledger.job_gpu_seconds(result or None, record.duration_s, processes)
    record.compile = {"cache": cache_state if on_gpu else "off", "seconds": ledger.compile_seconds(result or None)}


def _held_processes(ctx: "StageContext", spec: JobSpec) -> tuple[int, int]:
    """(processes, GPUs) a job holds as far as its plan tells (a run without results is counted so): its
    processes on every node, as GPUs when verify_pod.gpu_count > 0."""
    processes = spec.nproc_per_node * max(1, spec_nodes(ctx))
    return processes, processes if ctx.campaign.verify_pod.gpu_count > 0 else 0


def held_devices(ctx: "StageContext", spec: JobSpec) -> dict[str, Any]:
    """job.json's `held`: what the job holds while it runs and the price per GPU-hour at its start, so that
    `status`, `spend` and the budget check count it before its attempt record exists (golfrun/ledger.py)."""
    processes, gpus = _held_processes(ctx, spec)
    return {"processes": processes, "gpus": gpus,
            "usd_per_gpu_hour": price_per_gpu_hour(ctx.campaign, ctx.campaign_dir)}


def record_attempt(ctx: "StageContext", record: JobRecord, started_at: str, state: str, *, attempt_id: str | None,
                   finished_at: str | None = None, source: str = "run") -> None:
    """The ledger's record of this run of the job, whatever its end (golfrun/ledger.py `Attempt`): a
    rerun replaces the job folder and the summary, never what an earlier attempt cost."""
    gpu_s = ledger.stage_totals([record])["gpu"]  # 0 for a CPU-only run: CPU time is not priced
    ledger.record_attempt(ctx.stage_dir, ledger.Attempt(
        stage=ctx.stage, job=record.name, state=state, started_at=started_at, finished_at=finished_at or now_iso(),
        duration_s=float(record.duration_s or 0.0), backend=record.backend, gpus=record.gpus,
        gpu_seconds=dict(record.gpu_seconds), usd=ledger.usd(gpu_s, price_per_gpu_hour(ctx.campaign, ctx.campaign_dir)),
        source=source), attempt_id)


def record_interrupted(ctx: "StageContext", spec: JobSpec, record: JobRecord, job_doc: dict[str, Any],
                       duration_s: float) -> None:
    """An attempt stopped while it ran (Ctrl-C, SIGTERM, a disk error): its wall time as held, on a
    best-effort basis (the disk may be what failed)."""
    record.duration_s = duration_s
    fill_ledger(ctx, spec, record, "off")
    try:
        record_attempt(ctx, record, job_doc["submitted_at"], "INTERRUPTED", attempt_id=job_doc["attempt_id"])
    except OSError:
        pass


def record_lost_attempt(ctx: "StageContext", spec: JobSpec, folder: Path) -> None:
    """A job folder that a golfrun killed outright (SIGKILL, a lost machine) left SUBMITTED with no
    attempt record: its record, rebuilt before the folder is cleaned for the rerun (nothing runs for
    it any more: `prepare` came first). Start: job.json's `submitted_at`; end: when the job guard
    ended the orphaned job (its note), else the last write in the folder (the trainer's log, results,
    checkpoints), a lower bound: a trainer may have been silent for a while before it was stopped
    (the guard itself killed, the machine lost). A job.json from before attempt ids is left alone."""
    from golfrun.trainer.results import load_results

    doc = read_json(folder / JOB_FILE) or {}
    started = ledger.unrecorded_start(ctx.stage_dir, spec.name, doc)
    if started is None:  # finished, recorded when stopped by a signal, or from before attempt ids
        return
    last, noted = held_until(folder, started)
    record = JobRecord(name=spec.name, env=redact_env(dict(spec.env)), backend=str(doc.get("backend") or ctx.backend.name))
    record.duration_s = round(last - started, 3)
    try:
        record.result = load_results(folder).to_dict()  # finished, but not adoptable (another key)
    except (TrainerResultError, OSError):
        pass  # the usual case: it never finished; its wall time counts as held
    held = dataclasses.replace(spec, nproc_per_node=int(doc.get("nproc_per_node") or spec.nproc_per_node))
    fill_ledger(ctx, held, record, "off")
    record_attempt(ctx, record, str(doc["submitted_at"]), "INTERRUPTED", attempt_id=str(doc["attempt_id"]),
                   finished_at=iso_at(last), source="reconstructed")
    end = "the end its guard noted" if noted else "the last write in its folder, at least"
    ctx.log(f"{ctx.stage}: job {spec.name}: recorded the attempt a killed golfrun left unrecorded "
            f"({record.duration_s:.1f}s from its start to {end})")


def spec_nodes(ctx: "StageContext") -> int:
    return int(ctx.campaign.backend.slurm.nodes) if ctx.campaign.backend.kind == "slurm" else 1


def run_jobs(ctx: "StageContext", specs: Sequence[JobSpec]) -> list[JobOutcome]:
    """Run the jobs one after another; all are attempted even when one fails."""
    return [run_job(ctx, spec) for spec in specs]


def keep_checkpoint(dest: Path) -> Callable[[Path], None]:
    """A `JobSpec.keep` that copies the job's final_model.pt and .ptz into `dest`."""

    def keep(folder: Path) -> None:
        for name in ("final_model.pt", "final_model.int6.ptz"):
            src = folder / name
            if src.is_file():
                copy_file_atomic(src, dest / name)

    return keep


# ---------------------------------------------------------------------------------- summaries


def new_summary(ctx: "StageContext", verdict: Verdict, started_at: str, **fields: Any) -> Summary:
    summary = Summary(
        stage=ctx.stage,
        campaign=ctx.campaign.name,
        verdict=verdict,
        started_at=started_at,
        finished_at=now_iso(),
        fingerprint=ctx.fingerprint,
        fingerprint_inputs=dict(ctx.fingerprint_inputs),
        **fields,
    )
    totals = ledger.stage_totals(summary.jobs)
    summary.gpu_seconds_total, summary.cpu_seconds_total = totals["gpu"], totals["cpu"]
    summary.usd = ledger.usd(totals["gpu"], price_per_gpu_hour(ctx.campaign, ctx.campaign_dir))
    return summary


def price_per_gpu_hour(campaign: "Campaign", campaign_dir: Path) -> float | None:
    """usd_per_gpu_hour, else the RunPod pod's rate / its GPUs (runs/<campaign>/pod.json), else None."""
    pod = read_json(Path(campaign_dir) / "pod.json")
    return ledger.price_per_gpu_hour(float(campaign.usd_per_gpu_hour), pod)


def failed_jobs_summary(ctx: "StageContext", started_at: str, outcomes: Sequence[JobOutcome],
                        decision: dict[str, Any] | None = None) -> Summary | None:
    """An ERROR summary when any job failed (reasons carry each failure and its log tail), else None."""
    failed = [o for o in outcomes if not o.ok and not o.aborted]  # an aborted job is a decision, not a failure
    if not failed:
        return None
    reasons = [f"{len(failed)} of {len(outcomes)} job(s) failed; no decision can be made"]
    reasons += [o.error or f"job {o.spec.name}: no result" for o in failed]
    return new_summary(ctx, Verdict.ERROR, started_at, jobs=[o.record for o in outcomes],
                       reasons=reasons, decision=decision or {})


def score(result: "TrainerResult") -> dict[str, Any]:
    """The figures a summary keeps for one result: both nats and bpb, times, artifact size."""
    final = result.final
    art = result.artifact
    return {
        "label": final.label if final else None,
        "val_loss": final.val_loss if final else None,
        "val_bpb": final.val_bpb if final else None,
        "eval_time_ms": final.eval_time_ms if final else None,
        "train_time_ms": result.train_time_ms,
        "artifact_bytes": art.total_bytes if art else None,
        "mode": result.mode,
        "seed": result.seed,
    }


def reference_index(ctx: "StageContext", seed: int) -> int | None:
    seeds = list(ctx.campaign.reference.seeds)
    return seeds.index(seed) if seed in seeds else None


def time_limit(ctx: "StageContext", explicit: float) -> float:
    """A job's deadline: `explicit`, the stage's own `[timeouts]` key, else (0) the gate's train and
    eval caps with room for compile and serialization."""
    g = ctx.campaign.gate_a
    return float(explicit) or 1.5 * (float(g.max_train_seconds) + float(g.max_eval_seconds)) + 900.0


def nproc(ctx: "StageContext") -> int:
    """Trainer processes per job (the Slurm chain sets it to the allocation's GPUs per node)."""
    return ctx.campaign.backend.local.nproc_per_node


def checks_for_result(ctx: "StageContext", name: str, result: "TrainerResult", train: bool) -> list[Check]:
    """Per-run checks shared by gate-a and gate-b: artifact cap (+ headroom warning), time caps."""
    from golfrun.gates.checks import artifact_checks, at_most

    g = ctx.campaign.gate_a
    size = result.artifact.total_bytes if result.artifact else None
    checks = artifact_checks(name, size, int(g.artifact_cap_bytes), int(g.artifact_headroom_bytes or 0))
    if train:
        secs = None if result.train_time_ms is None else result.train_time_ms / 1000.0
        checks.append(at_most(f"{name}train_seconds", secs, float(g.max_train_seconds),
                              detail="training wall clock as the trainer measured it"))
    eval_ms = result.final.eval_time_ms if result.final else None
    checks.append(at_most(f"{name}eval_seconds", None if eval_ms is None else eval_ms / 1000.0,
                          float(g.max_eval_seconds), detail=f"time of the final evaluation ({result.final.label if result.final else '?'})"))
    return checks
