"""Money and device-time of campaigns: what each has spent, what a stage is about to cost, and the
`[budget]` check that refuses to start a stage the campaign cannot pay for.

Spent (per campaign folder, any backend): every attempt of every job, failed and interrupted ones
included, and jobs not recorded yet as held so far (golfrun/ledger.py `stage_spend`: the stages' attempt
records and `unrecorded_attempts`; a stage without any counts
its summary's `gpu_seconds_total`, `cpu_seconds_total`, `usd`; a summary without those — written
before the ledger — its jobs' `duration_s` × their GPUs) and, on RunPod, the pods' own cost from `pod.json`
(every pod of the campaign, the re-rolled and lost ones too: it is what the account pays), whose GPU
time no job held (the pods' up time × GPUs less the jobs': set-up, verify-pod, pulls) is added to
the GPU-seconds.

Estimate (before a stage that runs trainer jobs): each planned job that its folder cannot serve
from cache costs what earlier jobs of the campaign measured — the mean device-seconds of the same
stage's jobs, else of all its jobs — or, when nothing was measured yet, its time limit × its
processes (an upper bound). Device-seconds are GPU-seconds, or process-seconds on a CPU-only run.

`check_stage` raises BudgetError (exit 4, docs/cli.md) when spent + estimate would pass
`[budget] gpu_hours` or `[budget] usd`; USD needs a price (`usd_per_gpu_hour`, or the RunPod
pod's rate): without one only what was already spent is held to the USD budget. `check_spent` refuses
what spent alone already reaches: the Slurm chain, before its first sbatch; a RunPod pod, before it is
created.
Stdlib only: `golfrun spend` reads this.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun import ledger
from golfrun.errors import BudgetError, SummaryError
from golfrun.fileio import now_iso, write_json_atomic
from golfrun.summary import STAGE_DIRS, STAGES, Summary

if TYPE_CHECKING:
    from golfrun.backends.runpod.pods import PodRecord
    from golfrun.campaign import Campaign
    from golfrun.stages.context import StageContext


@dataclass
class Spent:
    """What one campaign folder holds about its spending."""

    campaign: str
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    usd: float | None = None  # None: no price was known for any of it
    usd_source: str = ""  # "pods" (RunPod's rate × time) | "ledger" | ""
    pods: int = 0
    stages: list[str] = field(default_factory=list)
    attempts: int = 0  # job runs recorded in the stages' attempt records (golfrun/ledger.py)
    attempts_failed: int = 0  # of which did not succeed: their time is in the figures above
    attempts_unrecorded: int = 0  # jobs without a record yet (running, or left by a killed golfrun): so far, in too
    pod_idle_gpu_seconds: float = 0.0  # RunPod: pod GPU time no job held (in gpu_seconds too)
    pod_gpu_seconds: float | None = None  # RunPod: the pods' up time × GPUs, busy or idle; None off RunPod
    budget_usd: float = 0.0
    budget_gpu_hours: float = 0.0
    job_seconds: dict[str, list[float]] = field(default_factory=dict)  # stage → measured device-seconds per job
    # stage → what it added to the figures above (its attempts; source "jobs": a summary from before the ledger)
    by_stage: dict[str, ledger.StageSpend] = field(default_factory=dict)

    @property
    def device_seconds(self) -> float:
        return self.gpu_seconds + self.cpu_seconds

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("job_seconds")
        d.pop("by_stage")
        d["gpu_hours"], d["cpu_hours"] = round(self.gpu_seconds / 3600, 4), round(self.cpu_seconds / 3600, 4)
        return d


def _read_summary(path: Path) -> Summary | None:
    try:
        return Summary.from_dict(json.loads(path.read_text()), str(path))
    except (OSError, ValueError, SummaryError):
        return None


def _job_device_seconds(job: Any) -> float:
    """Device-seconds one job held when it ran (its original figures when served from cache)."""
    figures = job.gpu_seconds_original if job.cached and job.gpu_seconds_original else job.gpu_seconds
    total = float((figures or {}).get("total") or 0.0)
    if total > 0:
        return total
    devices = max(1, int(job.gpus or 0) or int((job.result or {}).get("world_size") or 1))
    return float(job.duration_s or 0.0) * devices if not job.cached else 0.0


def _add_stage(spent: Spent, stage: str, s: Summary | None, spend: ledger.StageSpend, usd_parts: list[float]) -> None:
    """One stage's spending: its attempt records (failed attempts too), else its summary's ledger."""
    spent.attempts += spend.attempts
    spent.attempts_failed += spend.failed
    spent.attempts_unrecorded += spend.unrecorded
    if spend.source:
        spent.gpu_seconds += spend.gpu_seconds
        spent.cpu_seconds += spend.cpu_seconds
        if spend.usd is not None:
            usd_parts.append(spend.usd)
    if s is None:
        return
    spent.stages.append(stage)
    if not spend.source:  # a summary from before the ledger: its jobs' wall time × GPUs
        for job in s.jobs:
            if job.cached:
                continue
            if int(job.gpus or 0) > 0:
                spent.gpu_seconds += _job_device_seconds(job)
            else:
                spent.cpu_seconds += _job_device_seconds(job)
    measured = [x for x in (_job_device_seconds(j) for j in s.jobs) if x > 0]
    if measured:
        spent.job_seconds[stage] = measured


def _budget_of(campaign_dir: Path) -> tuple[float, float]:
    try:
        table = tomllib.loads((campaign_dir / "campaign.resolved.toml").read_text()).get("budget") or {}
    except (OSError, tomllib.TOMLDecodeError):
        return 0.0, 0.0
    return float(table.get("usd") or 0.0), float(table.get("gpu_hours") or 0.0)


def pod_record(campaign_dir: Path) -> "PodRecord | None":
    """The campaign's RunPod pod record (pod.json: this pod and the earlier ones), or None."""
    from golfrun.backends.runpod.pods import POD_JSON, PodRecord

    try:
        data = json.loads((Path(campaign_dir) / POD_JSON).read_text())
    except (OSError, ValueError):
        return None
    return PodRecord(**{k: v for k, v in data.items() if k in PodRecord.__dataclass_fields__})


