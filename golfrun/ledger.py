"""The GPU-time ledger: what each job, stage and campaign held of the machine, and what it cost.

A job's device-seconds are its wall time × the devices it held (GPUs; on a CPU-only run, its
processes, counted as CPU-seconds), split by phase from the trainer's `timings_s` (results.json):

    startup    interpreter, data, model, torch.compile of the training graphs and the TTT warm-up
    train      the training loop (with its in-training validation)
    serialize  final_model.pt, Hessians, GPTQ, compression
    eval       the diagnostics and the TTT evaluation's timer
    other      the rest of the wall time (launcher, imports, teardown)

A trainer that writes no `timings_s` (a log-only upstream script) gives what its figures allow:
train from train_time_ms, eval from the evaluations' eval_time_ms, the rest is `other`.

A job served from its folder's cache held nothing this time: its `gpu_seconds` are all 0 and
`gpu_seconds_original` keeps the figures of the run that produced it. A stage sums its jobs, the
campaign its stages; USD = GPU-hours × the price per GPU-hour when one is known (never guessed).

Every run of a job, whatever its end (a failure, an interruption), also leaves one attempt record,
`<NN-stage>/attempts/<job>--<finished>--<id>.json` (schema `golfrun.ledger-attempt/1`): a rerun
replaces the job folder and the stage summary, but the GPU time a failed attempt held was paid for.
What a stage has spent is the sum of its attempts (`stage_spend`); a stage folder without any (written
before attempts were recorded) counts its summary. A run golfrun never saw end (it was killed) is
recorded by the next run that reaches the job's folder: adopted from its results.json, or rebuilt
from its job.json and the folder's last write (golfrun/stages/common.py, docs/cost.md). Until then, and
while a job runs, its job.json is SUBMITTED with no record: `stage_spend` counts it as held so far
(`unrecorded_attempts`), so that a status, a spend or a budget check in the meantime misses nothing.
Stdlib only: `golfrun status` reads this.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun import jobfolder
from golfrun.fileio import epoch_of, iso_at, write_json_atomic

if TYPE_CHECKING:
    from golfrun.summary import JobRecord, Summary

PARTS = ("startup", "train", "serialize", "eval", "other")


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else 0.0


def phase_seconds(result: Mapping[str, Any] | None) -> dict[str, float]:
    """Wall seconds per phase (without `other`) from a TrainerResult.to_dict()."""
    out = {part: 0.0 for part in PARTS if part != "other"}
    if not result:
        return out
    timings = result.get("timings_s")
    if isinstance(timings, Mapping):
        out["startup"] = sum(_num(timings.get(k)) for k in ("startup", "compile_train", "compile_eval"))
        out["train"] = _num(timings.get("train"))
        out["serialize"] = _num(timings.get("serialize"))
        out["eval"] = _num(timings.get("eval"))
        return out
    # log-only: what the trainer's own timers printed
    out["startup"] = _num(result.get("priming_s"))
    out["train"] = _num(result.get("train_time_ms")) / 1000.0
    out["eval"] = sum(_num(e.get("eval_time_ms")) for e in result.get("evals") or [] if isinstance(e, Mapping)) / 1000.0
    return out


def compile_seconds(result: Mapping[str, Any] | None) -> float | None:
    """Seconds the trainer spent compiling (training graphs' priming + TTT warm-up), None if unknown."""
    if not result:
        return None
    timings = result.get("timings_s")
    if isinstance(timings, Mapping):
        return round(_num(timings.get("compile_train")) + _num(timings.get("compile_eval")), 3)
    seen = [_num(result.get("priming_s"))] if isinstance(result.get("priming_s"), (int, float)) else []
    for e in result.get("evals") or []:
        ttt = e.get("ttt") if isinstance(e, Mapping) else None
        if isinstance(ttt, Mapping) and isinstance(ttt.get("warmup_s"), (int, float)):
            seen.append(float(ttt["warmup_s"]))
    return round(sum(seen), 3) if seen else None


def job_gpu_seconds(result: Mapping[str, Any] | None, wall_s: float | None, devices: int) -> dict[str, float]:
    """{startup, train, serialize, eval, other, total}: device-seconds of one run of a job.

    total = wall × devices; the phases are the trainer's figures × devices and `other` the rest. When
    the trainer's clock says more than golfrun's wall (they start at different moments) the parts win.
    """
    phases = phase_seconds(result)
    named = sum(phases.values())
    wall = _num(wall_s) if wall_s is not None else named
    out = {part: round(phases.get(part, 0.0) * devices, 3) for part in PARTS if part != "other"}
    out["other"] = round(max(wall - named, 0.0) * devices, 3)
    out["total"] = round(max(wall, named) * devices, 3)
    return out


def zero() -> dict[str, float]:
    return {part: 0.0 for part in (*PARTS, "total")}


def stage_totals(jobs: Iterable[JobRecord]) -> dict[str, float]:
    """New device-seconds of a stage's jobs, by unit: {"gpu": s, "cpu": s} (cached jobs add 0)."""
    totals = {"gpu": 0.0, "cpu": 0.0}
    for job in jobs:
        unit = "gpu" if job.gpus > 0 else "cpu"
        totals[unit] += _num((job.gpu_seconds or {}).get("total"))
    return {k: round(v, 3) for k, v in totals.items()}


def usd(gpu_seconds: float, usd_per_gpu_hour: float | None) -> float | None:
    if not usd_per_gpu_hour:
        return None
    return round(gpu_seconds / 3600.0 * usd_per_gpu_hour, 4)


def price_per_gpu_hour(configured: float, pod: Mapping[str, Any] | None) -> float | None:
    """The campaign's `usd_per_gpu_hour`, else the RunPod pod's cost per hour / its GPUs; None if unknown."""
    if configured and configured > 0:
        return float(configured)
    if pod:
        rate, gpus = _num(pod.get("cost_per_hr")), int(_num(pod.get("gpu_count")))
        if rate > 0 and gpus > 0:
            return rate / gpus
    return None


def minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60.0:.1f}"


