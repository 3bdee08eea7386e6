"""One trainer output line → where the run is (for the live progress display).

Pure and forgiving: a line that says nothing about progress gives None. Understands the record's
lines (trainer-facts §8.1) and the naive baseline's (§8.2), with or without a console capture's
epoch-seconds prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from golfrun.trainer.logformats import match_score, strip_prefix

PHASES = ("setup", "warmup", "train", "serialize", "eval")

_N = r"[-+]?\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf"


@dataclass(frozen=True)
class Progress:
    phase: str  # warmup | train | serialize | eval
    step: int | None = None  # step, priming step or eval batch/chunk index
    iterations: int | None = None  # its total
    train_loss: float | None = None
    train_time_min: float | None = None
    tok_s: float | None = None
    val_loss: float | None = None
    val_bpb: float | None = None
    label: str = ""  # eval label or a short description of the event
    final: bool = False  # this line is a final score
    wallclock_cap_s: float | None = None  # setup: the training time cap (MAX_WALLCLOCK_SECONDS)


_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # the Hyperparameters block's "  max_wallclock_seconds: 600.0", or the baseline's "… max_wallclock_seconds:600.000"
    (re.compile(rf"^(?:max_wallclock_seconds: |train_batch_tokens:.* max_wallclock_seconds:)({_N})$"), "cap"),
    (re.compile(r"^(?:loop_)?warmup_step: ?(\d+)/(\d+)$"), "warmup"),
    (re.compile(rf"^(\d+)/(\d+) train_loss: ({_N}) train_time: ({_N})m tok/s: ({_N})$"), "train"),
    (re.compile(rf"^(\d+)/(\d+) val_loss: ({_N}) val_bpb: ({_N})$"), "val"),
    (re.compile(rf"^step:(\d+)/(\d+) val_loss:({_N}) val_bpb:({_N}) train_time:({_N})ms"), "base_val"),
    (re.compile(rf"^step:(\d+)/(\d+) train_loss:({_N}) train_time:({_N})ms"), "base_train"),
    (re.compile(r"^stopping_early: wallclock_cap train_time: ?(\d+)ms step: ?(\d+)/(\d+)"), "stop"),
    (re.compile(r"^ttp: b(\d+)/(\d+) bl:\S+ bb:\S+ rl:(\S+) rb:(\S+)"), "ttp"),
    (re.compile(r"^tttg: c(\d+)/(\d+) "), "tttg"),
    (re.compile(r"^(?:ttt_progress|sliding_progress): batch (\d+)/(\d+) .*running_loss:(\S+) running_bpb:(\S+)"), "batch"),
    (re.compile(r"^(Serialized model|Code size|GPTQ:|Quantized weights:|Total submission size)"), "serialize"),
    (re.compile(r"^(ttt_lora:warming up compile|beginning TTT eval timer|ttt_phased:|ttpp:|ttpr:)"), "eval_event"),
]


def parse_progress_line(line: str) -> Progress | None:
    text = strip_prefix(line).strip()
    if not text:
        return None
    for pattern, kind in _PATTERNS:
        m = pattern.match(text)
        if not m:
            continue
        g = m.groups()
        if kind == "cap":
            return Progress("setup", label="max_wallclock_seconds", wallclock_cap_s=float(g[0]))
        if kind == "warmup":
            return Progress("warmup", int(g[0]), int(g[1]), label="loop_warmup" if text.startswith("loop") else "warmup")
        if kind == "train":
            return Progress("train", int(g[0]), int(g[1]), train_loss=float(g[2]), train_time_min=float(g[3]), tok_s=float(g[4]))
        if kind == "val":
            return Progress("train", int(g[0]), int(g[1]), val_loss=float(g[2]), val_bpb=float(g[3]), label="val")
        if kind == "base_val":
            return Progress(
                "train", int(g[0]), int(g[1]), val_loss=float(g[2]), val_bpb=float(g[3]),
                train_time_min=float(g[4]) / 60_000.0, label="val",
            )
        if kind == "base_train":
            return Progress("train", int(g[0]), int(g[1]), train_loss=float(g[2]), train_time_min=float(g[3]) / 60_000.0)
        if kind == "stop":
            return Progress("train", int(g[1]), int(g[2]), train_time_min=int(g[0]) / 60_000.0, label="stopping_early")
        if kind in ("ttp", "batch"):
            return Progress("eval", int(g[0]), int(g[1]), val_loss=_f(g[2]), val_bpb=_f(g[3]), label=text.split(":", 1)[0])
        if kind == "tttg":
            return Progress("eval", int(g[0]), int(g[1]), label="global_sgd")
        if kind == "serialize":
            return Progress("serialize", label=g[0].rstrip(":"))
        if kind == "eval_event":
            return Progress("eval", label=g[0].rstrip(":"))
    score = match_score(text)  # the final-score formats of logformats, "val_loss=" and stride words included
    if score is None:
        return None
    final = score.format is not None and score.format.role == "score" and not score.label.startswith("diagnostic")
    return Progress("eval", val_loss=score.val_loss, val_bpb=score.val_bpb, label=score.label, final=final)


def _f(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def train_progress(lines: Iterable[str]) -> Iterator[Progress]:
    """The training lines of a log that carry a step, parsed, in order: what every curve is read from."""
    for line in lines:
        p = parse_progress_line(line)
        if p is not None and p.phase == "train" and p.step is not None:
            yield p
