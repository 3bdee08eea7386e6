"""What one Slurm job of a campaign runs on the cluster (`python -m golfrun.pipeline.slurm_job`).

    --stage S                 run stage S through the engine (skip-if-done, gates, summary),
                              trainer jobs as srun steps (golfrun/backends/srun.py)
    --stage S --array-task    run only job $SLURM_ARRAY_TASK_ID of S's plan, write no summary; an
                              index past the plan's end does nothing (the array is sized from the
                              campaign before upstream stages have run)

A stage job holds the campaign lock (golfrun/pipeline/lock.py); an array task holds it shared,
plus its job's own lock, so the tasks of one array run together. A lock held elsewhere is waited
for up to LOCK_WAIT_S (the job that submitted this one may still hold it), then exits 3.

The exit code is the verdict's (PASS 0, KILL 10, HOLD 11, ERROR 12, SKIPPED 13): anything but
PASS makes Slurm cancel the `afterok` dependents, which is how a KILL stops the campaign with no
golfrun process waiting anywhere. The preserve job (`afterany`) first writes SKIPPED summaries for
the stages Slurm cancelled, so `golfrun status` reads like a local run's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from golfrun.errors import BudgetError, GolfrunError, LockError
from golfrun.stages import spec as stage_spec
from golfrun.summary import EXIT_BUDGET, EXIT_CODES, EXIT_LOCKED, STAGE_DIRS, STAGES, Verdict


# A Slurm job may start while the job that submitted it (a gate-b wave's aggregation) still holds
# the campaign lock for a moment: it waits up to this long before exiting 3.
LOCK_WAIT_S = 300.0


def _log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m golfrun.pipeline.slurm_job")
    p.add_argument("--campaign-file", required=True)
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--stage", required=True, choices=STAGES)
    p.add_argument("--array-task", action="store_true")
    p.add_argument("--force", action="store_true", help="rerun the stage even if its summary is valid")
    p.add_argument("--no-job-cache", action="store_true")
    args = p.parse_args(argv)
    try:
        return run(args.campaign_file, args.runs_dir, args.stage, args.array_task, args.force, not args.no_job_cache)
    except LockError as exc:
        _log(f"golfrun: error: {exc}")
        return EXIT_LOCKED
    except BudgetError as exc:  # the stage (or this task) was not started: exit 4, as `golfrun run-all`
        _log(f"golfrun: error: {exc}")
        _record_budget_stop(args.campaign_file, args.runs_dir, args.stage, str(exc))
        return EXIT_BUDGET
    except GolfrunError as exc:
        _log(f"golfrun: error: {exc}")
        return EXIT_CODES[Verdict.ERROR]


def _record_budget_stop(campaign_file: str, runs_dir: str, stage: str, message: str) -> None:
    """The refusal beside the stage's summary, for the golfrun that follows the chain (golfrun/budget.py)."""
    from golfrun import budget
    from golfrun.campaign import load_campaign

    name = load_campaign(campaign_file).name
    budget.record_stop(Path(runs_dir).absolute() / name / STAGE_DIRS[stage], stage, message)


def run(campaign_file: str, runs_dir: str, stage: str, array_task: bool, force: bool, job_cache: bool) -> int:
    from golfrun.campaign import load_campaign
    from golfrun.pipeline.engine import Engine

    campaign = load_campaign(campaign_file)
    engine = Engine(campaign=campaign, campaign_dir=Path(runs_dir).absolute() / campaign.name, log=_log,
                    job_backend="srun")
    if array_task:
        index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "-1"))
        planned = len(engine.plan(stage))
        if not 0 <= index < planned:
            _log(f"{stage}: array task {index}: the plan has {planned} job(s); nothing to do")
            return 0
        _log(f"{stage}: job {index} of {planned}")
        return engine.run_job_index(stage, index, lock_wait_s=LOCK_WAIT_S)
    from golfrun.pipeline.lock import CampaignLock

    with CampaignLock(engine.campaign_dir, command=f"slurm job: golfrun {stage}", wait_s=LOCK_WAIT_S):
        if stage_spec(stage).runs_when_blocked:  # preserve: what Slurm cancelled gets its SKIPPED summary
            _mark_blocked(engine)
        if not force and _next_wave(engine, stage):
            return 0  # the next wave's array and aggregation job carry the stage on
        outcome = engine.run_stage(stage, force=force, job_cache=job_cache)
    return EXIT_CODES[outcome.summary.verdict] if outcome.summary.verdict is not Verdict.PASS else 0


def _next_wave(engine: "object", stage: str) -> bool:
    """A stage run in waves (a sequential gate-b) whose finished waves left it undecided: submit the
    next wave (no process waits for it) and say so; False when the stage can decide now."""
    from golfrun.pipeline.engine import Engine
    from golfrun.pipeline.slurm_campaign import submit_next_wave

    assert isinstance(engine, Engine)
    array = stage_spec(stage).array
    if array is None or not array.in_waves(engine.campaign):
        return False
    wave = array.next_wave(engine.context(stage, engine.upstream(stage)))
    if not wave:
        return False
    _log(f"{stage}: the looks so far continue: submitting the wave of seeds {wave}")
    submit_next_wave(engine.campaign, stage, engine.campaign_dir, os.getcwd(), os.environ.get("SLURM_JOB_ID", ""), _log)
    return True


def _mark_blocked(engine: "object") -> None:
    """Stages Slurm cancelled because an upstream stage did not PASS get a SKIPPED summary."""
    from golfrun.pipeline.engine import Engine

    assert isinstance(engine, Engine)
    seen = {}
    for stage in STAGES[:-1]:
        blocked = engine.blocker(stage, seen)
        if blocked is not None:
            # as run-all does: a stage after a KILL/ERROR/HOLD is SKIPPED, whatever an older run left
            seen[stage] = engine._skipped(stage, engine.upstream(stage, strict=False), blocked)
            continue
        summary = engine.read(stage)
        if summary is not None:
            seen[stage] = summary


if __name__ == "__main__":
    sys.exit(main())
