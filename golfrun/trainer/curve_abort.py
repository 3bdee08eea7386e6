"""Learning-curve early abort: is a training run trailing a reference run's training loss at step N?

A trained ablation variant that is clearly behind the curve of the run it is compared with (gate-a's
run: same trainer, same seed, same settings but the variant's) will not win; stopping it at an early
step saves most of its GPU time (ablation.abort_at_steps, docs/pipeline.md).

Pure parts: `CurveAbort` (the rule: check steps, margin, the reference's train loss by step, plain
data that travels inside a `Job`), `decide` (one check), `CurveWatch` (fed the trainer's output line
by line, as the local backend's reader sees it, it answers the first trailing check) and
`train_losses` (a log's train-loss points). Lines are read by the one progress-line parser,
golfrun/trainer/progress.py, so every log format it knows works here.

The check at step N looks at the first train-loss line at a step s >= N (the trainer logs every
TRAIN_LOG_EVERY steps, so s is N when N is a multiple of it) and compares it with the reference's
loss at that same step s (linear interpolation between the reference's logged steps; exact when both
runs log the same steps). Trailing: observed > reference + margin, or a non-finite observed loss (a
diverged run). A step beyond the reference's last logged step cannot be compared: that check is
skipped (recorded with `trailing` False and `reference_loss` None), never guessed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from golfrun.trainer.progress import train_progress

ABORT_FILE = "abort.json"  # in the job folder, written by the backend that stopped the run
ABORT_SCHEMA = "golfrun.curve-abort/1"


@dataclass(frozen=True)
class CurveAbort:
    """When to stop a training run: at each of `steps`, trailing `reference` by more than `margin_nats`."""

    steps: tuple[int, ...]
    margin_nats: float
    reference: tuple[tuple[int, float], ...]  # (step, train loss) of the reference run, by step
    reference_source: str  # where the reference comes from, for the summary ("gate-a job seed0 (…/seed0.txt)")

    def to_dict(self) -> dict[str, Any]:
        """The rule as job.json keeps it (the reference's points at the check steps, not the whole curve)."""
        return {"steps": list(self.steps), "margin_nats": self.margin_nats, "reference_source": self.reference_source,
                "reference_at_steps": {str(s): reference_at(self.reference, s) for s in self.steps},
                "reference_points": len(self.reference)}


@dataclass(frozen=True)
class Check:
    """One check of a run against the reference."""

    check_step: int  # the configured step N
    step: int  # the run's first logged step >= N
    iterations: int | None  # the run's planned steps (from its log line), None when the line does not say
    observed_loss: float | None  # None: not a number (written as null)
    reference_loss: float | None  # None: the reference has no point that far; nothing was decided
    margin_nats: float
    trailing: bool

    def to_dict(self) -> dict[str, Any]:
        return {"check_step": self.check_step, "step": self.step, "iterations": self.iterations,
                "observed_loss": self.observed_loss, "reference_loss": self.reference_loss,
                "margin_nats": self.margin_nats, "trailing": self.trailing}

    def describe(self) -> str:
        """One line for a job's reason and the summary."""
        obs = "not a number" if self.observed_loss is None else f"{self.observed_loss:.4f}"
        if self.reference_loss is None:
            return f"step {self.step}: train_loss {obs}, no reference point that far; not checked"
        word = "trailing" if self.trailing else "within"
        return (f"step {self.step}: train_loss {obs} vs reference {self.reference_loss:.4f} "
                f"+ margin {self.margin_nats:g} nats ({word})")


def reference_at(reference: Sequence[tuple[int, float]], step: int) -> float | None:
    """The reference's train loss at `step`: exact at a logged step, linear between two, None outside."""
    steps = [s for s, _ in reference]
    i = bisect.bisect_left(steps, step)
    if i < len(steps) and steps[i] == step:
        return reference[i][1]
    if i == 0 or i == len(steps):
        return None
    (a, la), (b, lb) = reference[i - 1], reference[i]
    return la + (lb - la) * (step - a) / (b - a)


def decide(rule: CurveAbort, check_step: int, step: int, loss: float, iterations: int | None = None) -> Check:
    """The check at `check_step`, seen at the run's logged `step` with train loss `loss`."""
    ref = reference_at(rule.reference, step)
    finite = math.isfinite(loss)
    trailing = ref is not None and (not finite or loss > ref + rule.margin_nats)
    return Check(check_step, step, iterations, loss if finite else None, ref, rule.margin_nats, trailing)


def train_losses(lines: Iterable[str]) -> list[tuple[int, float]]:
    """(step, train loss) of a trainer log, by step (a later line for a step replaces an earlier one)."""
    points = {p.step: p.train_loss for p in train_progress(lines) if p.train_loss is not None}
    return sorted(points.items())


@dataclass
class CurveWatch:
    """Fed a run's output lines in order; `abort` is set at the first trailing check."""

    rule: CurveAbort
    checks: list[Check] = field(default_factory=list)
    abort: Check | None = None

    def feed(self, line: str) -> Check | None:
        """The trailing check this line completes, else None (cheap: called for every output line)."""
        if self.abort is not None or len(self.checks) == len(self.rule.steps) or "train_loss" not in line:
            return None
        p = next(train_progress((line,)), None)
        if p is None or p.train_loss is None:
            return None
        for check_step in self.rule.steps[len(self.checks):]:
            if p.step < check_step:
                break
            check = decide(self.rule, check_step, p.step, p.train_loss, p.iterations)
            self.checks.append(check)
            if check.trailing:
                self.abort = check
                return check
        return None


def watch_log(rule: CurveAbort, lines: Iterable[str]) -> CurveWatch:
    """The checks a whole log passes through (a finished run's, for its summary row)."""
    watch = CurveWatch(rule)
    for line in lines:
        watch.feed(line)
    return watch
