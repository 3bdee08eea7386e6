"""`figures(data) -> {name: PNG bytes}`: the report's charts, drawn with matplotlib (Agg).

matplotlib is imported here only, inside `figures`, so nothing else in golfrun pays for it. A
figure whose data is absent (a campaign stopped before gate-b has no seed spread) is left out of
the dict; the page says so. PNGs carry no timestamp or version metadata, so the same data gives
the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from golfrun.report.data import Curve, JobInfo, ReportData, Score

STAGE_COLORS = {"gate-a": "#1f77b4", "ablation": "#9467bd", "gate-b": "#2ca02c", "reference": "#222222",
                "verify-pod": "#8c564b", "download-data": "#7f7f7f", "preserve": "#bcbd22"}
PHASE_COLORS = {"startup": "#ff7f0e", "train": "#1f77b4", "serialize": "#17becf", "eval": "#2ca02c",
                "other": "#c7c7c7", "wall": "#9e9e9e"}
FIGURE_TITLES = {
    "curves": "Training loss and validation BPB",
    "bpb": "Final BPB per variant and seed",
    "looks": "Sequential looks of gate-b",
    "gpu": "GPU-minutes per job",
    "timeline": "Timeline of jobs",
}


def figures(data: ReportData) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    out: dict[str, bytes] = {}
    for name, draw in (("curves", _curves), ("bpb", _bpb), ("looks", _looks), ("gpu", _gpu), ("timeline", _timeline)):
        fig = draw(data)
        if fig is not None:
            out[name] = _png(fig)
    return out


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _color(curve: Curve, i: int) -> Any:
    import matplotlib

    if curve.stage == "reference":
        return STAGE_COLORS["reference"]
    shades = matplotlib.colormaps["Blues" if curve.stage == "gate-a" else "Greens"]
    return shades(0.9 - 0.15 * (i % 4))


def _curves(data: ReportData) -> Any:
    import matplotlib.pyplot as plt

    if not data.curves:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), layout="constrained")
    panels = [(axes[0][0], "step", "train_loss", "training loss"), (axes[0][1], "step", "val_bpb", "validation BPB"),
              (axes[1][0], "time", "train_loss", "training loss"), (axes[1][1], "time", "val_bpb", "validation BPB")]
    for ax, x_key, y_key, y_label in panels:
        drawn = 0
        for i, curve in enumerate(data.curves):
            pts = [(p.step if x_key == "step" else p.time_s, getattr(p, y_key)) for p in curve.points]
            pts = [(x, y) for x, y in pts if x is not None and y is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            style = "--" if curve.stage == "reference" else "-"
            ax.plot(xs, ys, style, marker="o" if len(xs) < 30 else None, ms=3, label=curve.label, color=_color(curve, i))
            drawn += 1
        ax.set_xlabel("step" if x_key == "step" else "training wall clock (s)")
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, f"no {y_label} lines in the logs", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"{data.campaign}: {FIGURE_TITLES['curves']} (gate-a and gate-b jobs)")
    return fig


def _groups(scores: Sequence[Score]) -> list[str]:
    order: list[str] = []
    for s in scores:
        if s.group not in order:
            order.append(s.group)
    return order


def _interval(values: Sequence[float]) -> tuple[float, float] | None:
    """(mean, half-width of the 95% t-interval) for two or more values."""
    n = len(values)
    if n < 2:
        return None
    from scipy import stats

    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def _bpb(data: ReportData) -> Any:
    import matplotlib.pyplot as plt

    if not data.scores:
        return None
    groups = _groups(data.scores)
    fig, ax = plt.subplots(figsize=(12, 5.5), layout="constrained")
    for x, group in enumerate(groups):
        values = [s for s in data.scores if s.group == group]
        color = STAGE_COLORS.get(group, STAGE_COLORS["ablation"])
        offsets = [0.0] if len(values) == 1 else [-0.15 + 0.3 * i / (len(values) - 1) for i in range(len(values))]
        ax.scatter([x + o for o in offsets], [s.val_bpb for s in values], color=color, zorder=3, s=28,
                   label=None)
        for o, s in zip(offsets, values):
            if s.seed is not None and len(values) > 1:
                ax.annotate(f"s{s.seed}", (x + o, s.val_bpb), textcoords="offset points", xytext=(4, 2), fontsize=7)
        ci = _interval([s.val_bpb for s in values])
        if ci is not None:
            ax.errorbar([x + 0.3], [ci[0]], yerr=[ci[1]], fmt="D", color=color, capsize=5, ms=6, zorder=4)
        if group == data.promoted:
            ax.scatter([x], [values[0].val_bpb], marker="*", s=320, facecolor="none", edgecolor="#d62728",
                       linewidth=1.5, zorder=5, label=f"promoted: {group}")
    _threshold_lines(ax, data)
    ax.set_xticks(range(len(groups)), [_tick(g, data) for g in groups], fontsize=8)
    ax.set_ylabel("final val_bpb (lower is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{data.campaign}: {FIGURE_TITLES['bpb']} (points per seed; ◆ mean with 95% t-interval)")
    return fig


def _tick(group: str, data: ReportData) -> str:
    if group == "gate-b" and data.gate_b_variant:
        return f"gate-b\n({data.gate_b_variant})"
    outcome = next((s.outcome for s in data.scores if s.group == group and s.outcome), "")
    return f"{group}\n{outcome}" if outcome else group


def _threshold_lines(ax: Any, data: ReportData) -> None:
    th = data.thresholds
    lines = [(th.reference_mean_bpb, "reference mean", "#222222", "-"),
             (th.gate_a_limit_bpb, "gate-a limit", STAGE_COLORS["gate-a"], ":"),
             (th.gate_b_limit_bpb, "gate-b limit (mean)", STAGE_COLORS["gate-b"], ":"),
             (th.promote_bpb, "ablation: promote at or below", "#d62728", "--"),
             (th.hold_bpb, "ablation: hold at or below", "#ff7f0e", "--")]
    for y, label, color, style in lines:
        if y is not None:
            ax.axhline(y, color=color, linestyle=style, linewidth=1, label=f"{label} {y:.4f}")


def _looks(data: ReportData) -> Any:
    import matplotlib.pyplot as plt

    gate_b = data.stage("gate-b")
    looks = gate_b.stats.looks if gate_b and gate_b.stats else []
    pts = [lk for lk in looks if lk.n is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    ns = [lk.n for lk in pts]
    for key, label, style in (("t", "t statistic", "o-"), ("boundary", "efficacy boundary", "--"),
                              ("futility_boundary", "futility boundary", ":")):
        xy = [(lk.n, getattr(lk, key)) for lk in pts if getattr(lk, key) is not None]
        if xy:
            ax.plot(*zip(*xy), style, label=label)
    for lk in pts:
        if lk.t is not None and lk.decision:
            ax.annotate(lk.decision, (lk.n, lk.t), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xticks(ns)
    ax.set_xlabel("seeds at the look (n)")
    ax.set_ylabel("t")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{data.campaign}: {FIGURE_TITLES['looks']}")
    return fig


def _gpu(data: ReportData) -> Any:
    import matplotlib.pyplot as plt

    jobs = [j for j in data.jobs() if j.gpu is not None]
    if not jobs:
        return None
    phases = [p for p in PHASE_COLORS if any(p in j.gpu.seconds for j in jobs if j.gpu)]
    fig, ax = plt.subplots(figsize=(12, 0.9 + 0.35 * len(jobs)), layout="constrained")
    labels = [_job_label(j) for j in jobs]
    left = [0.0] * len(jobs)
    for phase in phases:
        widths = [(j.gpu.seconds.get(phase, 0.0) if j.gpu else 0.0) / 60.0 for j in jobs]
        label = "job wall time (no GPU ledger)" if phase == "wall" else phase
        ax.barh(labels, widths, left=left, color=PHASE_COLORS[phase], label=label)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel("device-minutes held this run (GPU; CPU processes on a CPU-only run)" if "wall" not in phases
                  else "job wall-clock minutes (× GPUs where known)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{data.campaign}: {FIGURE_TITLES['gpu']}")
    return fig


def _job_label(job: JobInfo) -> str:
    label = f"{job.stage}/{job.name}"
    if job.gpu is not None and job.gpu.gpus == 0:
        label += " (CPU)"
    if job.cached:
        first = job.gpu.original_total if job.gpu else None
        label += " (cached" + (f"; first run {first / 60:.1f} min)" if first is not None else ")")
    return label


def _parse(ts: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None
    except ValueError:
        return None


def job_span(job: JobInfo) -> tuple[datetime, datetime] | None:
    """When the job ran: its finish minus its duration (job.json's times are whole seconds)."""
    end = _parse(job.finished_at)
    start = _parse(job.started_at)
    if end is not None and job.duration_s is not None:
        start = end - timedelta(seconds=job.duration_s)
    if start is None or end is None:
        return None
    return start, max(end, start + timedelta(seconds=0.5))


def _timeline(data: ReportData) -> Any:
    import matplotlib.pyplot as plt

    rows = [(j, span) for j in data.jobs() if (span := job_span(j)) is not None]
    if not rows:
        return None
    origin = min(start for _, (start, _) in rows)
    scale, unit = (60.0, "min") if max(end for _, (_, end) in rows) - origin > timedelta(minutes=5) else (1.0, "s")
    fig, ax = plt.subplots(figsize=(12, 0.9 + 0.35 * len(rows)), layout="constrained")
    for i, (job, (start, end)) in enumerate(rows):
        ax.barh(i, (end - start).total_seconds() / scale, left=(start - origin).total_seconds() / scale, height=0.6,
                color=STAGE_COLORS.get(job.stage, "#999999"), alpha=0.5 if job.cached else 1.0)
    ax.set_yticks(range(len(rows)), [f"{j.stage}/{j.name}" + (" (cached)" if j.cached else "") for j, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{unit} since {origin:%Y-%m-%d %H:%M:%S} UTC (job.json times are whole seconds)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{data.campaign}: {FIGURE_TITLES['timeline']} (cached jobs: when they first ran)")
    return fig