def pod_idle_gpu_seconds(record: "PodRecord", job_gpu_seconds: float) -> float:
    """GPU-seconds the campaign's pods were up with no trainer job holding them (set-up, verify-pod,
    data, pulls, waits): the pods' GPU time less the jobs' (the ledger's attempts)."""
    return round(max(0.0, record.up_gpu_seconds() - job_gpu_seconds), 3)


def spent(campaign_dir: Path) -> Spent:
    """Everything one campaign folder says it spent (see the module's docstring)."""
    out = Spent(campaign=campaign_dir.name)
    out.budget_usd, out.budget_gpu_hours = _budget_of(campaign_dir)
    usd_parts: list[float] = []
    for stage in STAGES:
        s = _read_summary(campaign_dir / STAGE_DIRS[stage] / "summary.json")
        spend = ledger.stage_spend(campaign_dir / STAGE_DIRS[stage], s)
        before = out.gpu_seconds, out.cpu_seconds
        _add_stage(out, stage, s, spend, usd_parts)
        gpu, cpu = round(out.gpu_seconds - before[0], 3), round(out.cpu_seconds - before[1], 3)
        out.by_stage[stage] = replace(spend, gpu_seconds=gpu, cpu_seconds=cpu,
                                      source=spend.source or ("jobs" if gpu or cpu else ""))
    record = pod_record(campaign_dir)
    if record is not None:
        out.usd, out.usd_source = round(record.cost_so_far(), 4), "pods"
        out.pods = len(record.earlier_pods) + (1 if record.pod_id else 0)
        out.pod_gpu_seconds = round(record.up_gpu_seconds(), 3)
        out.pod_idle_gpu_seconds = pod_idle_gpu_seconds(record, out.gpu_seconds)
        out.gpu_seconds += out.pod_idle_gpu_seconds  # the account pays for a pod's GPUs, busy or idle
    elif usd_parts:
        out.usd, out.usd_source = round(sum(usd_parts), 4), "ledger"
    return out


def spend_table(runs_dir: Path) -> list[Spent]:
    """One row per campaign folder under the runs folder (a folder with a summary or a pod.json)."""
    rows = []
    for folder in sorted(p for p in Path(runs_dir).iterdir() if p.is_dir()) if Path(runs_dir).is_dir() else []:
        if any((folder / d / "summary.json").exists() for d in STAGE_DIRS.values()) or (folder / "pod.json").exists():
            rows.append(spent(folder))
    return rows


