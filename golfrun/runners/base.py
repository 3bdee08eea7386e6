"""Contract: a campaign runner is WHERE A CAMPAIGN'S CONTROL RUNS.

`local` runs the engine in this process; `slurm` submits one Slurm job per stage, chained by
dependencies; `runpod` creates a pod and runs `golfrun run-all` on it. Each has the same verbs:

- `plan(campaign, campaign_dir, options, log) -> 0`: what `--dry-run` shows; starts nothing.
- `launch(campaign, campaign_dir, options, log) -> exit code`: start the campaign; unless
  `options.detach`, follow it to the end and bring the results home.
- `follow(campaign, campaign_dir, log) -> exit code`: re-attach to a launched campaign, wait for
  its end, bring the results home.
- `cancel(campaign, campaign_dir, log)`: stop what still runs.
- `pull(campaign, campaign_dir, log) -> files copied`: bring runs/<campaign> home now.

Where ONE trainer job runs (a subprocess, an srun step) is the other contract, the job backend
(golfrun/backends/base.py). Adding a runner = one module with a class of these verbs + one line in
`REGISTRY`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from golfrun.errors import CampaignError
from golfrun.pipeline.remote import RemoteOptions as RunOptions

if TYPE_CHECKING:
    from golfrun.campaign import Campaign

Log = Callable[[str], None]

__all__ = ["REGISTRY", "CampaignRunner", "Log", "RunOptions", "get", "run"]


class CampaignRunner(Protocol):
    name: str

    def plan(self, campaign: "Campaign", campaign_dir: Path, options: RunOptions, log: Log) -> int: ...

    def launch(self, campaign: "Campaign", campaign_dir: Path, options: RunOptions, log: Log) -> int: ...

    def follow(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> int: ...

    def cancel(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> None: ...

    def pull(self, campaign: "Campaign", campaign_dir: Path, log: Log) -> int: ...


# backend.kind → "module:Class"; imported when used, so `golfrun --help` stays light. One line each.
REGISTRY: dict[str, str] = {
    "local": "golfrun.runners.local:LocalRunner",
    "slurm": "golfrun.runners.slurm:SlurmRunner",
    "runpod": "golfrun.runners.runpod:RunpodRunner",
}


def get(kind: str) -> CampaignRunner:
    """The campaign runner for `backend.kind`."""
    try:
        target = REGISTRY[kind]
    except KeyError:
        raise CampaignError(f"backend.kind = {kind!r}: unknown; known: {', '.join(REGISTRY)}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)()


def run(kind: str, campaign: "Campaign", campaign_dir: Path, options: RunOptions, log: Log) -> int:
    """`golfrun run-all`: the runner's plan with --dry-run, else its launch."""
    runner = get(kind)
    if options.dry_run:
        return runner.plan(campaign, campaign_dir, options, log)
    return runner.launch(campaign, campaign_dir, options, log)
