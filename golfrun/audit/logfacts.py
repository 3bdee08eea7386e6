"""What a trainer log says about time, tokens and sizes, read with the log's own timestamps (the
epoch-seconds prefix a console capture adds) where it has them. Pure; stdlib only.

- training: the stop line's `train_time` (else the last reported train time);
- GPTQ/Hessian work after the loop stopped: from `GPTQ:collecting Hessians` to the end of the
  quantization (`Quantized weights:`, else the `Serialized model <scheme>+…` line) by timestamps;
  without timestamps, the `GPTQ:collected N Hessians in Xs` / `gptq:calibrated N layers in Xs` figure;
- evaluation: the final score's `eval_time` (trainer-facts §8);
- validation targets scored: `val_tokens: N` (record, our trainer) or the baseline's
  `val_loader:… tokens:N`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from golfrun.trainer.results import TrainerResult, parse_record_log

_STAMP = re.compile(r"^(\d{9,11}(?:\.\d+)?)\s(.*)$")
_HESSIANS_START = re.compile(r"^GPTQ:collecting Hessians")
_HESSIANS_DONE = re.compile(r"^(?:GPTQ:collected \d+ Hessians|gptq:(?:loop-aware )?calibrated \d+ layers) in ([\d.]+)s")
_QUANT_DONE = re.compile(r"^Quantized weights:")
_SERIALIZED = re.compile(r"^Serialized model [A-Za-z]\w*\+[\w\-]+: \d+ bytes")
_VAL_TOKENS = re.compile(r"^val_tokens:\s?(\d+)$|^val_loader:.* tokens:(\d+)$")


@dataclass
class LogFacts:
    result: TrainerResult
    timestamps: bool  # the log carries epoch-seconds prefixes
    train_s: float | None = None
    gptq_s: float | None = None  # Hessians + quantization after the loop stopped
    gptq_how: str = ""
    eval_s: float | None = None
    val_targets: int | None = None


def read_log_facts(text: str) -> LogFacts:
    """Raises TrainerResultError for a log of an unknown score format (parse_record_log)."""
    result = parse_record_log(text)
    lines = [_stamped(raw) for raw in text.splitlines()]
    facts = LogFacts(result, timestamps=any(t is not None for t, _ in lines))
    facts.train_s = None if result.train_time_ms is None else result.train_time_ms / 1000.0
    if result.final is not None and result.final.eval_time_ms is not None:
        facts.eval_s = result.final.eval_time_ms / 1000.0
    facts.gptq_s, facts.gptq_how = _gptq_seconds(lines)
    for _, line in lines:
        m = _VAL_TOKENS.match(line)
        if m:
            facts.val_targets = int(m.group(1) or m.group(2))
    return facts


def _stamped(raw: str) -> tuple[float | None, str]:
    line = raw.rstrip("\r\n")
    m = _STAMP.match(line)
    return (float(m.group(1)), m.group(2)) if m else (None, line)


def _gptq_seconds(lines: list[tuple[float | None, str]]) -> tuple[float | None, str]:
    start = next(((t, i) for i, (t, s) in enumerate(lines) if _HESSIANS_START.match(s)), None)
    reported = next((float(m.group(1)) for _, s in lines if (m := _HESSIANS_DONE.match(s))), None)
    if start is not None and start[0] is not None:
        after = lines[start[1]:]
        end = next((t for t, s in after if _QUANT_DONE.match(s)), None) \
            or next((t for t, s in after if _SERIALIZED.match(s)), None)
        if end is not None:
            return end - start[0], "Hessians and quantization, from the log's timestamps"
    if reported is not None:
        return reported, "Hessian collection as the log reports it (no timestamps: quantization time not shown)"
    return None, ""
