"""The stage summary (DESIGN contract 3): plain typed data, JSON with a schema version.

Stages build a `Summary`; the pipeline writes it atomically to
`runs/<campaign>/<NN>-<stage>/summary.json` and reads the upstream ones back. Nothing here does
I/O beyond (de)serialising a dict.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from golfrun.errors import SummaryError

SUMMARY_SCHEMA = "golfrun.summary/2"
# /1 files (no GPU-time ledger) stay readable: their new fields take the defaults below.
READABLE_SCHEMAS = ("golfrun.summary/1", SUMMARY_SCHEMA)

STAGES = ("verify-pod", "download-data", "gate-a", "ablation", "gate-b", "preserve")
STAGE_DIRS = {name: f"{i:02d}-{name}" for i, name in enumerate(STAGES)}


class Verdict(str, enum.Enum):
    PASS = "PASS"
    KILL = "KILL"
    HOLD = "HOLD"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"


# Distinct process exit codes, one per verdict (documented in docs/cli.md). 0 only for PASS.
EXIT_CODES = {
    Verdict.PASS: 0,
    Verdict.KILL: 10,
    Verdict.HOLD: 11,
    Verdict.ERROR: 12,
    Verdict.SKIPPED: 13,
}
EXIT_USAGE = 2  # bad input: campaign, --set, arguments
EXIT_LOCKED = 3  # another run holds the campaign lock
EXIT_BUDGET = 4  # a stage would pass the campaign's [budget]; it was not started (golfrun/budget.py)


@dataclass
class Check:
    """One comparison: `observed <op> limit` → passed. `severity` "warn" never fails a stage."""

    name: str
    observed: Any
    limit: Any
    op: str  # "<=", ">=", "==", "in", "contains", "ancestor-of", ...
    passed: bool
    detail: str = ""
    severity: str = "fail"  # "fail" | "warn"


@dataclass
class JobRecord:
    name: str
    env: dict[str, str]  # overrides only, secrets redacted
    backend: str
    backend_ids: list[str] = field(default_factory=list)
    state: str = ""  # final JobState value
    reason: str = ""
    cached: bool = False
    duration_s: float | None = None
    result: dict[str, Any] | None = None  # TrainerResult.to_dict()
    # The GPU-time ledger (golfrun/ledger.py, docs/cost.md). gpus: GPUs held (0 on a CPU-only run,
    # whose gpu_seconds then count CPU processes); gpu_seconds: {startup, train, serialize, eval,
    # other, total} held THIS run (all 0 when cached); gpu_seconds_original: the figures of the run
    # that produced a cached result; compile: {"cache": warm|cold|off, "seconds": s|None}.
    gpus: int = 0
    gpu_seconds: dict[str, float] = field(default_factory=dict)
    gpu_seconds_original: dict[str, float] | None = None
    compile: dict[str, Any] = field(default_factory=dict)


@dataclass
class Artifact:
    path: str  # relative to the campaign's runs folder
    bytes: int
    sha256: str


@dataclass
class Summary:
    stage: str
    campaign: str
    verdict: Verdict
    started_at: str  # ISO 8601 UTC
    finished_at: str
    fingerprint: str
    fingerprint_inputs: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=dict)
    jobs: list[JobRecord] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # human-readable why, first = main
    human_decision: dict[str, Any] | None = None  # set by `golfrun decide`
    # New GPU-seconds of this stage's jobs (cached jobs add 0), CPU-seconds of CPU-only jobs, and
    # their price when one is known (usd_per_gpu_hour, or the RunPod pod's rate); else None.
    gpu_seconds_total: float = 0.0
    cpu_seconds_total: float = 0.0
    usd: float | None = None
    # The hardware fingerprint (golfrun/machine.py) of the machine verify-pod last probed for this
    # campaign, with its hardware_key: which machine produced this summary. None before any probe.
    machine: dict[str, Any] | None = None
    schema: str = SUMMARY_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<summary>") -> "Summary":
        if not isinstance(d, dict):
            raise SummaryError(f"{source}: expected a JSON object")
        if d.get("schema") not in READABLE_SCHEMAS:
            raise SummaryError(f"{source}: unknown schema {d.get('schema')!r}, expected {SUMMARY_SCHEMA!r}")
        try:
            return cls(
                stage=d["stage"],
                campaign=d["campaign"],
                verdict=Verdict(d["verdict"]),
                started_at=d["started_at"],
                finished_at=d["finished_at"],
                fingerprint=d["fingerprint"],
                fingerprint_inputs=dict(d.get("fingerprint_inputs", {})),
                checks=[Check(**c) for c in d.get("checks", [])],
                decision=dict(d.get("decision", {})),
                jobs=[JobRecord(**j) for j in d.get("jobs", [])],
                artifacts=[Artifact(**a) for a in d.get("artifacts", [])],
                reasons=list(d.get("reasons", [])),
                human_decision=d.get("human_decision"),
                gpu_seconds_total=float(d.get("gpu_seconds_total") or 0.0),
                cpu_seconds_total=float(d.get("cpu_seconds_total") or 0.0),
                usd=None if d.get("usd") is None else float(d["usd"]),
                machine=d.get("machine") if isinstance(d.get("machine"), dict) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SummaryError(f"{source}: malformed summary ({exc})") from exc
