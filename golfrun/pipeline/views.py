"""What a person reads: `status` (a table of stages), `explain STAGE` (every check and why the
stage ran, was skipped or came from cache), and `decide` (a person's call on a HOLD).

Pure functions over summaries and `last_run.json` files, plus `decide`, which rewrites one
summary atomically. Nothing here imports torch, numpy or scipy.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Sequence
from typing import Any

from golfrun.errors import GolfrunError, SummaryError, UsageError
from golfrun.pipeline import summaries
from golfrun.pipeline.engine import Engine, now_iso, stage_module
from golfrun.stages import spec as stage_spec
from golfrun.stages import specs as stage_specs
from golfrun.stages.spec import figure
from golfrun.summary import STAGE_DIRS, STAGES, Summary, Verdict


def plan_lines(engine: Engine, stages: Sequence[str]) -> list[str]:
    """What --dry-run prints: per stage, its trainer jobs (workdir, command, env, cached or not)."""
    from golfrun.stages import common

    lines = [f"campaign {engine.campaign.name} ({engine.campaign.source}) → {engine.campaign_dir}",
             f"trainer {common.trainer_path(engine.campaign)} sha256 {engine.trainer_sha256}"]
    for stage in stages:
        module = stage_module(stage)
        ctx = engine.context(stage, engine.upstream(stage, strict=False), dry_run=True)
        lines.append(f"\n[{stage}]")
        if stage_spec(stage).runs_jobs:
            try:
                jobs = module.plan(ctx)
            except GolfrunError as exc:
                lines.append(f"  plan depends on upstream results not there yet: {exc}")
                continue
            for spec in jobs:
                entry = common.plan_entry(ctx, spec)
                lines.append(f"  job {entry['name']} ({entry['mode']}, seed {entry['seed']}){' [cached]' if entry['cached'] else ''}")
                lines.append(f"    workdir {entry['workdir']}")
                lines.append(f"    command {' '.join(entry['argv'])}")
                lines.append("    env " + " ".join(f"{k}={v}" for k, v in sorted(entry["full_env"].items())))
        elif hasattr(module, "describe"):
            lines += [f"  {line}" for line in module.describe(ctx)]
        else:
            lines.append("  (no trainer jobs)")
    return lines


def key_figures(summary: Summary) -> str:
    """The stage's line in `status`: why for SKIPPED and ERROR, else what its SPEC declares."""
    if summary.verdict is Verdict.SKIPPED:
        return summary.reasons[0] if summary.reasons else ""
    if summary.verdict is Verdict.ERROR and summary.reasons:
        return summary.reasons[0].splitlines()[0][:100]
    declared = stage_spec(summary.stage).key_figures
    if declared is not None:
        return declared(summary)
    if summary.reasons:
        return summary.reasons[0].splitlines()[0][:100]
    return ""


