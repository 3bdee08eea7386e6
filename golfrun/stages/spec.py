"""What a stage declares about itself (each stage module has one `SPEC`); the engine, the views,
the CLI and the Slurm chain read these facts instead of keeping lists of their own.

A leaf module: plain data, stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    name: str  # "gate-a": the command, the summary's `stage`
    number: int  # its place in the order; its folder is runs/<campaign>/<NN>-<name>
    upstream: tuple[str, ...] = ()  # the summaries it reads (its fingerprint covers theirs)
    config_sections: tuple[str, ...] = ()  # the campaign sections its result depends on
    uses_trainer: bool = False  # its fingerprint covers the trainer file's sha256
    runs_jobs: bool = False  # it plans trainer jobs (`plan(ctx)`; `--job-index` runs one of them)
    array_jobs: bool = False  # on Slurm its jobs run as a job array, then an aggregation job
    needs_gpus: bool = False  # on Slurm its own job gets the GPU allocation (it runs trainers or checks GPUs)
    always_run: bool = False  # never served from cache (it checks the machine: a new pod is a new machine)
    accepts_decide: bool = False  # its HOLD waits for `golfrun decide`; with --promote it may also override a KILL
    runs_when_blocked: bool = False  # runs even after a KILL/ERROR/HOLD upstream (preserve)

    @property
    def folder(self) -> str:
        return f"{self.number:02d}-{self.name}"
