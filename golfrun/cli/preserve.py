"""`golfrun verify-tarball`, `golfrun upload`, `golfrun package`: preservation from the command line.

    golfrun verify-tarball runs/tiny/05-preserve/tiny-preserve.tar.gz
    golfrun upload runs/tiny/05-preserve/tiny-preserve.tar.gz --to hf:me/golf-evidence
    golfrun package --campaign pr1610.toml --out ~/parameter-golf

Exit codes: 0 when verified / uploaded / written; 12 (ERROR) when a check or an upload failed;
2 for bad input. Library modules are imported inside the commands so `golfrun --help` stays fast.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import click

from golfrun.cli import campaign_dir, campaign_options, guarded, load
from golfrun.errors import ProvenanceError, UsageError
from golfrun.summary import EXIT_CODES, Verdict


def register(group: click.Group) -> None:
    group.add_command(verify_tarball)
    group.add_command(upload)
    group.add_command(package)


@click.command("verify-tarball")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@guarded
def verify_tarball(file: Path) -> None:
    """Re-hash every member of FILE against the SHA256SUMS inside it."""
    from golfrun.provenance.tarball import verify_tarball as verify

    report = verify(file)
    click.echo(report.describe())
    if not report.ok:
        raise SystemExit(EXIT_CODES[Verdict.ERROR])


@click.command("upload")
@click.argument("tarball", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "targets", multiple=True, required=True, metavar="TARGET",
              help="hf:owner/repo[@rev][/path], hf-dataset:…, rsync:[user@]host[:port]:path, "
                   "sftp:[user@]host[:port]:path or dir:path; repeatable.")
@click.option("--public", is_flag=True, help="Create a missing Hub repo public (default: private).")
@click.option("--ssh-key", default="", metavar="FILE", help="Private key file for rsync/sftp targets.")
@click.option("--known-hosts", default="", metavar="FILE", help="known_hosts for rsync/sftp targets (never auto-accepted).")
@guarded
def upload(tarball: Path, targets: tuple[str, ...], public: bool, ssh_key: str, known_hosts: str) -> None:
    """Upload a preserve bundle (TARBALL, and the README.md and SHA256SUMS beside it) and verify
    each copy by reading it back. Safe to repeat: the same files land under the same names."""
    from golfrun.provenance.targets import Bundle, UploadOptions, parse_target
    from golfrun.provenance.targets import upload as do_upload

    try:
        parsed = [parse_target(t) for t in targets]
    except ProvenanceError as exc:  # a malformed --to is the caller's typo, not a failed upload
        raise UsageError(str(exc)) from exc
    bundle = Bundle.from_tarball(tarball)
    options = UploadOptions(private=not public, ssh_key=ssh_key, known_hosts=known_hosts)
    failed = 0
    for target in parsed:
        res = do_upload(bundle, target, options, tarball_name=tarball.name)
        if res.ok:
            click.echo(f"{target.spec}: verified ({len(res.verified)} files) at {res.location}")
            for note in res.notes:
                click.echo(f"  note: {note}")
        else:
            failed += 1
            click.echo(f"{target.spec}: FAILED: {res.error}\n  retry: {res.retry}", err=True)
    if failed:
        raise SystemExit(EXIT_CODES[Verdict.ERROR])


@click.command("package")
@campaign_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where records/<track>/<date>_<name>/ is written (a parameter-golf checkout, say); "
                   "default: runs/<campaign>/submission.")
@click.option("--date", "date", default=None, metavar="YYYY-MM-DD", help="Submission date (default: today, UTC).")
@guarded
def package(campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None,
            out: Path | None, date: str | None) -> None:
    """Write the competition submission folder of a campaign from its summaries."""
    from golfrun.provenance.package import build_package

    if date is not None:
        try:
            datetime.date.fromisoformat(date if re.fullmatch(r"\d{4}-\d{2}-\d{2}", date) else "")
        except ValueError:
            raise click.BadParameter(f"{date!r} is not a date of the form YYYY-MM-DD", param_hint="--date") from None
    campaign = load(campaign_spec, overrides, backend)
    cdir = campaign_dir(runs_dir, campaign)
    pkg = build_package(campaign, cdir, out or cdir / "submission", date=date, campaign_ref=campaign_spec or "")
    s = pkg.submission
    click.echo(f"wrote {pkg.folder}")
    click.echo(f"  val_bpb {s['val_bpb']:.8f} (std {s['val_bpb_std']:.8f}) over seeds {s['seeds']}; "
               f"files: {', '.join(pkg.files)}")
    for w in pkg.warnings:
        click.echo(f"  warning: {w}", err=True)