def _duration(summary: Summary) -> float | None:
    from datetime import datetime

    try:
        a = datetime.strptime(summary.started_at, "%Y-%m-%dT%H:%M:%SZ")
        b = datetime.strptime(summary.finished_at, "%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return None
    return (b - a).total_seconds()


def status_rows(engine: Engine) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for stage in STAGES:
        row: dict[str, Any] = {"stage": stage, "verdict": None, "figures": "", "last_run": None,
                               "up_to_date": None, "duration_s": None, "jobs": 0, "jobs_cached": 0,
                               "gpu_seconds": 0.0, "cpu_seconds": 0.0, "usd": None,
                               "summary": str(summaries.summary_path(engine.campaign_dir, stage).relative_to(engine.campaign_dir.parent))}
        last = engine.read_last_run(stage)
        if last:
            row["last_run"] = last.get("action")
            row["duration_s"] = last.get("duration_s")
        try:
            summary = engine.read(stage)
        except SummaryError as exc:
            row.update(verdict=Verdict.ERROR.value, figures=f"unreadable summary: {exc}", up_to_date=False)
            rows.append(row)
            continue
        if summary is None:
            row["figures"] = "not run"
            rows.append(row)
            continue
        fp, _ = engine.fingerprint(stage, engine.upstream(stage, strict=False))
        ran = row["last_run"] == "ran" and row["duration_s"] is not None  # last_run.json times it to 1 ms
        row.update(
            duration_s=row["duration_s"] if ran else _duration(summary),
            verdict=summary.verdict.value,
            figures=key_figures(summary),
            up_to_date=summary.fingerprint == fp,
            jobs=len(summary.jobs),
            jobs_cached=sum(1 for j in summary.jobs if j.cached),
            decided=bool(summary.human_decision),
            gpu_seconds=summary.gpu_seconds_total,
            cpu_seconds=summary.cpu_seconds_total,
            usd=summary.usd,
        )
        rows.append(row)
    for row in rows:
        row.update(spend_fields(engine, row["stage"]))
    return rows


def spend_fields(engine: Engine, stage: str) -> dict[str, Any]:
    """A status row's spending (golfrun/ledger.py): every attempt of the stage's jobs, failed ones
    included, and jobs without a record yet (running, or left by a killed golfrun) so far
    (`gpu_seconds`/`cpu_seconds` are its latest run's new seconds only)."""
    from golfrun import ledger

    try:
        summary = engine.read(stage)
    except SummaryError:
        summary = None
    spend = ledger.stage_spend(engine.campaign_dir / STAGE_DIRS[stage], summary)
    return {"spent_gpu_seconds": spend.gpu_seconds, "spent_cpu_seconds": spend.cpu_seconds,
            "attempts": spend.attempts, "attempts_failed": spend.failed, "attempts_unreadable": list(spend.unreadable),
            "attempts_unrecorded": spend.unrecorded}


def ledger_totals(engine: Engine, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The campaign's GPU-time ledger: what its stages spent (every attempt) and its price."""
    from golfrun import budget, ledger
    from golfrun.stages.common import price_per_gpu_hour

    gpu = round(sum(float(r.get("spent_gpu_seconds") or 0.0) for r in rows), 3)
    cpu = round(sum(float(r.get("spent_cpu_seconds") or 0.0) for r in rows), 3)
    price = price_per_gpu_hour(engine.campaign, engine.campaign_dir)
    pod = budget.pod_record(engine.campaign_dir)  # RunPod: the pods' GPU time, busy or idle
    return {"gpu_seconds_total": gpu, "gpu_minutes_total": round(gpu / 60.0, 3), "cpu_seconds_total": cpu,
            "cpu_minutes_total": round(cpu / 60.0, 3), "usd_per_gpu_hour": price, "usd": ledger.usd(gpu, price),
            "attempts": sum(int(r.get("attempts") or 0) for r in rows),
            "attempts_failed": sum(int(r.get("attempts_failed") or 0) for r in rows),
            "attempts_unrecorded": sum(int(r.get("attempts_unrecorded") or 0) for r in rows),
            "unreadable": [u for r in rows for u in r.get("attempts_unreadable") or []],
            "pod_gpu_seconds": None if pod is None else round(pod.up_gpu_seconds(), 3),
            "pod_idle_gpu_seconds": None if pod is None else budget.pod_idle_gpu_seconds(pod, gpu)}


def ledger_line(totals: dict[str, Any]) -> str:
    """One line for the end of run-all and under the status table."""
    usd = totals.get("usd")
    money = f", {usd:.2f} USD at {totals['usd_per_gpu_hour']:.2f} USD/GPU-hour" if usd is not None else ", price unknown"
    failed = totals.get("attempts_failed") or 0
    which = f"{failed} failed attempt(s) included" if failed else "every attempt"
    pending = totals.get("attempts_unrecorded") or 0
    if pending:  # golfrun/ledger.py unrecorded_attempts
        which += (f"; {pending} job(s) not recorded yet, running or left by a killed golfrun, counted to their last "
                  "write")
    unreadable = totals.get("unreadable") or []
    lost = f"; NOT counted: {len(unreadable)} unreadable attempt record(s), first {unreadable[0]}" if unreadable else ""
    pods = totals.get("pod_gpu_seconds")
    held = (f"; the pods held {pods / 60.0:.1f} GPU-minutes, {totals['pod_idle_gpu_seconds'] / 60.0:.1f} of them "
            f"with no job running") if pods is not None else ""
    return (f"GPU time: {totals['gpu_minutes_total']:.1f} GPU-minutes, {totals['cpu_minutes_total']:.1f} CPU-minutes"
            f"{money if totals['gpu_seconds_total'] else ''} ({which}; cached jobs count 0{lost}){held}")


def _device_minutes(r: dict[str, Any]) -> str:
    gpu, cpu = float(r.get("spent_gpu_seconds") or 0.0), float(r.get("spent_cpu_seconds") or 0.0)
    parts = ([f"{gpu / 60.0:.1f} GPU"] if gpu else []) + ([f"{cpu / 60.0:.1f} CPU"] if cpu else [])
    failed = int(r.get("attempts_failed") or 0)
    return ", ".join(parts) + (f" ({failed} failed)" if failed else "") if parts else "-"


def format_duration(seconds: float) -> str:
    """12.3s, 4m05s, 2h03m: precise where it is short, readable where it is long."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def render_status(campaign: str, rows: list[dict[str, Any]], totals: dict[str, Any] | None = None) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"campaign {campaign}"))
    for col in ("stage", "verdict", "key figures", "run", "jobs", "duration", "minutes", "current"):
        # Figures wrap, never end in an ellipsis: a cut number is a wrong number.
        table.add_column(col, overflow="fold", no_wrap=col != "key figures")
    for r in rows:
        run = r["last_run"] or "-"
        if run == "ran":
            run = "fresh"
        jobs = f"{r['jobs']} ({r['jobs_cached']} cached)" if r["jobs"] else "-"
        dur = "-" if r["duration_s"] is None else format_duration(r["duration_s"])
        current = "-" if r["up_to_date"] is None else ("yes" if r["up_to_date"] else "stale")
        verdict = (r["verdict"] or "-") + (" (decided)" if r.get("decided") else "")
        # Text, not markup: a reason such as "no [preserve] targets" must print as written.
        table.add_row(*(Text(str(c)) for c in (r["stage"], verdict, r["figures"], run, jobs, dur, _device_minutes(r),
                                               current)))
    buf = StringIO()
    Console(file=buf, width=160, color_system=None).print(table)
    return buf.getvalue() + (ledger_line(totals) + "\n" if totals is not None else "")


def explain(engine: Engine, stage: str) -> str:
    if stage not in STAGES:
        raise GolfrunError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
    lines = [f"{stage} ({summaries.summary_path(engine.campaign_dir, stage)})"]
    last = engine.read_last_run(stage)
    try:
        summary = engine.read(stage)
    except SummaryError as exc:
        lines.append(f"  ERROR: {exc}")
        lines.append("  the next `golfrun run-all` moves it aside and runs the stage again")
        return "\n".join(lines)
    if summary is None:
        lines.append("  not run yet")
        return "\n".join(lines)
    lines.append(f"  verdict: {summary.verdict.value}   ({summary.started_at} → {summary.finished_at})")
    if last:
        how = {"ran": "ran", "cached": "served from cache", "skipped": "skipped"}.get(str(last.get("action")), last.get("action"))
        lines.append(f"  last run: {how} at {last.get('at')}, because {last.get('why')}")
    fp, inputs = engine.fingerprint(stage, engine.upstream(stage, strict=False))
    if summary.fingerprint == fp:
        lines.append("  fingerprint: unchanged — the next run serves it from cache" if summary.verdict.value in ("PASS", "KILL", "HOLD")
                     else "  fingerprint: unchanged — but this verdict is never reused; the next run reruns it")
    else:
        changed = sorted(k for k in set(inputs) | set(summary.fingerprint_inputs) if inputs.get(k) != summary.fingerprint_inputs.get(k))
        lines.append(f"  fingerprint: changed ({', '.join(changed)}) — the next run reruns it")
    if summary.reasons:
        lines.append("  reasons:")
        for reason in summary.reasons:
            for i, text in enumerate(reason.splitlines()):
                lines.append(("    - " if i == 0 else "      ") + text)
    if summary.checks:
        lines.append("  checks (observed op limit):")
        for c in summary.checks:
            mark = "ok  " if c.passed else ("warn" if c.severity == "warn" else "FAIL")
            lines.append(f"    [{mark}] {c.name}: {figure(c.observed)} {c.op} {figure(c.limit)}" + (f"   — {c.detail}" if c.detail else ""))
    if summary.jobs:
        lines.append("  jobs:")
        for j in summary.jobs:
            res = (j.result or {}).get("final") or {}
            score = f" val_bpb {figure(res.get('val_bpb'))} val_loss {figure(res.get('val_loss'))}" if res else ""
            dur = f" {j.duration_s:.1f}s" if isinstance(j.duration_s, (int, float)) else ""
            lines.append(f"    {j.name}: {j.state}{' (cached)' if j.cached else ''}{dur}{score}" + (f" — {j.reason.splitlines()[0]}" if j.reason else ""))
    if summary.human_decision:
        h = summary.human_decision
        lines.append(f"  decided by {h.get('by')} at {h.get('at')}: {h.get('action')} {h.get('variant') or ''} — {h.get('reason')}")
    if summary.decision:
        lines.append("  decision:")
        text = json.dumps(summary.decision, indent=2, default=str)
        lines.extend("    " + t for t in text.splitlines())
    return "\n".join(lines)


def decide(engine: Engine, stage: str, promote: str | None, kill: bool, reason: str) -> Summary:
    """Record a person's call on a HOLD (or, where the stage's SPEC declares a promotion, overrule a
    KILL by promoting: ablation)."""
    if (promote is None) == (not kill):
        raise UsageError("decide: give exactly one of --promote VARIANT or --kill")
    if not reason.strip():
        raise UsageError("decide: --reason must say why")
    promotion = stage_spec(stage).promotion  # the stage picks what it passes on; a person may pick instead
    if promote is not None and promotion is not None:
        promotion.check(engine.campaign, promote)
    summary = engine.read(stage)
    if summary is None:
        raise GolfrunError(f"decide {stage}: the stage has no summary yet ({summaries.summary_path(engine.campaign_dir, stage)})")
    promotes = promotion is not None
    allowed = {Verdict.HOLD} | ({Verdict.KILL} if promotes and promote is not None else set())
    if summary.verdict not in allowed:
        raise GolfrunError(f"decide {stage}: its verdict is {summary.verdict.value}; only a HOLD"
                           + (" (or, to promote anyway, a KILL)" if promotes else "") + " waits for a person")
    if promote is not None and not promotes:
        which = ", ".join(s.name for s in stage_specs().values() if s.promotion is not None)
        raise UsageError(f"decide {stage}: --promote applies to {which}; for {stage} use --kill or rerun it")
    previous = summary.verdict.value
    if promote is not None and promotion is not None:
        promotion.apply(summary, promote)
        summary.verdict = Verdict.PASS
        summary.reasons.insert(0, f"a person promoted {promote}: {reason}")
    else:
        summary.verdict = Verdict.KILL
        summary.reasons.insert(0, f"a person killed it: {reason}")
    summary.human_decision = {
        "action": "promote" if promote is not None else "kill",
        "variant": promote,
        "reason": reason,
        "by": f"{getpass.getuser()}@{socket.gethostname()}",
        "at": now_iso(),
        "previous_verdict": previous,
    }
    summaries.write_summary(engine.campaign_dir, summary)
    return summary
