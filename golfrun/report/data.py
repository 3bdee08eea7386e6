"""The report's data: plain typed values that `collect` reads from a campaign folder and that
`figures` and `render_html` draw. No I/O here; `to_dict` gives the JSON form (`report.json`,
schema `golfrun.report/1`).

A value the campaign did not produce (an older summary, a stage that never ran, a trainer that
printed no curve) is None or an empty list, never a made-up 0; `ReportData.missing` says in words
what is absent and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_SCHEMA = "golfrun.report/1"

Scalar = float | int | str | bool | None


@dataclass(frozen=True)
class CurvePoint:
    step: int
    time_s: float | None  # training wall clock at this step (the log's train_time), None if unknown
    train_loss: float | None = None
    val_bpb: float | None = None


@dataclass(frozen=True)
class Curve:
    label: str  # "gate-a/seed0", "reference/train0"
    stage: str  # "gate-a" | "gate-b" | "reference"
    source: str  # the log it was parsed from, relative to the campaign folder where possible
    points: list[CurvePoint] = field(default_factory=list)


@dataclass(frozen=True)
class CheckRow:
    name: str
    observed: Scalar
    op: str
    limit: Scalar
    passed: bool
    severity: str  # "fail" | "warn"
    detail: str = ""


@dataclass(frozen=True)
class Look:
    """One look of a sequential gate-b test."""

    n: int | None
    t: float | None
    df: float | None
    p: float | None
    boundary: float | None
    futility_boundary: float | None
    decision: str  # PASS | KILL | continue
    reason: str = ""


@dataclass(frozen=True)
class TestStats:
    test: str  # in words ("one-sided Welch t-test on per-seed val_loss: …")
    t: float | None
    df: float | None
    p: float | None
    alpha: float | None
    margin: float | None
    passed: bool | None
    looks: list[Look] = field(default_factory=list)


@dataclass(frozen=True)
class GpuTime:
    """A job's GPU-seconds by phase (the ledger's keys: startup, train, serialize, eval, other, total)."""

    gpus: int | None  # 0: a CPU-only run, whose ledger counts CPU processes (CPU-seconds)
    seconds: dict[str, float]  # held THIS run: a cached job's are 0
    from_ledger: bool  # False: no ledger in the summary, `seconds` is {"wall": duration_s × gpus}
    compile_cache: str | None = None  # "warm" | "cold" | "off"
    compile_seconds: float | None = None
    original_total: float | None = None  # a cached job: the total of the run that produced it


@dataclass(frozen=True)
class JobInfo:
    stage: str
    name: str
    state: str
    cached: bool
    seed: int | None
    mode: str | None
    val_bpb: float | None
    val_loss: float | None
    duration_s: float | None
    started_at: str | None  # ISO 8601 UTC, from the job folder's job.json
    finished_at: str | None
    gpu: GpuTime | None


@dataclass(frozen=True)
class StageInfo:
    stage: str
    verdict: str | None  # None: no summary
    started_at: str | None = None
    finished_at: str | None = None
    reasons: list[str] = field(default_factory=list)
    checks: list[CheckRow] = field(default_factory=list)
    jobs: list[JobInfo] = field(default_factory=list)
    gpu_seconds_total: float | None = None  # the stage's new GPU-seconds (None: no ledger)
    cpu_seconds_total: float | None = None  # CPU-seconds of CPU-only jobs
    usd: float | None = None
    decided_by_person: bool = False
    stats: TestStats | None = None
    problem: str = ""  # why there is no usable summary ("not run", "unreadable: …")


@dataclass(frozen=True)
class AttemptRow:
    """One run of one trainer job as the ledger recorded it (`<NN-stage>/attempts/*.json`), whatever its end."""

    stage: str
    job: str
    state: str  # SUCCEEDED, FAILED, CANCELLED, … or INTERRUPTED (golfrun was stopped while it ran)
    started_at: str
    finished_at: str
    duration_s: float
    gpus: int  # 0: a CPU-only run, whose device-seconds are CPU-seconds
    device_seconds: float  # wall × GPUs (or processes) held
    usd: float | None


@dataclass(frozen=True)
class StageSpendRow:
    """What one stage has spent, every attempt of its jobs counted (golfrun/ledger.py `stage_spend`)."""

    stage: str
    attempts: int
    failed: int  # attempts that did not succeed; their time is in the seconds
    gpu_seconds: float
    cpu_seconds: float
    usd: float | None
    source: str  # "attempts" | "summary" (no attempt records) | "jobs" (a summary before the ledger) | ""


@dataclass(frozen=True)
class Spend:
    """The campaign's spend as the ledger counts it (golfrun/budget.py `spent`, what `golfrun spend` and
    the `[budget]` check read): every attempt of every job, failed and interrupted ones included, and on
    RunPod the pods' GPU time no job held, which is in `gpu_seconds` too."""

    stages: list[StageSpendRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)  # in the order they finished
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    usd: float | None = None
    usd_source: str = ""  # "pods" (RunPod's rate × up time) | "ledger" | ""
    attempts_total: int = 0
    attempts_failed: int = 0
    pod_gpu_seconds: float | None = None  # None: no RunPod pod
    pod_idle_gpu_seconds: float | None = None
    unreadable: list[str] = field(default_factory=list)  # attempt records not counted


