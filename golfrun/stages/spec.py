"""What a stage declares about itself (each stage module has one `SPEC`); the engine, the views,
the CLI and the Slurm chain read these facts instead of keeping lists of their own.

A leaf module: plain data, stdlib only (what a declared function reads is named for type checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from golfrun.campaign import Campaign
    from golfrun.stages.context import StageContext
    from golfrun.summary import Summary


def _no_waves(campaign: "Campaign") -> bool:
    return False


def _no_wave(ctx: "StageContext") -> list[int]:
    return []


@dataclass(frozen=True)
class SlurmArray:
    """How a stage's trainer jobs fan out on Slurm: a job array (one task per job, `--array-task`),
    then an aggregation job that finds every job cached and writes the stage's summary."""

    # the array's tasks: an upper bound of the stage's jobs, known before upstream stages ran (extra
    # tasks find no job and exit 0); 1 with no waves runs the stage as one job with the GPUs instead
    size: Callable[["Campaign"], int]
    # in waves: one array and aggregation job per wave, whatever its size; the aggregation job of a
    # wave that left the stage undecided submits the next one
    in_waves: Callable[["Campaign"], bool] = _no_waves
    next_wave: Callable[["StageContext"], list[int]] = _no_wave  # the wave still to run; [] = decide now


@dataclass(frozen=True)
class Promotion:
    """`golfrun decide STAGE --promote NAME`: a person picks what the stage passes on (ablation: a
    variant or the baseline); its HOLD, or its KILL, becomes a PASS. Both raise a UsageError naming
    the choices when NAME is not one of them."""

    check: Callable[["Campaign", str], None]  # NAME is one the campaign offers (before any summary is read)
    apply: Callable[["Summary", str], None]  # rewrite the summary's decision to pass NAME on


def figure(x: Any, digits: int = 6) -> str:
    """A figure in a status line: floats to `digits` places, a missing one as "-"."""
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return "-" if x is None else str(x)


@dataclass(frozen=True)
class StageSpec:
    name: str  # "gate-a": the command, the summary's `stage`
    number: int  # its place in the order; its folder is runs/<campaign>/<NN>-<name>
    upstream: tuple[str, ...] = ()  # the summaries it reads (its fingerprint covers theirs)
    config_sections: tuple[str, ...] = ()  # the campaign sections its result depends on
    uses_trainer: bool = False  # its fingerprint covers the trainer file's sha256
    runs_jobs: bool = False  # it plans trainer jobs (`plan(ctx)`; `--job-index` runs one of them)
    array: SlurmArray | None = None  # on Slurm its jobs run as a job array, then an aggregation job
    needs_gpus: bool = False  # on Slurm its own job gets the GPU allocation (it runs trainers or checks GPUs)
    always_run: bool = False  # never served from cache (it checks the machine: a new pod is a new machine)
    promotion: Promotion | None = None  # `golfrun decide --promote` picks what it passes on, even over a KILL
    runs_when_blocked: bool = False  # runs even after a KILL/ERROR/HOLD upstream (preserve)
    # its line in `golfrun status` for a PASS/KILL/HOLD summary; None: the summary's first reason
    key_figures: Callable[["Summary"], str] | None = None

    @property
    def array_jobs(self) -> bool:
        return self.array is not None

    @property
    def accepts_decide(self) -> bool:
        return self.promotion is not None

    @property
    def folder(self) -> str:
        return f"{self.number:02d}-{self.name}"
