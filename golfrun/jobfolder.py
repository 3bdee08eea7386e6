"""What a trainer job's folder (runs/<campaign>/<NN-stage>/jobs/<job>/) says about its run, read by more
than one room: its job.json (written by golfrun/stages/common.py when the job is submitted and again when
it ends), the job guard's note (golfrun/backends/local.py: when it ended the trainer of a golfrun that had
vanished), and until when the job held its devices as far as the folder can tell.
Stdlib only: `golfrun status` and `golfrun spend` read this.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JOBS_DIR = "jobs"
JOB_FILE = "job.json"
ORPHAN_FILE = "job.orphaned.json"  # the guard's note: when it ended the job of a vanished golfrun


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: bad JSON, or bytes that are not UTF-8 (a torn write)
        return None
    return data if isinstance(data, dict) else None


def guard_ended(folder: Path) -> float | None:
    """When the job guard ended the job of a vanished golfrun (epoch; its note in the folder), or None."""
    noted = (read_json(Path(folder) / ORPHAN_FILE) or {}).get("ended_epoch")
    return float(noted) if isinstance(noted, (int, float)) and not isinstance(noted, bool) else None


def held_until(folder: Path, started: float) -> tuple[float, bool]:
    """(epoch, noted): the end the guard noted, else the folder's last write (the trainer's log, results,
    checkpoints) — a lower bound, since a trainer may be silent for a while (compiling, between log lines)
    — and never before `started`. `noted` says which."""
    noted = guard_ended(folder)
    if noted is not None:
        return max(noted, started), True
    return max(_last_write(Path(folder), started), started), False


def _last_write(folder: Path, default: float) -> float:
    last = default
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                last = max(last, path.stat().st_mtime)
        except OSError:  # a running trainer's temporary file, gone between the listing and the stat
            continue
    return last