# ------------------------------------------------------------------------- attempts

ATTEMPT_SCHEMA = "golfrun.ledger-attempt/1"
ATTEMPTS_DIR = "attempts"


@dataclass(frozen=True)
class Attempt:
    """One run of one trainer job and what it held of the machine, whatever its end."""

    stage: str
    job: str
    state: str  # the job's end: SUCCEEDED, FAILED, CANCELLED, … or INTERRUPTED (golfrun was stopped)
    started_at: str
    finished_at: str
    duration_s: float
    backend: str
    gpus: int  # 0: a CPU-only run, whose gpu_seconds count CPU processes
    gpu_seconds: dict[str, float]  # {startup, train, serialize, eval, other, total}, as a JobRecord's
    usd: float | None  # at the price known when it finished; None: no price
    # how golfrun knows its end: "run" (it saw the job end, or was stopped and said so), "adopted" (a
    # finished results.json found after golfrun was killed: its end is the file's time), "reconstructed"
    # (a job folder golfrun was killed under: its end is the folder's last write, a lower bound)
    source: str = "run"

    @property
    def unit(self) -> str:
        return "gpu" if self.gpus > 0 else "cpu"

    @property
    def total(self) -> float:
        return _num(self.gpu_seconds.get("total"))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": ATTEMPT_SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "Attempt":
        if not isinstance(data, Mapping) or data.get("schema") != ATTEMPT_SCHEMA:
            raise ValueError(f"{where}: not a {ATTEMPT_SCHEMA} record")
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{where}: missing key {missing[0]!r}")
        if not isinstance(data["gpu_seconds"], Mapping) or isinstance(data["gpus"], bool) or not isinstance(data["gpus"], int):
            raise ValueError(f"{where}: keys 'gpus' (an integer) and 'gpu_seconds' (an object) have the wrong type")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def new_attempt_id() -> str:
    return uuid.uuid4().hex[:8]


def record_attempt(stage_dir: Path, attempt: Attempt, attempt_id: str | None = None) -> Path:
    """Write one attempt record beside the stage's summary (a file per attempt: parallel Slurm array
    tasks never write the same file). `attempt_id`: the one the job's job.json names, so that a later
    run can tell whether this attempt was recorded (`is_recorded`)."""
    stamp = attempt.finished_at.replace("-", "").replace(":", "")
    path = Path(stage_dir) / ATTEMPTS_DIR / f"{attempt.job}--{stamp}--{attempt_id or new_attempt_id()}.json"
    write_json_atomic(path, attempt.to_dict())
    return path


def is_recorded(stage_dir: Path, job: str, attempt_id: str) -> bool:
    """Whether the attempt of `job` with this id has its record (readable or not)."""
    return any((Path(stage_dir) / ATTEMPTS_DIR).glob(f"{glob_escape(job)}--*--{glob_escape(attempt_id)}.json"))


