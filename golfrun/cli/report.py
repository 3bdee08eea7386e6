"""`golfrun report`: a campaign's report page and figures.

    golfrun report                               the tiny campaign → runs/tiny/report/report.html
    golfrun report --campaign pr1610.toml --out /tmp/pr1610-report
    golfrun report --reference-log train0.txt    draw the record's own curve too

Works on any campaign folder, finished or stopped half-way: the page draws what exists and lists
what is missing. Exit codes: 0 written; 12 when the campaign folder is absent or a file cannot be
written; 2 for bad input. matplotlib is imported only inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from golfrun.cli import campaign_dir, campaign_options, guarded, load
from golfrun.errors import GolfrunError


def register(group: click.Group) -> None:
    group.add_command(report)


@click.command("report")
@campaign_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for report.html, report.json and the PNGs (default: runs/<campaign>/report).")
@click.option("--reference-log", "reference_logs", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A log of the reference record, drawn as its curve; repeatable "
                   "(runs/<campaign>/reference/*.txt|*.log are read anyway).")
@guarded
def report(campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None,
           out_dir: Path | None, reference_logs: tuple[Path, ...]) -> None:
    """One self-contained HTML page (and PNGs) of a campaign: curves, scores, gates, cost, provenance."""
    from golfrun.report.paths import default_dir
    from golfrun.report.write import write_report

    campaign = load(campaign_spec, overrides, backend)
    cdir = campaign_dir(runs_dir, campaign)
    if not cdir.is_dir():
        raise GolfrunError(f"{cdir}: no campaign folder; run `golfrun run-all` first")
    try:
        files = write_report(cdir, out_dir or default_dir(cdir), reference_logs)
    except OSError as exc:
        raise GolfrunError(f"report: cannot write {exc.filename or out_dir}: {exc.strerror or exc}") from exc
    click.echo(f"report: {files.html}")
    for path in files.pngs:
        click.echo(f"figure: {path}")
    for line in files.data.missing:
        click.echo(f"missing: {line}")