@dataclass(frozen=True)
class Score:
    """One final score: a variant's (ablation) or a seed's (gate-b, reference)."""

    group: str  # "baseline", a variant name, "gate-b", "reference"
    seed: int | None
    val_bpb: float
    outcome: str = ""  # ablation: PROMOTE | HOLD | KILL


@dataclass(frozen=True)
class RungVariant:
    """One eval-only variant at one rung of the ablation's successive halving."""

    name: str
    val_bpb: float | None
    delta_bpb: float | None
    kept: bool
    p_worse_than_best: float | None = None  # paired rule; None for the rung's best


@dataclass(frozen=True)
class Rung:
    """A rung of the ablation's successive halving (`decision.rungs`): who went on, and by which rule."""

    rung: int | None
    fraction: float | None
    rule: str  # rank | paired
    keep: float | None = None  # rank: the part that goes on
    alpha: float | None = None  # paired: dropped below this p-value
    chunks: int | None = None  # paired: VAL_CHUNKS of the rung jobs
    variants: list[RungVariant] = field(default_factory=list)


@dataclass(frozen=True)
class Thresholds:
    """The lines drawn across the BPB chart; each None when its stage did not say."""

    reference_mean_bpb: float | None = None
    gate_a_limit_bpb: float | None = None
    gate_b_limit_bpb: float | None = None
    ablation_baseline_bpb: float | None = None
    promote_bpb: float | None = None  # baseline + promote_delta_bpb
    hold_bpb: float | None = None  # baseline + hold_delta_bpb


@dataclass(frozen=True)
class Provenance:
    commit: str | None = None
    dirty: bool | None = None
    trainer_path: str | None = None
    trainer_sha256: str | None = None
    hardware: str | None = None  # GPUs, else the CPU
    host: str | None = None
    torch: str | None = None
    cuda: str | None = None
    attention: str | None = None
    python: str | None = None


@dataclass(frozen=True)
class ReportData:
    campaign: str
    campaign_dir: str
    stages: list[StageInfo]
    curves: list[Curve] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)
    halving: list[Rung] = field(default_factory=list)
    promoted: str | None = None
    gate_b_variant: str | None = None
    provenance: Provenance = field(default_factory=Provenance)
    missing: list[str] = field(default_factory=list)
    spend: Spend = field(default_factory=Spend)
    schema: str = REPORT_SCHEMA

    def stage(self, name: str) -> StageInfo | None:
        return next((s for s in self.stages if s.stage == name), None)

    def jobs(self) -> list[JobInfo]:
        return [j for s in self.stages for j in s.jobs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
