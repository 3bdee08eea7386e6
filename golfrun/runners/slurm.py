"""The `slurm` campaign runner: one Slurm job per stage, chained (golfrun/pipeline/slurm_campaign.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from golfrun.runners.base import Log, RunOptions

if TYPE_CHECKING:
    from golfrun.campaign import Campaign


class SlurmRunner:
    name = "slurm"

    def plan(self, campaign: "Campaign", campaign_dir: Path, options: RunOptions, log: Log) -> int:
        from golfrun.pipeline import slurm_campaign

        return slurm_campaign.plan_campaign(campaign, campaign_dir, options, log)

    def launch(self, campaign: "Campaign", campaign_dir: Path, options: RunOptions, log: Log) -> int:
        from golfrun.pipeline import slurm_campaign

        return slurm_campaign.run_campaign(campaign, campaign_dir, options, log)

    def follow(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> int:
        from golfrun.pipeline import slurm_campaign

        return slurm_campaign.follow_campaign(campaign, campaign_dir, log)

    def cancel(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> None:
        from golfrun.pipeline import slurm_campaign

        slurm_campaign.cancel_campaign(campaign_dir, log)

    def pull(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> int:
        from golfrun.pipeline import slurm_campaign

        return slurm_campaign.pull_campaign(campaign_dir, log)
