"""The `local` campaign runner: the engine runs every stage in this process, each trainer job
through a job backend (`local` by default: a subprocess, or torchrun for N processes)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun.errors import GolfrunError
from golfrun.fileio import write_text_atomic
from golfrun.runners.base import Log, RunOptions
from golfrun.summary import EXIT_CODES, EXIT_LOCKED, EXIT_USAGE, STAGES

if TYPE_CHECKING:
    from golfrun.campaign import Campaign
    from golfrun.pipeline.engine import Engine


def make_engine(campaign: "Campaign", campaign_dir: Path, log: Log, display: Any = None, force_local: bool = False,
                job_backend: str = "local") -> "Engine":
    """The engine for this machine; `display` (the progress display) hears every job's lines."""
    from golfrun.backends.base import BackendHooks, create
    from golfrun.pipeline.engine import Engine

    def backend_factory() -> Any:
        kind = "local" if force_local else campaign.backend.kind
        if kind != "local":
            raise GolfrunError(
                f"backend.kind = {kind!r}: single stage commands run their jobs here; run the whole campaign "
                f"with `golfrun run-all --backend {kind}`, or pass --backend local"
            )
        if display is None:
            return create(job_backend, campaign)
        return create(job_backend, campaign, BackendHooks(
            on_line=lambda job, line: display.on_line(job.env.get("RUN_ID", job.name), line),
            on_finish=lambda job, status: display.job_finished(job.env.get("RUN_ID", job.name), status.state.value),
        ))

    engine = Engine(campaign=campaign, campaign_dir=campaign_dir, backend_factory=backend_factory,
                    log=display.log if display is not None else log, job_backend=job_backend)
    if display is not None:
        engine.on_stage = display.set_stage
    return engine


def write_resolved(campaign: "Campaign", campaign_dir: Path) -> None:
    """runs/<campaign>/campaign.resolved.toml: what this run used (the loader refuses secrets)."""
    write_text_atomic(campaign_dir / "campaign.resolved.toml", campaign.to_toml())


def exit_meaning(code: int) -> str:
    for verdict, value in EXIT_CODES.items():
        if value == code:
            return verdict.value
    return {EXIT_USAGE: "bad input", EXIT_LOCKED: "locked"}.get(code, "?")


class LocalRunner:
    name = "local"
    job_backend = "local"

    def plan(self, campaign: "Campaign", campaign_dir: Path, options: RunOptions, log: Log) -> int:
        from golfrun.pipeline import views

        for line in views.plan_lines(make_engine(campaign, campaign_dir, log, job_backend=self.job_backend), STAGES):
            log(line)
        return 0

    def launch(self, campaign: "Campaign", campaign_dir: Path, options: RunOptions, log: Log) -> int:
        """Run every stage here, in the foreground (`detach` does not apply)."""
        from golfrun.pipeline.lock import CampaignLock
        from golfrun.pipeline.progress import ProgressDisplay

        with ProgressDisplay() as display:
            engine = make_engine(campaign, campaign_dir, log, display, job_backend=self.job_backend)
            with CampaignLock(engine.campaign_dir, command="golfrun run-all"):
                write_resolved(campaign, engine.campaign_dir)
                code = engine.run_all(options.force)
        log(f"\nrun-all finished: exit {code} ({exit_meaning(code)}); `golfrun status` for the table")
        from golfrun.pipeline import views

        log(views.ledger_line(views.ledger_totals(engine, views.status_rows(engine))))
        return code

    def follow(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> int:
        raise GolfrunError("a local campaign runs in the foreground of `golfrun run-all`: there is nothing to follow")

    def cancel(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> None:
        raise GolfrunError("a local campaign stops with Ctrl-C (or SIGTERM) in the terminal that runs it; "
                           "its running job is cancelled and the lock released")

    def pull(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> int:
        log(f"the campaign ran on this machine: nothing to pull ({campaign_dir})")
        return 0
