"""The `golfrun` command: parse, call the pipeline, print. Exit codes (docs/cli.md):
PASS 0, KILL 10, HOLD 11, ERROR 12, SKIPPED 13, bad input 2, campaign locked 3.

Heavy modules (torch is never imported here; numpy, scipy, huggingface_hub only by the stages
that need them) are imported inside the commands, so `golfrun --help` and `golfrun status`
answer at once.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from golfrun import __version__
from golfrun.errors import BudgetError, CampaignError, GolfrunError, LockError, UsageError
from golfrun.runners.base import REGISTRY as RUNNERS
from golfrun.summary import EXIT_BUDGET, EXIT_CODES, EXIT_LOCKED, EXIT_USAGE, STAGES, Verdict

if TYPE_CHECKING:
    from golfrun.campaign import Campaign
    from golfrun.pipeline.engine import Engine

BACKENDS = tuple(RUNNERS)  # where a campaign's control runs (golfrun/runners/)


def fail(message: str, code: int) -> None:
    click.echo(f"golfrun: error: {message}", err=True)
    raise SystemExit(code)


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM unwinds like Ctrl-C, so a running job is cancelled and the lock released.
    raise SystemExit(128 + signum)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Typed golfrun errors, and disk errors (OSError: full, read-only), → one line on stderr and
    the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import signal
        import threading

        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except (CampaignError, UsageError) as exc:
            fail(str(exc), EXIT_USAGE)
        except LockError as exc:
            fail(str(exc), EXIT_LOCKED)
        except BudgetError as exc:
            fail(str(exc), EXIT_BUDGET)
        except GolfrunError as exc:
            fail(str(exc), EXIT_CODES[Verdict.ERROR])
        except OSError as exc:  # a full or read-only disk outside a stage (the engine handles those inside)
            from golfrun.fileio import os_error_text

            fail(f"I/O error: {os_error_text(exc)}", EXIT_CODES[Verdict.ERROR])
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def campaign_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--campaign", "campaign_spec", metavar="FILE|PRESET", default=None,
                     help="Campaign TOML file or preset name (default: the tiny preset)."),
        click.option("--set", "overrides", metavar="SECTION.KEY=VALUE", multiple=True,
                     help="Override a campaign key with a TOML value; repeatable."),
        click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                     show_default=True, help="Where runs/<campaign>/ lives."),
        click.option("--backend", type=click.Choice(BACKENDS), default=None,
                     help="Where trainer jobs run (overrides backend.kind)."),
    ]):
        fn = option(fn)
    return fn


def dry_run_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--dry-run", is_flag=True, help="Print the plan (jobs, env, commands); run nothing.")(fn)


def load(campaign_spec: str | None, overrides: Sequence[str], backend: str | None) -> "Campaign":
    from golfrun.campaign.load import check_runnable, load_campaign

    sets = list(overrides)
    if backend is not None:
        sets.append(f"backend.kind={backend}")
    campaign = load_campaign(campaign_spec, sets)
    check_runnable(campaign)
    return campaign


def campaign_dir(runs_dir: Path, campaign: "Campaign") -> Path:
    return (runs_dir / campaign.name).absolute()


def make_engine(campaign: "Campaign", runs_dir: Path, display: Any = None, force_local: bool = False) -> "Engine":
    from golfrun.runners.local import make_engine as engine_for

    return engine_for(campaign, campaign_dir(runs_dir, campaign), lambda m: click.echo(m), display, force_local)


def write_resolved(campaign: "Campaign", cdir: Path) -> None:
    from golfrun.runners.local import write_resolved as write

    write(campaign, cdir)


def print_plan(engine: "Engine", stages: Sequence[str]) -> None:
    from golfrun.pipeline import views

    for line in views.plan_lines(engine, stages):
        click.echo(line)


# ----------------------------------------------------------------------------------------- group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="golfrun")
def main() -> None:
    """golfrun: gated, resumable Parameter Golf campaigns.

    Stages, in order: verify-pod, download-data, gate-a, ablation, gate-b, preserve. Each writes
    runs/<campaign>/<NN>-<stage>/summary.json; the next reads it and decides PASS, KILL or HOLD.
    `golfrun run-all` with no arguments runs the tiny campaign on this machine.
    """


def _stage_command(stage: str) -> None:
    from golfrun.stages import spec

    takes_index = spec(stage).runs_jobs

    @main.command(stage, help=_stage_help(stage))
    @campaign_options
    @dry_run_option
    @click.option("--force", is_flag=True, help="Run the stage even if its summary is up to date (its jobs too).")
    @click.pass_context
    @guarded
    def command(ctx: click.Context, campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path,
                backend: str | None, dry_run: bool, force: bool, job_index: int | None = None) -> None:
        ctx.exit(run_stage_command(stage, campaign_spec, overrides, runs_dir, backend, dry_run, force, job_index))

    if takes_index:
        click.option("--job-index", type=click.IntRange(min=0), default=None,
                     help="Run only job I of the stage's plan, here, and write no summary (Slurm array tasks).")(command)


def _stage_help(stage: str) -> str:
    from golfrun.stages import spec

    up = ", ".join(spec(stage).upstream) or "nothing"
    return f"Run the {stage} stage (reads: {up}). Exit code: its verdict's."


def run_stage_command(stage: str, campaign_spec: str | None, overrides: Sequence[str], runs_dir: Path,
                      backend: str | None, dry_run: bool, force: bool, job_index: int | None) -> int:
    from golfrun.pipeline.lock import CampaignLock

    campaign = load(campaign_spec, overrides, backend)
    if dry_run:
        print_plan(make_engine(campaign, runs_dir), [stage])
        return 0
    if job_index is not None:
        return make_engine(campaign, runs_dir, force_local=True).run_job_index(stage, job_index)
    engine = make_engine(campaign, runs_dir)
    with CampaignLock(engine.campaign_dir, command=f"golfrun {stage}"):
        write_resolved(campaign, engine.campaign_dir)
        return engine.run_single(stage, force=force)


for _stage in STAGES:
    _stage_command(_stage)


@main.command("run-all")
@campaign_options
@dry_run_option
@click.option("--force", "force", multiple=True, type=click.Choice(STAGES), metavar="STAGE",
              help="Rerun this stage and everything after it; repeatable.")
@click.option("--ssh", default=None, metavar="USER@HOST[:PORT]", help="Slurm: submit on this login node over SSH.")
@click.option("--accept-new-host-key", is_flag=True, help="SSH: trust an unknown host key (otherwise an error).")
@click.option("--detach", is_flag=True, help="Slurm/RunPod: return once submitted or started.")
@click.option("--keep", is_flag=True, help="RunPod: do not terminate the pod at the end or on failure.")
@click.pass_context
@guarded
def run_all(ctx: click.Context, campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None,
            dry_run: bool, force: tuple[str, ...], ssh: str | None, accept_new_host_key: bool, detach: bool, keep: bool) -> None:
    """Run every stage in order, skipping what is done. Exit code: the worst verdict."""
    from golfrun.runners.base import RunOptions, run

    campaign = load(campaign_spec, overrides, backend)
    options = RunOptions(force=tuple(force), dry_run=dry_run, ssh=ssh, accept_new_host_key=accept_new_host_key,
                         detach=detach, keep=keep)
    ctx.exit(run(campaign.backend.kind, campaign, campaign_dir(runs_dir, campaign), options, lambda m: click.echo(m)))


@main.command()
@campaign_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@guarded
def status(ctx: click.Context, campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path,
           backend: str | None, as_json: bool) -> None:
    """A table of the stages: verdict, key figures, fresh or cached, jobs, duration, up to date."""
    from golfrun.pipeline import views
    from golfrun.report.paths import report_path

    campaign = load(campaign_spec, overrides, backend)
    engine = make_engine(campaign, runs_dir)
    rows = views.status_rows(engine)
    totals = views.ledger_totals(engine, rows)
    report = report_path(engine.campaign_dir)
    if as_json:
        click.echo(json.dumps({"campaign": campaign.name, "campaign_dir": str(engine.campaign_dir), "stages": rows,
                               "ledger": totals, "report": None if report is None else str(report)}, indent=2))
    else:
        click.echo(views.render_status(campaign.name, rows, totals), nl=False)
        click.echo(f"report: {report}" if report else "report: none yet (`golfrun report` writes one)")


@main.command()
@click.argument("stage", type=click.Choice(STAGES))
@campaign_options
@click.pass_context
@guarded
def explain(ctx: click.Context, stage: str, campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path,
            backend: str | None) -> None:
    """Every check of STAGE (observed vs limit) and why it ran, was skipped or came from cache."""
    from golfrun.pipeline import views

    campaign = load(campaign_spec, overrides, backend)
    click.echo(views.explain(make_engine(campaign, runs_dir), stage))


@main.command()
@click.argument("stage", type=click.Choice(STAGES))
@click.option("--promote", metavar="VARIANT", default=None, help="Promote this variant (or 'baseline') to gate-b.")
@click.option("--kill", is_flag=True, help="Stop the campaign here.")
@click.option("--reason", required=True, help="Why: recorded in the summary.")
@campaign_options
@click.pass_context
@guarded
def decide(ctx: click.Context, stage: str, promote: str | None, kill: bool, reason: str, campaign_spec: str | None,
           overrides: tuple[str, ...], runs_dir: Path, backend: str | None) -> None:
    """Record a person's decision on a HOLD; `golfrun run-all` then continues from it."""
    from golfrun.pipeline import views
    from golfrun.pipeline.lock import CampaignLock

    campaign = load(campaign_spec, overrides, backend)
    engine = make_engine(campaign, runs_dir)
    with CampaignLock(engine.campaign_dir, command=f"golfrun decide {stage}"):
        summary = views.decide(engine, stage, promote, kill, reason)
    click.echo(f"{stage}: {summary.verdict.value} — {summary.reasons[0]}")
    click.echo("continue with `golfrun run-all`" if summary.verdict is Verdict.PASS else "the campaign stops here")


