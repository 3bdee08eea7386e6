"""`write_report(campaign_dir, out_dir)`: collect, draw, render, then write the files.

    <out_dir>/report.html    the page: every figure inside as a data URI, no external URL
    <out_dir>/report.json    the collected data (schema golfrun.report/1)
    <out_dir>/<figure>.png   curves, bpb, looks, gpu, timeline (those with data)

Files are written atomically; a PNG of a figure that has no data any more is removed, so the
folder never shows a stale chart beside a newer page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golfrun.fileio import write_bytes_atomic, write_json_atomic, write_text_atomic
from golfrun.report.collect import collect
from golfrun.report.data import ReportData
from golfrun.report.figures import FIGURE_TITLES, figures
from golfrun.report.paths import HTML_NAME, JSON_NAME
from golfrun.report.render import render_html


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    json: Path
    pngs: list[Path]
    data: ReportData

    def paths(self) -> list[Path]:
        return [self.html, self.json, *self.pngs]


def write_report(campaign_dir: Path, out_dir: Path, reference_logs: Sequence[Path] = (),
                 provenance_doc: Mapping[str, Any] | None = None, running: str | None = None) -> ReportFiles:
    data = collect(Path(campaign_dir), reference_logs, provenance_doc, running)
    pngs = figures(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FIGURE_TITLES:
        path = out_dir / f"{name}.png"
        if name in pngs:
            write_bytes_atomic(path, pngs[name])
            written.append(path)
        elif path.is_file():
            path.unlink()
    write_json_atomic(out_dir / JSON_NAME, data.to_dict())
    write_text_atomic(out_dir / HTML_NAME, render_html(data, pngs))
    return ReportFiles(out_dir / HTML_NAME, out_dir / JSON_NAME, written, data)
