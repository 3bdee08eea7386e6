"""What the engine hands a stage: everything it may read, nothing it must look up itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from golfrun.summary import Summary

if TYPE_CHECKING:  # imported for types only: stages must not pull in backends they don't use
    from golfrun.backends.base import Backend
    from golfrun.campaign import Campaign


@dataclass
class StageContext:
    campaign: "Campaign"
    stage: str  # "gate-a", …
    campaign_dir: Path  # runs/<campaign>
    stage_dir: Path  # runs/<campaign>/<NN>-<stage>
    upstream: dict[str, Summary]  # stage name → its summary (only stages already run)
    backend: "Backend"
    trainer_sha256: str
    fingerprint: str
    fingerprint_inputs: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    job_cache: bool = True  # False: rerun every job (--force on this stage), not only unfinished ones
    log: Callable[[str], None] = print  # one line of human progress
    job_cache: bool = True  # False: every job reruns (the stage was named by --force)
    force_token: str = ""  # set while a --force of this stage is unfinished: only its jobs count as cached