@main.command()
@click.option("--preset", default="tiny", show_default=True, help="Preset to start from.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write (default: <preset>.toml).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--from-record", "from_record", type=click.Path(path_type=Path), default=None, metavar="FOLDER",
              help="Start from a published records folder instead of a preset (docs/records.md).")
@guarded
def init(preset: str, out: Path | None, force: bool, from_record: Path | None) -> None:
    """Write an editable campaign file from a preset or a records folder."""
    from golfrun.campaign.load import preset_text_for

    if from_record is not None:
        from golfrun.cli.records import init_from_record

        return init_from_record(from_record, out, force)
    out = out or Path(f"{preset}.toml")
    if not out.parent.resolve().is_dir():
        raise CampaignError(f"--out {out}: folder {out.parent} does not exist; create it first")
    text = preset_text_for(preset, out.parent)
    if out.exists() and not force:
        raise CampaignError(f"{out} exists; choose another --out or pass --force")
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CampaignError(f"--out {out}: cannot write ({exc.strerror})") from exc
    click.echo(f"wrote {out}; run it with `golfrun run-all --campaign {out}`")


@main.command()
@click.argument("stage", type=click.Choice(STAGES))
@campaign_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the Slurm runner reads it).")
@guarded
def plan(stage: str, campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None,
         as_json: bool) -> None:
    """The trainer jobs STAGE would run: name, seed, mode, env, command, cached or not."""
    from golfrun.stages import common

    campaign = load(campaign_spec, overrides, backend)
    engine = make_engine(campaign, runs_dir)
    ctx = engine.context(stage, engine.upstream(stage, strict=False), dry_run=True)
    jobs = [common.plan_entry(ctx, spec) for spec in engine.plan(stage)]
    if as_json:
        click.echo(json.dumps({"stage": stage, "campaign": campaign.name, "campaign_dir": str(engine.campaign_dir),
                               "jobs": [{"index": i, **j} for i, j in enumerate(jobs)]}, indent=2))
    else:
        print_plan(engine, [stage])


def _register_plugins(group: click.Group) -> None:
    """Commands other parts of golfrun add (Slurm, preserve, RunPod), when installed."""
    for name in ("slurm", "preserve", "pod", "report", "machine", "records"):
        module_name = f"golfrun.cli.{name}"
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).register(group)


_register_plugins(main)