def read_attempts(stage_dir: Path) -> tuple[list[Attempt], list[str]]:
    """(attempts in the order they finished, "path: why" for each record that cannot be read)."""
    attempts: list[Attempt] = []
    unreadable: list[str] = []
    folder = Path(stage_dir) / ATTEMPTS_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            attempts.append(Attempt.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path)))
        except (OSError, ValueError, TypeError) as exc:
            unreadable.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
    return sorted(attempts, key=lambda a: a.finished_at), unreadable


def unrecorded_start(stage_dir: Path, job: str, doc: Mapping[str, Any]) -> float | None:
    """The start (epoch) of the attempt a job's job.json describes, when that attempt has no record yet:
    SUBMITTED (running, or left so by a golfrun that was killed) with an attempt id; else None (a
    job.json from before attempt ids too)."""
    attempt_id, started = str(doc.get("attempt_id") or ""), epoch_of(str(doc.get("submitted_at") or ""))
    if doc.get("state") != "SUBMITTED" or not attempt_id or started is None or is_recorded(stage_dir, job, attempt_id):
        return None
    return started


def unrecorded_attempts(stage_dir: Path) -> list[Attempt]:
    """The stage's jobs that started and have no attempt record yet — running now, or left by a golfrun
    that was killed (the next run that reaches the folder records them) — each as held from its start to
    the job guard's note or its folder's last write: so far, at least. What it holds is job.json's `held`
    (written at submission); a job.json without it (from before) is left out."""
    out = []
    jobs = Path(stage_dir) / jobfolder.JOBS_DIR
    for path in sorted(jobs.glob(f"*/{jobfolder.JOB_FILE}")) if jobs.is_dir() else []:
        doc, job = jobfolder.read_json(path) or {}, path.parent.name
        held = doc.get("held")
        started = unrecorded_start(stage_dir, job, doc)
        if started is None or not isinstance(held, Mapping):
            continue
        end, _ = jobfolder.held_until(path.parent, started)
        gpus, processes = int(_num(held.get("gpus"))), max(1, int(_num(held.get("processes"))))
        seconds = job_gpu_seconds(None, round(end - started, 3), processes)
        price = held.get("usd_per_gpu_hour")
        out.append(Attempt(
            stage=Path(stage_dir).name.split("-", 1)[-1], job=job, state="UNRECORDED",
            started_at=str(doc["submitted_at"]), finished_at=iso_at(end), duration_s=round(end - started, 3),
            backend=str(doc.get("backend") or ""), gpus=gpus, gpu_seconds=seconds,
            usd=usd(seconds["total"], _num(price) or None) if gpus else None, source="unrecorded"))
    return out


@dataclass
class StageSpend:
    """What one stage has spent: every attempt of its jobs, failed ones included."""

    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    usd: float | None = None
    attempts: int = 0
    failed: int = 0  # attempts that did not succeed (an ABORTED one, stopped on purpose, is no failure)
    source: str = ""  # "attempts" | "summary" (a stage folder from before attempt records) | ""
    unreadable: tuple[str, ...] = ()
    unrecorded: int = 0  # jobs running, or left by a killed golfrun, without a record yet: counted so far


def stage_spend(stage_dir: Path, summary: "Summary | None") -> StageSpend:
    """The stage's attempts summed, with those not recorded yet (`unrecorded_attempts`); without any,
    its summary's new GPU/CPU-seconds and USD."""
    attempts, unreadable = read_attempts(stage_dir)
    pending = unrecorded_attempts(stage_dir)
    if not attempts and not pending:
        if summary is None or not (summary.gpu_seconds_total or summary.cpu_seconds_total):
            return StageSpend(unreadable=tuple(unreadable))
        return StageSpend(summary.gpu_seconds_total, summary.cpu_seconds_total, summary.usd,
                          source="summary", unreadable=tuple(unreadable))
    seconds = {"gpu": 0.0, "cpu": 0.0}
    for a in attempts + pending:
        seconds[a.unit] += a.total
    priced = [a.usd for a in attempts + pending if a.usd is not None]
    return StageSpend(round(seconds["gpu"], 3), round(seconds["cpu"], 3), round(sum(priced), 4) if priced else None,
                      attempts=len(attempts), failed=sum(1 for a in attempts if a.state not in ("SUCCEEDED", "ABORTED")),
                      source="attempts", unreadable=tuple(unreadable), unrecorded=len(pending))
