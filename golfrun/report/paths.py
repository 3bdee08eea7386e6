"""Where a campaign's report lives. Stdlib only: `golfrun status` asks it."""

from __future__ import annotations

from pathlib import Path

from golfrun.summary import STAGE_DIRS

HTML_NAME = "report.html"
JSON_NAME = "report.json"
REPORT_FOLDER = "report"


def default_dir(campaign_dir: Path) -> Path:
    """`golfrun report`'s folder: runs/<campaign>/report (outside the stage folders: never archived twice)."""
    return campaign_dir / REPORT_FOLDER


def preserve_dir(campaign_dir: Path) -> Path:
    """Where preserve writes the report it archives: 05-preserve/report."""
    return campaign_dir / STAGE_DIRS["preserve"] / REPORT_FOLDER


def report_path(campaign_dir: Path) -> Path | None:
    """The newest report.html of the campaign (`golfrun report`'s or preserve's), or None."""
    found = [p for p in (default_dir(campaign_dir) / HTML_NAME, preserve_dir(campaign_dir) / HTML_NAME) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
