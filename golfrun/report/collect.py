"""`collect(campaign_dir) -> ReportData`: read what a campaign folder holds, defensively.

Every input may be absent or from an older golfrun (a stage that never ran, a summary without the
GPU ledger, a job folder without a log): what is there is read, what is not is None and named in
`ReportData.missing`. Summaries are read as plain JSON rather than through `Summary.from_dict` so
that one unreadable or newer-shaped file costs its own stage, not the report. Training curves come
from each job's log through the progress parser (golfrun/trainer/progress.py), the one reader of
trainer lines. Stdlib only.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from golfrun.report.data import (
    AttemptRow, CheckRow, Curve, CurvePoint, GpuTime, JobInfo, Look, Provenance, ReportData, Rung, RungVariant, Scalar,
    Score, Spend, StageInfo, StageSpendRow, TestStats, Thresholds,
)
from golfrun.summary import STAGE_DIRS, STAGES
from golfrun.trainer.progress import train_progress
from golfrun.trainer.results import trainer_logs

CURVE_STAGES = ("gate-a", "gate-b")
LEDGER_PHASES = ("startup", "train", "serialize", "eval", "other")
REFERENCE_FOLDER = "reference"  # runs/<campaign>/reference/*.txt|*.log: the record's own logs


# ------------------------------------------------------------------------------ small readers


def num(x: Any) -> float | None:
    """A finite number, or None (booleans, strings, NaN and infinities are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def integer(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def text(x: Any) -> str | None:
    return x if isinstance(x, str) and x else None


def obj(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def scalar(x: Any) -> Scalar:
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if x is None or isinstance(x, (int, str, bool)):
        return x
    return json.dumps(x, default=str)[:200]


def read_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(the object, "") or (None, why not)."""
    if not path.is_file():
        return None, "not run"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unreadable {path.name}: {exc}"
    if not isinstance(data, dict):
        return None, f"unreadable {path.name}: not a JSON object"
    return data, ""


# ------------------------------------------------------------------------------ curves


def parse_curve(lines: Iterable[str]) -> list[CurvePoint]:
    """Training-loss and validation points of one trainer log, in order.

    The record logs training time only on its train-loss lines (in minutes, one decimal) and on
    the stopping line (ms); a validation line gets its time by linear interpolation in steps
    between those anchors, and None outside them.
    """
    points: list[CurvePoint] = []
    anchors: dict[int, float] = {0: 0.0}  # before the first step no training time has passed
    for p in train_progress(lines):
        time_s = None if p.train_time_min is None else p.train_time_min * 60.0
        if time_s is not None:
            anchors[p.step] = time_s
        loss, bpb = num(p.train_loss), num(p.val_bpb)
        if loss is not None or bpb is not None:
            points.append(CurvePoint(p.step, time_s, loss, bpb))
    return [pt if pt.time_s is not None else CurvePoint(pt.step, _interpolate(anchors, pt.step), pt.train_loss, pt.val_bpb)
            for pt in points]


def _interpolate(anchors: Mapping[int, float], step: int) -> float | None:
    below = [s for s in anchors if s <= step]
    above = [s for s in anchors if s >= step]
    if not below or not above:
        return None
    a, b = max(below), min(above)
    if a == b:
        return anchors[a]
    return anchors[a] + (anchors[b] - anchors[a]) * (step - a) / (b - a)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _log_curve(path: Path, label: str, stage: str, root: Path) -> Curve | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    points = parse_curve(lines)
    return Curve(label, stage, _rel(path, root), points) if points else None


def job_curve(job_dir: Path, label: str, stage: str, root: Path) -> Curve | None:
    """The first of the job's logs (its `<RUN_ID>.txt`, then job.log) that holds a curve."""
    for path in trainer_logs(job_dir):
        if path.is_file():
            curve = _log_curve(path, label, stage, root)
            if curve is not None:
                return curve
    return None


def reference_curves(campaign_dir: Path, extra: Sequence[Path]) -> list[Curve]:
    folder = campaign_dir / REFERENCE_FOLDER
    found = sorted(p for p in folder.iterdir() if p.suffix in (".txt", ".log")) if folder.is_dir() else []
    curves = [_log_curve(p, f"reference/{p.stem}", "reference", campaign_dir) for p in [*found, *extra]]
    return [c for c in curves if c is not None]


# ------------------------------------------------------------------------------ stages and jobs


def _checks(raw: Any) -> list[CheckRow]:
    rows = []
    for c in raw if isinstance(raw, list) else []:
        c = obj(c)
        if not text(c.get("name")):
            continue
        rows.append(CheckRow(c["name"], scalar(c.get("observed")), str(c.get("op") or ""), scalar(c.get("limit")),
                             c.get("passed") is True, str(c.get("severity") or "fail"), str(c.get("detail") or "")))
    return rows


def _gpu(raw: Mapping[str, Any]) -> GpuTime | None:
    """The job's GPU ledger (gpus, gpu_seconds{…}, compile{cache, seconds}); else its wall time."""
    ledger = obj(raw.get("gpu_seconds"))
    comp = obj(raw.get("compile"))
    gpus = integer(raw.get("gpus"))
    if ledger:
        seconds = {k: v for k in (*LEDGER_PHASES, "total") if (v := num(ledger.get(k))) is not None}
        if "total" not in seconds:
            seconds["total"] = sum(seconds.values())
        original = obj(raw.get("gpu_seconds_original"))
        return GpuTime(gpus, seconds, True, text(comp.get("cache")), num(comp.get("seconds")),
                       num(original.get("total")) if original else None)
    wall = num(raw.get("duration_s"))
    if wall is None:
        return None
    return GpuTime(gpus, {"wall": wall * (gpus or 1), "total": wall * (gpus or 1)}, False,
                   text(comp.get("cache")), num(comp.get("seconds")))


def _job(stage: str, stage_dir: Path, raw: Mapping[str, Any]) -> JobInfo:
    name = str(raw.get("name") or "?")
    result = obj(raw.get("result"))
    final = obj(result.get("final"))
    spec, _ = read_json(stage_dir / "jobs" / name / "job.json")
    spec = spec or {}
    return JobInfo(
        stage=stage, name=name, state=str(raw.get("state") or "?"), cached=raw.get("cached") is True,
        seed=integer(result.get("seed")) if "seed" in result else integer(spec.get("seed")),
        mode=text(result.get("mode")) or text(spec.get("mode")),
        val_bpb=num(final.get("val_bpb")), val_loss=num(final.get("val_loss")),
        duration_s=num(raw.get("duration_s")),
        started_at=text(spec.get("submitted_at")), finished_at=text(spec.get("finished_at")),
        gpu=_gpu(raw),
    )


def _looks(raw: Any) -> list[Look]:
    looks = []
    for item in raw if isinstance(raw, list) else []:
        d = obj(item)
        looks.append(Look(integer(d.get("n")), num(d.get("t")), num(d.get("df")), num(d.get("p")),
                          num(d.get("boundary")), num(d.get("futility_boundary")), str(d.get("decision") or ""),
                          str(d.get("reason") or "")))
    return looks


def _stats(decision: Mapping[str, Any]) -> TestStats | None:
    rt = obj(decision.get("record_test"))
    looks = _looks(decision.get("looks") or rt.get("looks"))
    if not rt and not looks:
        return None
    passed = rt.get("passed")
    return TestStats(str(rt.get("test") or "record test"), num(rt.get("t")), num(rt.get("df")), num(rt.get("p")),
                     num(rt.get("alpha")), num(rt.get("margin_nats", rt.get("margin"))),
                     passed if isinstance(passed, bool) else None, looks)


def _cost(raw: Mapping[str, Any], key: str) -> float | None:
    """A stage-level ledger figure, at the top of the summary or inside its decision."""
    value = num(raw.get(key))
    return value if value is not None else num(obj(raw.get("decision")).get(key))


def read_stage(campaign_dir: Path, stage: str) -> tuple[StageInfo, dict[str, Any]]:
    """The stage's typed view and its raw decision ({} when there is no usable summary)."""
    stage_dir = campaign_dir / STAGE_DIRS[stage]
    raw, problem = read_json(stage_dir / "summary.json")
    if raw is None or not text(raw.get("verdict")):
        return StageInfo(stage, None, problem=problem or "summary has no verdict"), {}
    decision = obj(raw.get("decision"))
    reasons = [r for r in raw.get("reasons") or [] if isinstance(r, str)]
    jobs = [_job(stage, stage_dir, obj(j)) for j in raw.get("jobs") or [] if isinstance(j, dict)]
    info = StageInfo(
        stage=stage, verdict=str(raw["verdict"]), started_at=text(raw.get("started_at")),
        finished_at=text(raw.get("finished_at")), reasons=reasons, checks=_checks(raw.get("checks")), jobs=jobs,
        gpu_seconds_total=_cost(raw, "gpu_seconds_total"), cpu_seconds_total=_cost(raw, "cpu_seconds_total"),
        usd=_cost(raw, "usd"),
        decided_by_person=bool(raw.get("human_decision")), stats=_stats(decision) if stage == "gate-b" else None,
    )
    return info, decision


# ------------------------------------------------------------------------------ scores and lines


def reference_scores(campaign_dir: Path) -> list[Score]:
    """The published record's per-seed val_bpb, from the resolved campaign's [reference]."""
    try:
        ref = obj(tomllib.loads((campaign_dir / "campaign.resolved.toml").read_text(encoding="utf-8")).get("reference"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    seeds = ref.get("seeds") if isinstance(ref.get("seeds"), list) else []
    bpbs = ref.get("val_bpb") if isinstance(ref.get("val_bpb"), list) else []
    return [Score("reference", integer(s), b) for s, b in zip(seeds, map(num, bpbs)) if b is not None]


def _baselines(baseline: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The ablation's baseline score(s): one per mode ({"eval_only": {...}}), or one flat score."""
    if num(baseline.get("val_bpb")) is not None:
        return [("baseline", float(baseline["val_bpb"]))]
    found = [(f"baseline ({mode})", num(obj(v).get("val_bpb"))) for mode, v in baseline.items()]
    found = [(name, b) for name, b in found if b is not None]
    return [("baseline", found[0][1])] if len(found) == 1 else found  # type: ignore[list-item]


def scores(decisions: Mapping[str, dict[str, Any]], gate_a: StageInfo | None, reference: list[Score]) -> list[Score]:
    out = list(reference)
    for job in gate_a.jobs if gate_a else []:
        if job.val_bpb is not None:
            out.append(Score("gate-a", job.seed, job.val_bpb))
    abl = decisions.get("ablation", {})
    out += [Score(name, integer(abl.get("seed")), bpb) for name, bpb in _baselines(obj(abl.get("baseline")))]
    for v in abl.get("variants") or []:
        v = obj(v)
        if text(v.get("name")) and (bpb := num(v.get("val_bpb"))) is not None:
            out.append(Score(v["name"], integer(v.get("seed")), bpb, str(v.get("outcome") or "")))
    for s in decisions.get("gate-b", {}).get("per_seed") or []:
        s = obj(s)
        if (bpb := num(s.get("val_bpb"))) is not None:
            out.append(Score("gate-b", integer(s.get("seed")), bpb))
    return out


def halving(ablation: Mapping[str, Any]) -> list[Rung]:
    """The ablation's rungs of successive halving, as `decision.rungs` has them (a summary written before the
    paired rule has no `rule`: it was the rank rule)."""
    out = []
    for r in ablation.get("rungs") or []:
        r = obj(r)
        variants = [RungVariant(text(v.get("name")) or "?", num(v.get("val_bpb")), num(v.get("delta_bpb")),
                                v.get("kept") is True, num(v.get("p_worse_than_best")))
                    for v in map(obj, r.get("variants") or [])]
        out.append(Rung(integer(r.get("rung")), num(r.get("fraction")), text(r.get("rule")) or "rank",
                        num(r.get("keep")), num(r.get("alpha")), integer(r.get("chunks")), variants))
    return out


def thresholds(decisions: Mapping[str, dict[str, Any]], gate_b: StageInfo | None, reference: list[Score]) -> Thresholds:
    gb, ga, abl = decisions.get("gate-b", {}), decisions.get("gate-a", {}), decisions.get("ablation", {})
    ref_mean = num(gb.get("reference_mean_val_bpb"))
    if ref_mean is None and reference:
        ref_mean = sum(s.val_bpb for s in reference) / len(reference)
    limit_b = next((num(c.limit) for c in (gate_b.checks if gate_b else []) if c.name == "mean_val_bpb"), None)
    base = _baselines(obj(abl.get("baseline")))
    base_bpb = base[0][1] if len(base) == 1 else None
    th = obj(abl.get("thresholds"))
    promote, hold = num(th.get("promote_delta_bpb")), num(th.get("hold_delta_bpb"))
    return Thresholds(
        reference_mean_bpb=ref_mean, gate_a_limit_bpb=num(ga.get("limit_val_bpb")), gate_b_limit_bpb=limit_b,
        ablation_baseline_bpb=base_bpb,
        promote_bpb=None if base_bpb is None or promote is None else base_bpb + promote,
        hold_bpb=None if base_bpb is None or hold is None else base_bpb + hold,
    )


# ------------------------------------------------------------------------------ spend


def spend(campaign_dir: Path) -> Spend:
    """The campaign's spend as golfrun/budget.py `spent` counts it (the same figures as `golfrun spend`
    and the `[budget]` check), with each stage's part and every attempt record behind it."""
    from golfrun import budget, ledger

    spent = budget.spent(campaign_dir)
    rows = [StageSpendRow(stage, s.attempts, s.failed, s.gpu_seconds, s.cpu_seconds, s.usd, s.source)
            for stage, s in spent.by_stage.items()]
    # with the jobs not recorded yet (state UNRECORDED: running, or left by a killed golfrun), which spent counts
    attempts = [AttemptRow(a.stage, a.job, a.state, a.started_at, a.finished_at, a.duration_s, a.gpus, a.total, a.usd)
                for stage in STAGES for folder in [campaign_dir / STAGE_DIRS[stage]]
                for a in ledger.read_attempts(folder)[0] + ledger.unrecorded_attempts(folder)]
    on_pods = spent.pod_gpu_seconds is not None
    return Spend(stages=rows, attempts=attempts, gpu_seconds=spent.gpu_seconds, cpu_seconds=spent.cpu_seconds,
                 usd=spent.usd, usd_source=spent.usd_source, attempts_total=spent.attempts,
                 attempts_failed=spent.attempts_failed, pod_gpu_seconds=spent.pod_gpu_seconds,
                 pod_idle_gpu_seconds=spent.pod_idle_gpu_seconds if on_pods else None,
                 unreadable=[u for s in spent.by_stage.values() for u in s.unreadable])


# ------------------------------------------------------------------------------ provenance


def _hardware(prov: Mapping[str, Any], facts: Mapping[str, Any]) -> str | None:
    gpus = [text(obj(g).get("name")) for g in obj(prov.get("nvidia_smi")).get("gpus") or []]
    gpus = [g for g in gpus if g] or [text(obj(g).get("name")) or text(g) or "" for g in facts.get("gpus") or []]
    gpus = [g for g in gpus if g]
    if gpus:
        names = sorted(set(gpus))
        return ", ".join(f"{gpus.count(n)}× {n}" for n in names)
    host = obj(prov.get("host"))
    cpu = text(host.get("cpu_model"))
    if cpu is None:
        return None
    return f"CPU only: {cpu}" + (f" ({host['cpu_count']} cores)" if integer(host.get("cpu_count")) else "")


def provenance(prov: Mapping[str, Any], facts: Mapping[str, Any], jobs: Sequence[JobInfo],
               versions: Mapping[str, Any]) -> Provenance:
    """Provenance at a glance from provenance.json, else verify-pod's facts and the jobs' results."""
    git = obj((prov.get("git") or [{}])[0]) if isinstance(prov.get("git"), list) else {}
    trainer, tp = obj(prov.get("trainer")), obj(prov.get("trainer_python"))
    attention = text(versions.get("attention"))
    probed = obj(facts.get("facts")).get("attention")  # verify-pod: the kernels the machine offers
    if attention is None and isinstance(probed, list):
        attention = "available: " + ", ".join(str(a) for a in probed) if probed else None
    dirty = git.get("dirty")
    return Provenance(
        commit=text(git.get("commit")), dirty=dirty if isinstance(dirty, bool) else None,
        trainer_path=text(trainer.get("path")) or text(facts.get("trainer")),
        trainer_sha256=text(trainer.get("sha256")) or text(facts.get("trainer_sha256")),
        hardware=_hardware(prov, obj(facts.get("facts"))), host=text(obj(prov.get("host")).get("hostname")),
        torch=text(tp.get("torch")) or text(obj(facts.get("facts")).get("torch")) or text(versions.get("torch")),
        cuda=text(tp.get("cuda")) or text(obj(facts.get("facts")).get("cuda")) or text(versions.get("cuda")),
        attention=attention,
        python=text(tp.get("python")) or text(obj(facts.get("facts")).get("python")),
    )


def _result_versions(campaign_dir: Path, jobs: Sequence[JobInfo]) -> dict[str, Any]:
    """`versions` of the first job result that has one (results.json: torch, cuda, attention)."""
    for job in jobs:
        data, _ = read_json(campaign_dir / STAGE_DIRS[job.stage] / "jobs" / job.name / "results.json")
        versions = obj((data or {}).get("versions"))
        if versions.get("attention") or versions.get("torch"):
            return versions
    return {}


# ------------------------------------------------------------------------------ the whole


def missing(stages: Sequence[StageInfo], curves: Sequence[Curve], has_provenance: bool) -> list[str]:
    out = []
    for s in stages:
        if s.verdict is None:
            out.append(f"{s.stage}: {s.problem}")
        elif s.verdict == "SKIPPED":
            out.append(f"{s.stage}: SKIPPED — {s.reasons[0] if s.reasons else 'no reason given'}")
        for j in s.jobs:
            if j.val_bpb is None and j.state != "ABORTED":  # stopped on purpose (early abort): nothing is missing
                out.append(f"{s.stage}/{j.name}: {j.state}, no final score")
    if not any(c.stage in CURVE_STAGES for c in curves):
        out.append("no training curve: no gate-a or gate-b log with train/val lines")
    if not any(c.stage == "reference" for c in curves):
        out.append(f"no reference curve: put the record's logs in runs/<campaign>/{REFERENCE_FOLDER}/ "
                   "or pass --reference-log")
    jobs = [j for s in stages for j in s.jobs]
    if jobs and not any(j.gpu and j.gpu.from_ledger for j in jobs):
        out.append("no GPU-seconds ledger in these summaries: job wall time is shown instead")
    if not has_provenance:
        out.append("no 05-preserve/provenance.json: provenance from verify-pod and the job folders")
    return out


def collect(campaign_dir: Path, reference_logs: Sequence[Path] = (),
            provenance_doc: Mapping[str, Any] | None = None, running: str | None = None) -> ReportData:
    """Everything the report draws. `provenance_doc` is preserve's document before it is written;
    `running` names the stage writing this report (preserve), whose summary does not exist yet —
    an older one from a previous run is not shown as if it were this run's."""
    campaign_dir = Path(campaign_dir)
    read = {stage: read_stage(campaign_dir, stage) for stage in STAGES}
    if running in read:
        read[running] = (StageInfo(running, None, problem="running: this report is part of its output"), {})
    stages = [read[s][0] for s in STAGES]
    decisions = {s: read[s][1] for s in STAGES}
    curves = [c for s in stages if s.stage in CURVE_STAGES for j in s.jobs
              if (c := job_curve(campaign_dir / STAGE_DIRS[s.stage] / "jobs" / j.name, f"{s.stage}/{j.name}",
                                 s.stage, campaign_dir))]
    curves += reference_curves(campaign_dir, reference_logs)
    reference = reference_scores(campaign_dir)
    prov = dict(provenance_doc) if provenance_doc is not None else \
        read_json(campaign_dir / STAGE_DIRS["preserve"] / "provenance.json")[0] or {}
    jobs = [j for s in stages for j in s.jobs]
    name = campaign_dir.name
    paid = spend(campaign_dir)
    return ReportData(
        campaign=name, campaign_dir=str(campaign_dir), stages=stages, curves=curves,
        scores=scores(decisions, read["gate-a"][0], reference),
        thresholds=thresholds(decisions, read["gate-b"][0], reference),
        halving=halving(decisions["ablation"]),
        promoted=text(decisions["ablation"].get("promoted")), gate_b_variant=text(decisions["gate-b"].get("variant")),
        provenance=provenance(prov, decisions["verify-pod"], jobs, _result_versions(campaign_dir, jobs)),
        missing=missing(stages, curves, bool(prov)) + [f"attempt record not counted: {u}" for u in paid.unreadable],
        spend=paid,
    )
