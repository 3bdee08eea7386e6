"""Live progress of trainer jobs: stage, job, phase, step, loss, tok/s, ETA.

Fed with the trainer's output lines (`on_line(job_name, line)`, e.g. from
`LocalBackend(on_line=lambda job, line: display.on_line(job.name, line))`), which it reads with
`golfrun.trainer.progress`. On a terminal it is a rich live table; elsewhere (CI, a pipe) it
prints one plain line per update, throttled, so logs stay readable.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from golfrun.trainer.progress import Progress, parse_progress_line


@dataclass
class JobView:
    name: str
    stage: str = ""
    phase: str = "starting"
    step: int | None = None
    iterations: int | None = None
    train_loss: float | None = None
    val_bpb: float | None = None
    tok_s: float | None = None
    eta_s: float | None = None
    state: str = "RUNNING"
    label: str = ""  # which counter an eval step belongs to (ttp batches, global_sgd steps, …)
    wallclock_cap_s: float | None = None  # training stops at this train_time at the latest
    # where the current phase's rate is measured from: (monotonic time, step)
    _phase_origin: tuple[float, int] | None = None
    _phase_key: str = ""
    _ttt_batches: int = 0  # TTT batches finished, counted across the global-SGD pause


def apply(view: JobView, p: Progress, now: float) -> None:
    """Fold one parsed line into a job's view (pure apart from `view`)."""
    if p.phase == "setup":
        if p.wallclock_cap_s:
            view.wallclock_cap_s = p.wallclock_cap_s
        return
    key = f"{p.phase}:{p.label if p.phase != 'train' else ''}:{p.iterations}"
    if key != view._phase_key:
        view._phase_key, view._phase_origin, view.eta_s = key, None, None
        if p.phase != view.phase:
            view.step = view.iterations = None  # a step count means something else in each phase
    view.phase = p.phase
    view.label = p.label if p.phase == "eval" and p.step is not None else view.label if p.phase == "eval" else ""
    if p.step is not None:
        step = p.step
        if p.label == "ttp":
            # `ttp: bK/N` names a batch by its length rank and the queue runs longest first: count instead
            view._ttt_batches += 1
            step = view._ttt_batches
        view.step, view.iterations = step, p.iterations
        if view._phase_origin is None:
            view._phase_origin = (now, step)
        else:
            t0, s0 = view._phase_origin
            if step > s0 and p.iterations:
                view.eta_s = max(0.0, (now - t0) / (step - s0) * (p.iterations - step))
                if p.phase == "train" and view.wallclock_cap_s and p.train_time_min is not None:
                    # the wall-clock cap, not the step count, usually ends training
                    view.eta_s = min(view.eta_s, max(0.0, view.wallclock_cap_s - p.train_time_min * 60.0))
    if p.train_loss is not None:
        view.train_loss = p.train_loss
    if p.val_bpb is not None:
        view.val_bpb = p.val_bpb
    if p.tok_s is not None:
        view.tok_s = p.tok_s
    if p.final:
        view.phase, view.eta_s, view.label = "done", 0.0, ""


def format_view(view: JobView) -> str:
    """One plain line for a job."""
    # An eval step is shown with its counter's name: TTT batches and global-SGD steps interleave,
    # and "eval 3/7, eval 2/5, eval 4/7" read as a counter jumping back and forth.
    phase = f"{view.phase} {view.label}" if view.label else view.phase
    parts = [f"[{view.stage}] {view.name}" if view.stage else view.name, phase]
    if view.step is not None:
        parts.append(f"{view.step}/{view.iterations}" if view.iterations else str(view.step))
    if view.train_loss is not None:
        parts.append(f"loss {view.train_loss:.4f}")
    if view.val_bpb is not None:
        parts.append(f"val_bpb {view.val_bpb:.4f}")
    if view.tok_s is not None:
        parts.append(f"{_si(view.tok_s)} tok/s")
    if view.eta_s is not None and view.phase not in ("done",):
        parts.append(f"ETA {_duration(view.eta_s)}")
    if view.state != "RUNNING":
        parts.append(view.state)
    return "  ".join(parts)


class ProgressDisplay:
    """Use as a context manager around a stage's jobs; thread-safe (lines come from reader threads)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        live: bool | None = None,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.stage = ""
        self.jobs: dict[str, JobView] = {}
        self._lock = threading.Lock()
        self._last_print: dict[str, float] = {}
        self._last_phase: dict[str, str] = {}
        self._live: Any = None
        self._console: Any = None

    def __enter__(self) -> "ProgressDisplay":
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream)
            self._live = Live(get_renderable=self._render, console=self._console, refresh_per_second=4, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def set_stage(self, stage: str) -> None:
        with self._lock:
            self.stage = stage

    def log(self, message: str) -> None:
        """A line of ordinary output that must not fight the live table."""
        if self._console is not None:
            self._console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def on_line(self, job_name: str, line: str) -> None:
        p = parse_progress_line(line)
        if p is None or (p.phase == "setup" and not p.wallclock_cap_s):
            return
        with self._lock:
            view = self._view(job_name)
            now = self.clock()
            apply(view, p, now)
            # The final score's line is not printed: job_finished prints the closing line with the
            # job's outcome right after, and "done 7/7" twice reads as two jobs.
            if not self.live and p.phase != "setup" and not p.final and self._should_print(f"{self.stage}/{job_name}", view, p, now):
                print(format_view(view), file=self.stream, flush=True)

    def job_finished(self, job_name: str, state: str) -> None:
        with self._lock:
            view = self._view(job_name)
            view.state, view.eta_s = state, None
            if state == "SUCCEEDED":
                view.phase = "done"  # a failed job keeps the phase it died in
            if not self.live:
                print(format_view(view), file=self.stream, flush=True)

    def _view(self, job_name: str) -> JobView:
        # one row per (stage, job): gate-a's seed0 and gate-b's seed0 are different runs
        return self.jobs.setdefault(f"{self.stage}/{job_name}", JobView(job_name, self.stage))

    def _should_print(self, key: str, view: JobView, p: Progress, now: float) -> bool:
        phase_changed = self._last_phase.get(key) != view.phase
        due = now - self._last_print.get(key, float("-inf")) >= self.min_interval_s
        if phase_changed or due or p.final or (p.val_bpb is not None and p.phase == "train"):
            self._last_phase[key] = view.phase
            self._last_print[key] = now
            return True
        return False

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(f"golfrun {self.stage}".strip()), expand=False)
        for column in ("stage", "job", "phase", "step", "loss", "val_bpb", "tok/s", "ETA", "state"):
            table.add_column(column)
        with self._lock:
            views = list(self.jobs.values())
        for v in views:
            table.add_row(  # plain strings: rich would read "[...]" in a name as markup
                *(Text(c) for c in (
                v.stage,
                v.name,
                f"{v.phase} {v.label}" if v.label else v.phase,
                "" if v.step is None else (f"{v.step}/{v.iterations}" if v.iterations else str(v.step)),
                "" if v.train_loss is None else f"{v.train_loss:.4f}",
                "" if v.val_bpb is None else f"{v.val_bpb:.4f}",
                "" if v.tok_s is None else _si(v.tok_s),
                "" if v.eta_s is None else _duration(v.eta_s),
                v.state,
                ))
            )
        return table


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"
