"""Slurm commands added to `golfrun`: `cancel` (scancel a campaign's jobs) and `pull` (bring
runs/<campaign> home from the cluster). Both read runs/<campaign>/slurm.json, written by
`golfrun run-all --backend slurm`. Heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path

import click


def register(group: click.Group) -> None:
    from golfrun.cli import campaign_dir, campaign_options, guarded, load

    @group.command()
    @campaign_options
    @guarded
    def cancel(campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None) -> None:
        """Cancel the campaign's unfinished Slurm jobs (scancel, over SSH when it was submitted so)."""
        from golfrun.runners.base import get

        campaign = load(campaign_spec, overrides, backend)
        get("slurm").cancel(campaign, campaign_dir(runs_dir, campaign), lambda m: click.echo(m))

    @group.command()
    @campaign_options
    @guarded
    def pull(campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None) -> None:
        """Copy runs/<campaign> from the cluster's work folder to here (the dataset is left there)."""
        from golfrun.runners.base import get

        campaign = load(campaign_spec, overrides, backend)
        get("slurm").pull(campaign, campaign_dir(runs_dir, campaign), lambda m: click.echo(m))

    @group.command("slurm-jobs")
    @campaign_options
    @guarded
    def slurm_jobs(campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None) -> None:
        """Slurm's view of the campaign's jobs, one line per stage (one squeue/sacct call)."""
        from golfrun.pipeline import slurm_campaign

        campaign = load(campaign_spec, overrides, backend)
        for stage, st in slurm_campaign.slurm_states(campaign_dir(runs_dir, campaign)).items():
            ids = ",".join(st.backend_ids)
            click.echo(f"{stage:14} {st.state.value:10} {ids:14} {st.reason}")
