"""`render_html(data, figures) -> str`: the report page, from a Jinja2 template.

Pure: the same data and PNG bytes give the same page (golden-tested). Every image is a data URI
and the stylesheet is inline, so the page opens offline and fetches nothing.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import jinja2

from golfrun.report.data import ReportData, StageInfo
from golfrun.report.figures import FIGURE_TITLES

VERDICT_CLASSES = {"PASS": "pass", "KILL": "kill", "HOLD": "hold", "ERROR": "error", "SKIPPED": "skipped"}
# where a stage's spend (and the campaign's USD) comes from, in words (golfrun/budget.py `spent`)
SPEND_SOURCES = {"attempts": "attempt records", "summary": "its summary (no attempt records)",
                 "jobs": "job wall time (a summary before the ledger)", "": "–",
                 "pods": "the pods' cost", "ledger": "the ledger's price"}


def fmt(x: Any, digits: int = 6) -> str:
    """A value for a table cell: floats to `digits` significant places, None as an en dash."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}" if abs(x) < 1e6 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 10_000 else str(x)
    return str(x)


def minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60.0:.2f}"


def stage_gpu_seconds(stage: StageInfo) -> float | None:
    """The stage's ledger total, else the sum of its jobs' (ledger or wall-time) totals."""
    if stage.gpu_seconds_total is not None:
        return stage.gpu_seconds_total
    totals = [j.gpu.seconds.get("total") for j in stage.jobs if j.gpu is not None]
    return sum(t for t in totals if t is not None) if totals else None


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("golfrun.report", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    env.filters["minutes"] = minutes
    return env


_TEMPLATES = _env()


def render_html(data: ReportData, figures: Mapping[str, bytes]) -> str:
    images = {name: "data:image/png;base64," + base64.b64encode(png).decode("ascii") for name, png in figures.items()}
    ledger = any(j.gpu is not None and j.gpu.from_ledger for j in data.jobs())
    usd = [s.usd for s in data.stages if s.usd is not None]
    cpu = [s.cpu_seconds_total for s in data.stages if s.cpu_seconds_total is not None]
    totals = [t for s in data.stages if (t := stage_gpu_seconds(s)) is not None]
    return _TEMPLATES.get_template("report.html.j2").render(
        data=data,
        images=images,
        titles=FIGURE_TITLES,
        verdict_classes=VERDICT_CLASSES,
        spend_sources=SPEND_SOURCES,
        stage_gpu_seconds=stage_gpu_seconds,
        ledger=ledger,
        total_gpu_seconds=sum(totals) if totals else None,
        total_usd=sum(usd) if usd else None,
        total_cpu_seconds=sum(cpu) if cpu else None,
        gates=[s for s in data.stages if s.checks or s.stats],
    )
