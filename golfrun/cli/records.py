"""Published records from the command line: `golfrun audit TARGET` and the body of
`golfrun init --from-record PATH` (cli/__init__.py's `init` calls `init_from_record`).

    golfrun init --from-record ~/parameter-golf/records/track_10min_16mb/2026-04-13_VarLenAttn_PhasingTTT2000
    golfrun audit runs/pr1610            # or a job folder, or a records folder
    golfrun audit runs/pr1610/02-gate-a/jobs/seed0 --causality   # + two reruns of its evaluation, here

Exit codes: init 0 written (keys it could not infer are marked UNRESOLVED in the file and listed);
audit 0 no violation, 10 a rule violated, 12 a log it cannot read; 2 for bad input.
"""

from __future__ import annotations

from pathlib import Path

import click

from golfrun.cli import guarded
from golfrun.errors import CampaignError, UsageError
from golfrun.summary import EXIT_CODES, Verdict


def register(group: click.Group) -> None:
    group.add_command(audit)


@click.command("audit")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--trainer", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The train_gpt.py that would be shipped (default: the campaign's, or the records folder's).")
@click.option("--val-targets", type=int, default=None, metavar="N",
              help="Targets of the full validation split (default: from the data's val shards or the variant).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (schema golfrun.audit/1).")
@click.option("--causality", is_flag=True,
              help="Also show that no validation token is used before it is scored: reruns the job's scored "
                   "evaluation twice on this machine (costs two evaluations; on a GPU run, run it there).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --causality: the data the run was scored on (default: the run's DATA_DIR).")
@click.option("--eval-timeout", type=click.FloatRange(min=1), default=None, metavar="S",
              help="With --causality: the deadline of each rerun in seconds (default 1800).")
@guarded
def audit(target: Path, trainer: Path | None, val_targets: int | None, as_json: bool, causality: bool,
          data_dir: Path | None, eval_timeout: float | None) -> None:
    """Check a run against the challenge's rules: TARGET is a job folder, runs/<campaign>/ or a
    records folder. Each rule: observed against its limit (docs/records.md). --causality takes one
    job folder of golfrun's trainer and reruns its evaluation twice."""
    from golfrun.audit.report import audit_path
    from golfrun.fileio import dumps_json

    if not causality and (data_dir is not None or eval_timeout is not None):
        raise UsageError("--data-dir and --eval-timeout go with --causality")
    plan = None
    if causality:  # refused before anything runs when the job lacks what the reruns need
        from golfrun.audit.rerun import plan_rerun

        plan = plan_rerun(target, trainer, data_dir)
    report = audit_path(target, trainer, val_targets)
    if plan is not None:
        from golfrun.audit.rerun import DEFAULT_EVAL_TIMEOUT_S, audit_causality

        report.findings.append(audit_causality(plan, eval_timeout or DEFAULT_EVAL_TIMEOUT_S,
                                               log=lambda m: click.echo(m, err=True)))
    if as_json:
        click.echo(dumps_json(report.to_dict()), nl=False)
    else:
        click.echo(f"audit of {report.kind} {report.target}")
        for f in report.findings:
            click.echo(f"  {f.describe()}")
        for note in report.notes:
            click.echo(f"  note: {note}")
        bad = report.violations
        click.echo(f"{len(bad)} violation(s)" if bad else "no violation found")
    if report.violations:
        raise SystemExit(EXIT_CODES[Verdict.KILL])


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
