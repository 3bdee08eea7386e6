"""The engine: runs stages in order, skips what is done, and decides what is blocked.

Rules (docs/pipeline.md has the long form):

- Order: verify-pod → download-data → gate-a → ablation → gate-b → preserve.
- Skip-if-done: a stage is served from cache when its summary reads back cleanly, its verdict is
  PASS, KILL or HOLD, and its fingerprint — sha256 of its config sections, the trainer's sha256
  (for stages that run it) and the fingerprints, verdicts and human decisions of the upstream
  summaries it reads — equals the one computed now. ERROR and SKIPPED are never cached, and
  verify-pod (`always_run` in its SPEC) checks the machine on every run: a new pod is a new machine.
- `force`: the named stages rerun with their job cache ignored; every stage after the first
  forced one reruns too (its jobs are still cached one by one, keyed by their inputs).
- Blocking: a KILL, ERROR or SKIPPED earlier in the order makes every later stage SKIPPED, except
  preserve, which always runs. A HOLD does the same until `golfrun decide` records a person's call.
- A summary that cannot be read back is moved aside (summary.json.corrupt-<time>) and its stage
  reruns; the log says which file and why.
- Every run of a stage leaves `last_run.json` beside its summary: ran, cached or skipped, and why
  (what `golfrun explain` shows).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun import budget, stages
from golfrun.errors import GolfrunError, SummaryError, UsageError
from golfrun.fileio import now_iso, os_error_text, remove_stale_temps, sha256_file, sha256_text
from golfrun.machine import campaign_result_key, read_machine
from golfrun.pipeline import forced as force_marker, summaries
from golfrun.stages.common import campaign_section, trainer_path
from golfrun.summary import EXIT_CODES, STAGES, Summary, Verdict

if TYPE_CHECKING:
    from golfrun.backends.base import Backend
    from golfrun.campaign import Campaign
    from golfrun.stages.context import StageContext

CACHEABLE = {Verdict.PASS, Verdict.KILL, Verdict.HOLD}
BLOCKING = {Verdict.KILL, Verdict.ERROR, Verdict.SKIPPED, Verdict.HOLD}
LAST_RUN = "last_run.json"


def stage_module(stage: str) -> Any:
    return stages.module(stage)


@dataclass
class StageOutcome:
    stage: str
    summary: Summary
    action: str  # ran | cached | skipped
    why: str


@dataclass
class Engine:
    campaign: "Campaign"
    campaign_dir: Path
    backend_factory: Callable[[], "Backend"] | None = None  # default: the registry's `job_backend`
    log: Callable[[str], None] = print
    on_stage: Callable[[str], None] | None = None  # told when a stage starts (the progress display)
    job_backend: str = "local"  # the job backend's name in golfrun.backends.base.REGISTRY
    _backend: "Backend | None" = field(default=None, init=False)
    _trainer_sha: str | None = field(default=None, init=False)

    # ------------------------------------------------------------------ inputs

    @property
    def trainer_sha256(self) -> str:
        if self._trainer_sha is None:
            path = trainer_path(self.campaign)
            self._trainer_sha = sha256_file(path) if path.is_file() else "missing:" + str(path)
        return self._trainer_sha

    @property
    def backend(self) -> "Backend":
        if self._backend is None:
            if self.backend_factory is None:
                from golfrun.backends.base import create

                self._backend = create(self.job_backend, self.campaign)
            else:
                self._backend = self.backend_factory()
        return self._backend

    def plan_backend(self) -> "Backend":
        """The job backend as --dry-run shows it: built from the registry, never used to submit."""
        from golfrun.backends.base import create

        return create(self.job_backend, self.campaign)

    def read(self, stage: str) -> Summary | None:
        """The stage's summary or None; SummaryError when it exists but cannot be read back."""
        return summaries.read_summary(self.campaign_dir, stage)

    def upstream(self, stage: str, strict: bool = True) -> dict[str, Summary]:
        found: dict[str, Summary] = {}
        for name in stages.spec(stage).upstream:
            try:
                summary = self.read(name)
            except SummaryError:
                if strict:
                    raise
                continue
            if summary is not None:
                found[name] = summary
        return found

    def fingerprint(self, stage: str, upstream: dict[str, Summary]) -> tuple[str, dict[str, str]]:
        inputs: dict[str, str] = {}
        for section in stages.spec(stage).config_sections:
            data = campaign_section(self.campaign, section)
            inputs[f"config:{section}"] = sha256_text(json.dumps(data, sort_keys=True, default=str))
        if stages.spec(stage).uses_trainer:
            inputs["trainer_sha256"] = self.trainer_sha256
        if stages.spec(stage).runs_jobs:  # results from other hardware are never this machine's
            inputs["hardware"] = campaign_result_key(self.campaign_dir)
        for name in stages.spec(stage).upstream:
            up = upstream.get(name)
            if up is None:
                inputs[f"upstream:{name}"] = "absent"
                continue
            human = json.dumps(up.human_decision, sort_keys=True) if up.human_decision else ""
            inputs[f"upstream:{name}"] = sha256_text(f"{up.fingerprint}|{up.verdict.value}|{human}")
        fp = sha256_text(json.dumps(inputs, sort_keys=True))
        return fp, inputs

    def context(self, stage: str, upstream: dict[str, Summary], dry_run: bool = False) -> "StageContext":
        from golfrun.stages.context import StageContext

        fp, inputs = self.fingerprint(stage, upstream)
        return StageContext(
            campaign=self.campaign,
            stage=stage,
            campaign_dir=self.campaign_dir,
            stage_dir=summaries.stage_dir(self.campaign_dir, stage),
            upstream=upstream,
            backend=self.plan_backend() if dry_run else _LazyBackend(self),  # type: ignore[arg-type]
            trainer_sha256=self.trainer_sha256,
            fingerprint=fp,
            fingerprint_inputs=inputs,
            dry_run=dry_run,
            log=self.log,
        )

    # ------------------------------------------------------------------ bookkeeping

    def _last_run(self, stage: str, action: str, why: str, extra: dict[str, Any] | None = None) -> None:
        record = {"stage": stage, "action": action, "why": why, "at": now_iso(), **(extra or {})}
        try:
            summaries.write_json_atomic(summaries.stage_dir(self.campaign_dir, stage) / LAST_RUN, record)
        except OSError as exc:  # bookkeeping for `explain`: its loss must not change the verdict
            self.log(f"{stage}: could not record last_run.json: {os_error_text(exc)}")

    def read_last_run(self, stage: str) -> dict[str, Any] | None:
        path = summaries.stage_dir(self.campaign_dir, stage) / LAST_RUN
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def _remove_stale_temps(self, stage_dir: Path) -> None:
        """Temp files of an atomic write that a kill interrupted (fileio.remove_stale_temps). Safe
        here: the caller holds the campaign lock, so no other writer is mid-write."""
        folders = [self.campaign_dir, stage_dir, *sorted((stage_dir / "jobs").glob("*/"))]
        removed = [p for folder in folders for p in remove_stale_temps(folder)]
        if removed:
            self.log(f"removed {len(removed)} temporary file(s) of an interrupted write: "
                     + ", ".join(str(p.relative_to(self.campaign_dir)) for p in removed))

    def _set_aside(self, stage: str, error: SummaryError) -> None:
        path = summaries.summary_path(self.campaign_dir, stage)
        if path.exists():
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            path.replace(aside)
            self.log(f"{stage}: {error}; moved it to {aside.name} and running {stage} again")

    def _skipped(self, stage: str, upstream: dict[str, Summary], reason: str) -> Summary:
        fp, inputs = self.fingerprint(stage, upstream)
        stamp = now_iso()
        summary = Summary(
            stage=stage,
            campaign=self.campaign.name,
            verdict=Verdict.SKIPPED,
            started_at=stamp,
            finished_at=stamp,
            fingerprint=fp,
            fingerprint_inputs=inputs,
            reasons=[reason],
        )
        try:
            summaries.write_summary(self.campaign_dir, summary)
        except OSError as exc:
            self.log(f"{stage}: could not write its SKIPPED summary: {os_error_text(exc)}")
        self._last_run(stage, "skipped", reason)
        self.log(f"{stage}: SKIPPED ({reason})")
        return summary

    # ------------------------------------------------------------------ running

    def cached(self, stage: str, upstream: dict[str, Summary]) -> tuple[Summary | None, str]:
        """(the summary to reuse, why) or (None, why it must run)."""
        try:
            existing = self.read(stage)
        except SummaryError as exc:
            self._set_aside(stage, exc)
            return None, f"its summary was corrupted ({exc})"
        if existing is None:
            return None, "it has no summary yet"
        if stages.spec(stage).always_run:
            return None, "it checks the machine itself, on every run"
        fp, inputs = self.fingerprint(stage, upstream)
        if existing.verdict not in CACHEABLE:
            return None, f"its last verdict was {existing.verdict.value}, which is never reused"
        if existing.fingerprint != fp:
            changed = sorted(k for k in set(inputs) | set(existing.fingerprint_inputs)
                             if inputs.get(k) != existing.fingerprint_inputs.get(k))
            return None, "its inputs changed: " + (", ".join(changed) or "fingerprint")
        return existing, "summary valid and fingerprint unchanged"

    def run_stage(self, stage: str, *, force: bool = False, job_cache: bool = True, why_forced: str = "") -> StageOutcome:
        """Run one stage (or serve it from cache). Upstream summaries must exist and read back.

        A disk error (full, read-only) anywhere in it makes the stage ERROR with one line naming
        the path: its summary is written if the disk still takes it, else kept in memory (run-all
        then skips what follows and still attempts preserve). What was written before stays whole
        (every write is atomic) and a --force marker stays, so the next run redoes the stage."""
        try:
            return self._run_stage(stage, force=force, job_cache=job_cache, why_forced=why_forced)
        except OSError as exc:
            return self._io_error(stage, os_error_text(exc))

    def _io_error(self, stage: str, reason: str, earlier: list[str] | None = None) -> StageOutcome:
        fp, inputs = self.fingerprint(stage, self.upstream(stage, strict=False))
        stamp = now_iso()
        summary = Summary(stage=stage, campaign=self.campaign.name, verdict=Verdict.ERROR, started_at=stamp,
                          finished_at=stamp, fingerprint=fp, fingerprint_inputs=inputs,
                          reasons=[f"I/O error: {reason}", *(earlier or [])])
        try:
            summaries.write_summary(self.campaign_dir, summary)
        except OSError as exc:
            self.log(f"{stage}: could not write its ERROR summary either: {os_error_text(exc)}")
        self._last_run(stage, "ran", summary.reasons[0])
        self.log(f"{stage}: ERROR: {summary.reasons[0]}")
        return StageOutcome(stage, summary, "ran", summary.reasons[0])

    def _run_stage(self, stage: str, *, force: bool, job_cache: bool, why_forced: str) -> StageOutcome:
        upstream = self.upstream(stage)
        stage_dir = summaries.stage_dir(self.campaign_dir, stage)
        self._remove_stale_temps(stage_dir)
        pending = force_marker.read(stage_dir)
        if force:
            why = why_forced or "--force"
            pending = force_marker.mark(stage_dir, why, jobs_fresh=not job_cache)  # before anything is deleted
        elif pending is not None:
            why = f"its --force ({pending.why}, {pending.since}) was interrupted and must complete"
        else:
            existing, why = self.cached(stage, upstream)
            if existing is not None:
                self._last_run(stage, "cached", why)
                self.log(f"{stage}: {existing.verdict.value} (cached: {why})")
                return StageOutcome(stage, existing, "cached", why)
        ctx = self.context(stage, upstream)
        ctx.stage_dir.mkdir(parents=True, exist_ok=True)
        if self.on_stage is not None:
            self.on_stage(stage)
        ctx.job_cache = job_cache
        ctx.force_token = pending.token if pending is not None else ""
        if stages.spec(stage).runs_jobs:  # [budget]: BudgetError before anything of the stage starts
            budget.check_stage(ctx, lambda: stage_module(stage).plan(ctx))
        self.log(f"{stage}: running ({why})")
        started = now_iso()
        t0 = time.monotonic()
        try:
            summary = stage_module(stage).run(ctx)
        except GolfrunError as exc:
            summary = self._error_summary(ctx, started, str(exc))
        except OSError as exc:
            summary = self._error_summary(ctx, started, f"I/O error: {os_error_text(exc)}")
        except Exception as exc:  # a bug must still leave an ERROR, never a missing or PASS summary
            tb = traceback.format_exc(limit=-3)
            summary = self._error_summary(ctx, started, f"{type(exc).__name__}: {exc}\n{tb}")
        summary.fingerprint = ctx.fingerprint
        summary.fingerprint_inputs = ctx.fingerprint_inputs
        recorded = read_machine(self.campaign_dir)  # verify-pod's probe of this machine
        summary.machine = recorded.to_dict() if recorded is not None else None
        summary.stage = stage
        summary.campaign = self.campaign.name
        try:
            summaries.write_summary(self.campaign_dir, summary)
        except OSError as exc:  # keep what the stage itself found wrong, after the write's failure
            return self._io_error(stage, os_error_text(exc), summary.reasons if summary.verdict is Verdict.ERROR else [])
        force_marker.clear(stage_dir)  # the forced stage completed
        self._last_run(stage, "ran", why, {"duration_s": round(time.monotonic() - t0, 3)})
        first = f": {summary.reasons[0]}" if summary.reasons else ""
        self.log(f"{stage}: {summary.verdict.value}{first.splitlines()[0] if first else ''}")
        return StageOutcome(stage, summary, "ran", why)

    def _error_summary(self, ctx: "StageContext", started: str, message: str) -> Summary:
        return Summary(
            stage=ctx.stage,
            campaign=self.campaign.name,
            verdict=Verdict.ERROR,
            started_at=started,
            finished_at=now_iso(),
            fingerprint=ctx.fingerprint,
            fingerprint_inputs=ctx.fingerprint_inputs,
            reasons=[message],
        )

    def blocker(self, stage: str, outcomes: dict[str, Summary]) -> str | None:
        """Why `stage` may not run: the first earlier stage whose verdict blocks it."""
        for name in STAGES[: STAGES.index(stage)]:
            summary = outcomes.get(name)
            if summary is not None and summary.verdict in BLOCKING:
                if summary.verdict is Verdict.HOLD:
                    return f"{name} is HOLD: waiting for `golfrun decide {name}`"
                return f"{name} is {summary.verdict.value}"
        return None

    def run_all(self, force: Iterable[str] = ()) -> int:
        """Every stage in order; the exit code of the worst verdict."""
        force = set(force)
        for name in force:
            if name not in STAGES:
                raise GolfrunError(f"--force {name!r}: not a stage; stages are: {', '.join(STAGES)}")
        first_forced = min((STAGES.index(s) for s in force), default=len(STAGES))
        unmarked = None
        try:
            for stage in STAGES[first_forced:]:  # all marked before the first is touched: a kill anywhere drops none
                force_marker.mark(summaries.stage_dir(self.campaign_dir, stage), f"--force {stage}" if stage in force
                                  else "an upstream stage was forced", jobs_fresh=stage in force)
        except OSError as exc:  # nothing deleted yet: the forced stages do not run
            unmarked = f"--force: {os_error_text(exc)}"
        outcomes: dict[str, Summary] = {}
        for i, stage in enumerate(STAGES):
            blocked = self.blocker(stage, outcomes)
            if blocked is not None and not stages.spec(stage).runs_when_blocked:
                outcomes[stage] = self._skipped(stage, self.upstream(stage, strict=False), blocked)
                continue
            if unmarked is not None and i == first_forced and not stages.spec(stage).runs_when_blocked:
                outcomes[stage] = self._io_error(stage, unmarked).summary
                continue
            forced = i >= first_forced
            why = f"--force {stage}" if stage in force else "an upstream stage was forced" if forced else ""
            result = self.run_stage(stage, force=forced, job_cache=stage not in force, why_forced=why)
            outcomes[stage] = result.summary
        return exit_code(outcomes.values())

    def run_single(self, stage: str, force: bool = False) -> int:
        """One stage on its own (`golfrun gate-a`): its upstream summaries must be there; a blocking
        verdict before it makes it SKIPPED (preserve excepted). Returns its verdict's exit code."""
        if stage not in STAGES:
            raise GolfrunError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
        earlier: dict[str, Summary] = {}
        for name in STAGES[: STAGES.index(stage)]:
            try:
                found = self.read(name)
            except SummaryError as exc:
                if name in stages.spec(stage).upstream:
                    raise SummaryError(f"{exc}; `golfrun run-all` (or `golfrun {name}`) runs {name} again") from exc
                continue
            if found is not None:
                earlier[name] = found
        missing = [n for n in stages.spec(stage).upstream if n not in earlier]
        if missing and not stages.spec(stage).runs_when_blocked:
            path = summaries.summary_path(self.campaign_dir, missing[0])
            raise GolfrunError(f"{stage} needs {missing[0]}'s summary ({path} is missing): "
                               f"run `golfrun {missing[0]}` first, or `golfrun run-all`")
        blocked = self.blocker(stage, earlier)
        if blocked is not None and not stages.spec(stage).runs_when_blocked:
            return EXIT_CODES[self._skipped(stage, self.upstream(stage, strict=False), blocked).verdict]
        outcome = self.run_stage(stage, force=force, job_cache=not force, why_forced="--force" if force else "")
        return EXIT_CODES[outcome.summary.verdict]

    # ------------------------------------------------------------------ one job (Slurm arrays)

    def plan(self, stage: str) -> list[Any]:
        if not stages.spec(stage).runs_jobs:
            return []
        module = stage_module(stage)
        ctx = self.context(stage, self.upstream(stage, strict=False), dry_run=True)
        return list(module.plan(ctx))

    def run_job_index(self, stage: str, index: int, lock_wait_s: float = 0.0) -> int:
        """Run job `index` of the stage's plan in its folder; write no summary (a later plain run
        of the stage finds it cached and aggregates). Holds the campaign lock shared (the tasks of
        one Slurm array run side by side; a run-all or stage command excludes them, LockError) and
        the job's own lock exclusively."""
        from golfrun.pipeline.lock import CampaignLock, job_lock
        from golfrun.stages import common

        if not stages.spec(stage).runs_jobs:
            with_jobs = ", ".join(s.name for s in stages.specs().values() if s.runs_jobs)
            raise UsageError(f"{stage} runs no trainer jobs; --job-index applies to {with_jobs}")
        module = stage_module(stage)
        command = f"golfrun {stage} --job-index {index}"
        with CampaignLock(self.campaign_dir, command=command, shared=True, wait_s=lock_wait_s):
            ctx = self.context(stage, self.upstream(stage))
            jobs = list(module.plan(ctx))
            if not 0 <= index < len(jobs):
                raise UsageError(f"--job-index {index}: {stage} plans {len(jobs)} job(s), indices 0..{len(jobs) - 1}")
            budget.check_stage(ctx, lambda: jobs)  # an array task holds to [budget] as the whole stage does
            with job_lock(ctx.stage_dir, jobs[index].name, command=command, wait_s=lock_wait_s):
                outcome = common.run_job(ctx, jobs[index])
        return 0 if outcome.ok or outcome.aborted else EXIT_CODES[Verdict.ERROR]  # an abort is an outcome


class _LazyBackend:
    """Stands in for the backend until a stage first uses it (verify-pod and cached stages never do)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine.backend, name)


def exit_code(verdicts_of: Iterable[Summary]) -> int:
    verdicts = {s.verdict for s in verdicts_of}
    for v in (Verdict.ERROR, Verdict.KILL, Verdict.HOLD):
        if v in verdicts:
            return EXIT_CODES[v]
    if verdicts and verdicts <= {Verdict.PASS}:
        return 0
    return EXIT_CODES[Verdict.SKIPPED] if verdicts else 0
