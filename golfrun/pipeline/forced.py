"""An interrupted `--force` is never silently dropped.

Before a forced stage deletes or reruns anything, `<stage_dir>/forced.json` is written; it is
removed only once the stage has written its new summary. While it exists the stage's old summary
is never served from cache: the next plain run runs the stage again. `jobs_fresh` (the stage was
named by `--force`, so its job cache was ignored) carries a token that the stage's new jobs record
in their `job.json`; the resumed run reuses only jobs carrying that token — those the interrupted
forced run finished — and reruns the rest, never an old result the force meant to replace.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from golfrun.fileio import now_iso, write_json_atomic

FORCE_FILE = "forced.json"
SCHEMA = "golfrun.forced/1"


@dataclass(frozen=True)
class ForceMarker:
    since: str
    why: str
    jobs_fresh: bool
    token: str  # "" unless jobs_fresh


def mark(stage_dir: Path, why: str, jobs_fresh: bool) -> ForceMarker:
    marker = ForceMarker(since=now_iso(), why=why, jobs_fresh=jobs_fresh,
                         token=secrets.token_hex(8) if jobs_fresh else "")
    write_json_atomic(Path(stage_dir) / FORCE_FILE, {"schema": SCHEMA, **marker.__dict__})
    return marker


def read(stage_dir: Path) -> ForceMarker | None:
    """The marker, or None; an unreadable marker still counts (the stage reruns, its jobs too)."""
    path = Path(stage_dir) / FORCE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ForceMarker(since=str(data["since"]), why=str(data["why"]), jobs_fresh=bool(data["jobs_fresh"]),
                           token=str(data.get("token", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return ForceMarker(since="?", why=f"{path} (unreadable)", jobs_fresh=True, token="unreadable")


def clear(stage_dir: Path) -> None:
    (Path(stage_dir) / FORCE_FILE).unlink(missing_ok=True)
