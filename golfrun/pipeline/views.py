"""What a person reads: `status` (a table of stages), `explain STAGE` (every check and why the
stage ran, was skipped or came from cache), and `decide` (a person's call on a HOLD).

Pure functions over summaries and `last_run.json` files, plus `decide`, which rewrites one
summary atomically. Nothing here imports torch, numpy or scipy.
"""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any

from golfrun.errors import GolfrunError, SummaryError
from golfrun.pipeline import summaries
from golfrun.pipeline.engine import Engine, now_iso
from golfrun.summary import STAGES, Summary, Verdict


def _f(x: Any, digits: int = 6) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return "-" if x is None else str(x)


def key_figures(summary: Summary) -> str:
    d = summary.decision
    if summary.verdict is Verdict.SKIPPED:
        return summary.reasons[0] if summary.reasons else ""
    if summary.verdict is Verdict.ERROR and summary.reasons:
        return summary.reasons[0].splitlines()[0][:100]
    stage = summary.stage
    if stage == "verify-pod":
        facts = d.get("facts") or {}
        gpus = facts.get("gpus") or []
        return f"{len(gpus)} GPU(s), torch {facts.get('torch') or '-'}, {sum(c.passed for c in summary.checks)}/{len(summary.checks)} checks"
    if stage == "download-data":
        return f"{d.get('variant')}: {d.get('train_shards')} train / {d.get('val_shards')} val shards"
    if stage == "gate-a":
        return (f"val_bpb {_f(d.get('val_bpb'))} (≤ {_f(d.get('limit_val_bpb'))}), "
                f"{d.get('artifact_bytes') or '-'} B")
    if stage == "ablation":
        promoted = d.get("promoted")
        best = f"best {d.get('best')} Δbpb {d.get('best_delta_bpb'):+.6f}" if isinstance(d.get("best_delta_bpb"), float) else ""
        return f"{best}; promoted {promoted or '-'}".strip("; ")
    if stage == "gate-b":
        bpb = d.get("val_bpb") or {}
        rt = d.get("record_test") or {}
        return (f"{d.get('variant')}: mean val_bpb {_f(bpb.get('mean'))} ± {_f(bpb.get('std'))} over "
                f"{len(d.get('seeds') or [])} seeds; record p={_f(rt.get('p'), 4)}")
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
        row.update(
            duration_s=_duration(summary),
            verdict=summary.verdict.value,
            figures=key_figures(summary),
            up_to_date=summary.fingerprint == fp,
            jobs=len(summary.jobs),
            jobs_cached=sum(1 for j in summary.jobs if j.cached),
            decided=bool(summary.human_decision),
        )
        rows.append(row)
    return rows


def render_status(campaign: str, rows: list[dict[str, Any]]) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"campaign {campaign}")
    for col in ("stage", "verdict", "key figures", "run", "jobs", "duration", "current"):
        table.add_column(col)
    for r in rows:
        run = r["last_run"] or "-"
        if run == "ran":
            run = "fresh"
        jobs = f"{r['jobs']} ({r['jobs_cached']} cached)" if r["jobs"] else "-"
        dur = "-" if r["duration_s"] is None else f"{r['duration_s']:.1f}s"
        current = "-" if r["up_to_date"] is None else ("yes" if r["up_to_date"] else "stale")
        verdict = (r["verdict"] or "-") + (" (decided)" if r.get("decided") else "")
        table.add_row(r["stage"], verdict, r["figures"], run, jobs, dur, current)
    buf = StringIO()
    Console(file=buf, width=160, color_system=None).print(table)
    return buf.getvalue()


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
            lines.append(f"    [{mark}] {c.name}: {_f(c.observed)} {c.op} {_f(c.limit)}" + (f"   — {c.detail}" if c.detail else ""))
    if summary.jobs:
        lines.append("  jobs:")
        for j in summary.jobs:
            res = (j.result or {}).get("final") or {}
            score = f" val_bpb {_f(res.get('val_bpb'))} val_loss {_f(res.get('val_loss'))}" if res else ""
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
    """Record a person's call on a HOLD (or, for ablation, overrule a KILL by promoting)."""
    if (promote is None) == (not kill):
        raise GolfrunError("decide: give exactly one of --promote VARIANT or --kill")
    if not reason.strip():
        raise GolfrunError("decide: --reason must say why")
    summary = engine.read(stage)
    if summary is None:
        raise GolfrunError(f"decide {stage}: the stage has no summary yet ({summaries.summary_path(engine.campaign_dir, stage)})")
    allowed = {Verdict.HOLD} | ({Verdict.KILL} if stage == "ablation" and promote is not None else set())
    if summary.verdict not in allowed:
        raise GolfrunError(f"decide {stage}: its verdict is {summary.verdict.value}; only a HOLD"
                           + (" (or, to promote anyway, a KILL)" if stage == "ablation" else "") + " waits for a person")
    if promote is not None and stage != "ablation":
        raise GolfrunError(f"decide {stage}: --promote applies to ablation; for {stage} use --kill or rerun it")
    previous = summary.verdict.value
    if promote is not None:
        names = [v.get("name") for v in summary.decision.get("variants", [])]
        if promote != "baseline" and promote not in names:
            raise GolfrunError(f"decide ablation --promote {promote!r}: not a variant; choose one of {names + ['baseline']}")
        env = {} if promote == "baseline" else next(v.get("env", {}) for v in summary.decision["variants"] if v.get("name") == promote)
        summary.decision["promoted"] = promote
        summary.decision["promoted_env"] = env
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
