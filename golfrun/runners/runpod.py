"""The `runpod` campaign runner: the whole campaign on a pod (golfrun/pipeline/runpod_campaign.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun.errors import BackendError
from golfrun.runners.base import Log, RunOptions

if TYPE_CHECKING:
    from golfrun.campaign import Campaign


class RunpodRunner:
    name = "runpod"

    def plan(self, campaign: "Campaign", campaign_dir: Path, options: RunOptions, log: Log) -> int:
        from golfrun.pipeline import runpod_campaign

        return runpod_campaign.plan_campaign(campaign, log)

    def launch(self, campaign: "Campaign", campaign_dir: Path, options: RunOptions, log: Log) -> int:
        from golfrun.pipeline import runpod_campaign

        return runpod_campaign.run_campaign(campaign, campaign_dir, options, log)

    def follow(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> int:
        """Re-attach to the live pod (never creates one) and follow the run to its end."""
        from golfrun.pipeline import runpod_campaign

        _live_record(campaign_dir)
        return runpod_campaign.run_campaign(campaign, campaign_dir, RunOptions(), log)

    def cancel(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> None:
        """Terminate the campaign's pod (what it computed and was not pulled is lost)."""
        from golfrun.backends.runpod import pods
        from golfrun.backends.runpod.api import RunpodClient
        from golfrun.pipeline.lock import CampaignLock

        record = _live_record(campaign_dir)
        # a `run-all --backend runpod` still following this pod would replace it: it must stop first
        with CampaignLock(campaign_dir, command="golfrun cancel --backend runpod"):
            pods.terminate(RunpodClient.from_env(log=log), campaign_dir, record, "cancelled", log)

    def pull(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> int:
        from golfrun.backends.runpod import pods
        from golfrun.backends.runpod import remote as rp

        record = _live_record(campaign_dir)
        transport = pods.connect(campaign_dir, record, timeout_s=30)
        try:
            return len(rp.pull(transport, rp.PodPaths(record.workdir, campaign.name).campaign_dir, campaign_dir, log))
        finally:
            transport.close()


def _live_record(campaign_dir: Path) -> Any:
    from golfrun.backends.runpod import pods

    record = pods.load_record(campaign_dir)
    if record is None or not record.live:
        raise BackendError(f"{pods.record_path(campaign_dir)}: no live pod for this campaign; "
                           "start one with `golfrun run-all --backend runpod`")
    return record
