"""Reading and writing stage summaries on disk.

A summary is written atomically (temp file in the same folder, fsync, rename, fsync of the
folder), so a reader sees the old summary or the new one, never half of one. A summary that
cannot be read back is a `SummaryError` naming the file; the engine then reruns that stage.
"""

from __future__ import annotations

import json
from pathlib import Path

from golfrun import stages
from golfrun.errors import SummaryError
from golfrun.fileio import write_json_atomic
from golfrun.summary import STAGES, Summary

SUMMARY_NAME = "summary.json"


def stage_dir(campaign_dir: Path, stage: str) -> Path:
    """runs/<campaign>/<NN>-<stage>, NN from the stage's SPEC."""
    if stage not in STAGES:
        raise SummaryError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
    return Path(campaign_dir) / stages.spec(stage).folder


def summary_path(campaign_dir: Path, stage: str) -> Path:
    return stage_dir(campaign_dir, stage) / SUMMARY_NAME


def write_summary(campaign_dir: Path, summary: Summary) -> Path:
    path = summary_path(campaign_dir, summary.stage)
    write_json_atomic(path, summary.to_dict())
    return path


def read_summary_file(path: Path) -> Summary:
    """Parse one summary file; any problem is a SummaryError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SummaryError(f"{path}: no summary") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SummaryError(f"{path}: unreadable summary ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SummaryError(f"{path}: corrupted summary, not valid JSON ({exc})") from exc
    return Summary.from_dict(data, source=str(path))


def read_summary(campaign_dir: Path, stage: str) -> Summary | None:
    """The stage's summary, None if it has none yet; SummaryError if it exists but is corrupted."""
    path = summary_path(campaign_dir, stage)
    if not path.exists():
        return None
    return read_summary_file(path)
