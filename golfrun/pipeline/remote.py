"""Options of a whole-campaign run on a remote backend (Slurm, RunPod).

`golfrun run-all --backend slurm|runpod` hands these to the backend's campaign runner:
`golfrun.pipeline.slurm_campaign.run_campaign` or `golfrun.pipeline.runpod_campaign.run_campaign`,
both `(campaign, campaign_dir, options, log) -> exit code`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteOptions:
    force: tuple[str, ...] = ()  # stages to rerun (and what depends on them)
    dry_run: bool = False  # write scripts / print the plan, submit or create nothing
    ssh: str | None = None  # user@host[:port] of a Slurm login node
    accept_new_host_key: bool = False  # otherwise an unknown host key is an error
    detach: bool = False  # return once submitted / started
    keep: bool = False  # RunPod: do not terminate the pod on failure or at the end