def render_spend(rows: Sequence[Spent]) -> str:
    if not rows:
        return "no campaigns with summaries under this runs folder"
    head = f"{'campaign':<24} {'GPU-h':>8} {'CPU-h':>8} {'USD':>9} {'pods':>4}  {'budget':<18} stages"
    lines = [head, "-" * len(head)]
    for r in rows:
        usd = "-" if r.usd is None else f"{r.usd:.2f}"
        budget = ", ".join(x for x in (f"{r.budget_usd:g} USD" if r.budget_usd else "",
                                       f"{r.budget_gpu_hours:g} GPU-h" if r.budget_gpu_hours else "") if x) or "-"
        lines.append(f"{r.campaign:<24} {r.gpu_seconds / 3600:>8.3f} {r.cpu_seconds / 3600:>8.3f} {usd:>9} "
                     f"{r.pods:>4}  {budget:<18} {len(r.stages)}"
                     + (f"  ({r.attempts_failed} failed attempt(s) included)" if r.attempts_failed else "")
                     + (f"  ({r.attempts_unrecorded} job(s) not recorded yet included, so far)"
                        if r.attempts_unrecorded else ""))
    total_usd = sum(r.usd for r in rows if r.usd is not None)
    lines.append(f"{'total':<24} {sum(r.gpu_seconds for r in rows) / 3600:>8.3f} "
                 f"{sum(r.cpu_seconds for r in rows) / 3600:>8.3f} {total_usd:>9.2f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ before a stage


@dataclass(frozen=True)
class Estimate:
    jobs: int  # planned jobs not served from cache
    device_seconds: float
    basis: str  # how the per-job figure was found


def estimate(ctx: "StageContext", specs: Sequence[Any], so_far: Spent) -> Estimate:
    """Device-seconds the stage's planned, uncached jobs will hold (see the module's docstring)."""
    from golfrun.stages import common

    todo = [s for s in specs if not ctx.job_cache or common.cached_result(ctx, s, common.job_env(ctx, s)) is None]
    same = so_far.job_seconds.get(ctx.stage) or []
    every = [x for xs in so_far.job_seconds.values() for x in xs]
    if same or every:
        measured = same or every
        per_job = sum(measured) / len(measured)
        where = f"{ctx.stage}'s" if same else "this campaign's"
        return Estimate(len(todo), per_job * len(todo), f"{per_job / 60:.1f} min per job, the mean of {where} "
                                                        f"{len(measured)} measured job(s)")
    bound = sum(float(s.time_limit_s) * max(1, int(s.nproc_per_node)) for s in todo)
    return Estimate(len(todo), bound, "no job measured yet: each job's time limit × its processes")


STOP_FILE = "budget_stop.json"
STOP_SCHEMA = "golfrun.budget-stop/1"


def record_stop(stage_dir: Path, stage: str, message: str) -> None:
    """A stage refused by `check_stage` where no golfrun process waits for it (a Slurm stage job or
    array task): the refusal, beside the stage's summary, for the golfrun that follows the campaign
    (its exit code 4 alone says no why)."""
    write_json_atomic(Path(stage_dir) / STOP_FILE, {"schema": STOP_SCHEMA, "stage": stage, "message": message,
                                                    "at": now_iso()})


def read_stop(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's recorded budget refusal, or None (none, unreadable or of another schema)."""
    try:
        data = json.loads((Path(stage_dir) / STOP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == STOP_SCHEMA else None


def check_stage(ctx: "StageContext", plan: Callable[[], Sequence[Any]]) -> Estimate | None:
    """BudgetError when the stage's planned jobs cannot be paid for within `[budget]`; None (and
    no planning) when the campaign has no budget."""
    b = ctx.campaign.budget
    if not (b.usd or b.gpu_hours):
        return None
    so_far = spent(ctx.campaign_dir)
    est = estimate(ctx, plan(), so_far)
    if not est.jobs:
        return est  # nothing to pay for: served from cache
    need_h, used_h = est.device_seconds / 3600, so_far.device_seconds / 3600
    what = f"{ctx.stage} plans {est.jobs} job(s) not in cache, ~{need_h:.3f} device-hours ({est.basis})"
    if b.gpu_hours and used_h + need_h > b.gpu_hours:
        raise refusal(what, f"used {used_h:.3f} of [budget] gpu_hours = {b.gpu_hours:g}", ctx.stage)
    if b.usd:
        from golfrun.stages.common import price_per_gpu_hour

        price = price_per_gpu_hour(ctx.campaign, ctx.campaign_dir)
        used_usd = so_far.usd or 0.0
        need_usd = ledger.usd(est.device_seconds, price) or 0.0
        if used_usd + need_usd > b.usd:
            priced = f"~{need_usd:.2f} USD at {price:.2f} USD/GPU-hour" if price else "no price known for it"
            raise refusal(f"{what}, {priced}", f"spent {used_usd:.2f} of [budget] usd = {b.usd:g}", ctx.stage)
    return est


def refusal(why: str, used: str, what: str) -> BudgetError:
    """The one form of a budget refusal (exit 4): why, what the campaign has used of which budget, what was
    not started."""
    return BudgetError(f"budget: {why}; the campaign has {used}: {what} not started "
                       f"(raise the budget or plan fewer jobs)")


def check_spent(campaign: "Campaign", campaign_dir: Path, what: str) -> Spent | None:
    """BudgetError when what the campaign folder has already spent (every attempt, `spent`) reaches
    `[budget]`, before `what` starts anything: the Slurm chain, which is submitted whole at launch (its
    stage jobs then hold each stage to the budget on the cluster), or a new RunPod pod. None when the campaign has no budget."""
    b = campaign.budget
    if not (b.usd or b.gpu_hours):
        return None
    so_far = spent(Path(campaign_dir))
    used_h = so_far.device_seconds / 3600
    why = f"what {campaign_dir} records as spent (every attempt) reaches it"
    if b.gpu_hours and used_h >= b.gpu_hours:
        raise refusal(why, f"used {used_h:.3f} of [budget] gpu_hours = {b.gpu_hours:g}", what)
    if b.usd and so_far.usd is not None and so_far.usd >= b.usd:
        raise refusal(why, f"spent {so_far.usd:.2f} of [budget] usd = {b.usd:g}", what)
    return so_far
