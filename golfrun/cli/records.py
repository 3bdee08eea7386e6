"""Published records from the command line: `golfrun init --from-record PATH` (its body lives here;
cli/__init__.py's `init` calls `init_from_record`).

    golfrun init --from-record ~/parameter-golf/records/track_10min_16mb/2026-04-13_VarLenAttn_PhasingTTT2000

Exit codes: 0 written (keys it could not infer are marked UNRESOLVED in the file and listed);
2 for bad input (no such folder, no train_gpt.py, no log with a score, an existing file).
"""

from __future__ import annotations

from pathlib import Path

import click

from golfrun.errors import CampaignError


def register(group: click.Group) -> None:
    """Commands of this room (the audit command is added here when it lands)."""


def init_from_record(path: Path, out: Path | None, force: bool) -> None:
    from golfrun.fileio import write_text_atomic
    from golfrun.records.campaign import UNRESOLVED, campaign_name, render_campaign
    from golfrun.records.folder import read_record_folder

    rec = read_record_folder(path)
    out = out or Path(f"{campaign_name(rec)}.toml")
    if not out.parent.resolve().is_dir():
        raise CampaignError(f"--out {out}: folder {out.parent} does not exist; create it first")
    if out.exists() and not force:
        raise CampaignError(f"{out} exists; choose another --out or pass --force")
    text = render_campaign(rec, out.parent)
    try:
        write_text_atomic(out, text)
    except OSError as exc:
        raise CampaignError(f"--out {out}: cannot write ({exc.strerror})") from exc
    click.echo(f"wrote {out} from {rec.path.name}: seeds {[r.seed for r in rec.runs]}, "
               f"{len(rec.env)} trainer env key(s), {rec.nproc or '?'} GPU(s), data {rec.variant or '?'}")
    for line in rec.differences:
        click.echo(f"  logs vs submission.json: {line}")
    for line in rec.unreadable:
        click.echo(f"  not read: {line}")
    for key, why in rec.unresolved.items():
        click.echo(f"  {UNRESOLVED} {key}: {why}", err=True)
    if rec.unresolved:
        click.echo(f"set the {len(rec.unresolved)} {UNRESOLVED} key(s) in {out}, then `golfrun run-all --campaign {out}`")
    else:
        click.echo(f"run it with `golfrun run-all --campaign {out}`")
