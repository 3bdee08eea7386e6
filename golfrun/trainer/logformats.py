"""The final-score formats of published record logs, as a table (one row per format).

A record script ends by printing one or more evaluation lines, `<label> val_loss:X val_bpb:Y [...]`.
Which of them is the submission's score differs from script to script, so each known label is a
row of `SCORE_FORMATS`: its name (what `TrainerResult.log_format` reports), the label it matches, its
role, and one example line (tests/trainer_results/formats/<name>.log holds a fixture log per row).

- role "score": a line the script reports as its result. The score that counts is the LAST score
  line of the log (a script prints its roundtrip score, then the sliding-window one, then TTT).
- role "diagnostic": a figure printed on the way that is never the submission's score.

A score-like line whose label no row knows makes the log unreadable (the caller raises
TrainerResultError quoting it): guessing would fall back to an earlier, wrong, score.
Adding a format = one row here + its fixture log + its expected figures in the fixtures' table.
Stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
# Console captures put "<epoch seconds>.<ms> " in front of each line (trainer-facts §0).
_EPOCH_PREFIX = re.compile(r"^\d{9,11}(?:\.\d+)?\s")
# "<head> val_loss:X val_bpb:Y<tail>"; ":" or "=" (ttt_sliding:done prints val_loss=…)
_SCORE_LINE = re.compile(rf"^(?P<head>\S.*?)\s+val_loss[:=](?P<loss>{NUM})\s+val_bpb[:=](?P<bpb>{NUM})(?P<tail>.*)$")
_EVAL_TIME = re.compile(rf"\beval_time:({NUM})ms\b")

ROLES = ("score", "diagnostic")


@dataclass(frozen=True)
class ScoreFormat:
    name: str
    label: re.Pattern[str]  # full match on the line's label
    role: str  # "score" | "diagnostic"
    example: str  # one line as published (issue text / trainer-facts §8)


@dataclass(frozen=True)
class ScoreLine:
    label: str
    val_loss: float
    val_bpb: float
    eval_time_ms: float | None
    format: ScoreFormat | None  # None: a score-like line of no known format
    text: str  # the line as read (without the epoch prefix)


def _row(name: str, label: str, role: str, example: str) -> ScoreFormat:
    return ScoreFormat(name, re.compile(label), role, example)


# First matching row wins, so specific labels come before the catch-all "diagnostic …".
SCORE_FORMATS: tuple[ScoreFormat, ...] = (
    _row("record-ttt-phased", r"quantized_ttt_phased", "score",
         "quantized_ttt_phased val_loss:2.76951521 val_bpb:1.07216564 eval_time:500104ms"),
    _row("record-ttt-lora", r"quantized_ttt_lora", "score",
         "quantized_ttt_lora val_loss:2.77000000 val_bpb:1.07300000 eval_time:480000ms"),
    _row("quantized-ttt", r"quantized_ttt", "score",
         "quantized_ttt val_loss:2.78010000 val_bpb:1.07630000 eval_time:410000ms"),
    _row("quantized-sliding-window", r"quantized_sliding_window", "score",
         "quantized_sliding_window val_loss:2.79010000 val_bpb:1.08020000 eval_time:95000ms"),
    # the record (and golfrun's trainer) without TTT: the quantized model's plain eval is the score
    _row("record-quantized", r"diagnostic quantized", "score",
         "diagnostic quantized val_loss:2.79852399 val_bpb:1.08336093 eval_time:55851ms"),
    _row("int8-ttt-lora", r"final_int8_ttt_lora", "score",
         "final_int8_ttt_lora val_loss:2.0142 val_bpb:1.1929 eval_time:60184ms"),
    _row("ttt-lora", r"final_ttt_lora", "score", "final_ttt_lora val_loss:2.0150 val_bpb:1.1934 eval_time:61002ms"),
    _row("legal-ttt", r"legal_ttt(?:_exact)?", "score", "legal_ttt_exact val_loss:1.88976776 val_bpb:1.11922988"),
    _row("sliding-window-eval", r"final_sliding_window_eval(?:_exact)?", "score",
         "final_sliding_window_eval_exact stride:64 val_loss:1.96369923 val_bpb:1.16301431"),
    _row("sliding-window", r"final_sliding_window(?:_exact)?", "score",
         "final_sliding_window_exact val_loss:1.95627871 val_bpb:1.15861696"),
    _row("int6-sliding-window", r"final_int6_sliding_window(?:_exact)?", "score",
         "final_int6_sliding_window_exact val_loss:1.89430000 val_bpb:1.12190000"),
    # a second sliding-window pass at stride 64 (or the same one repeated under this name), printed last
    _row("int6-sliding-window-s64", r"final_int6_sliding_window_s64(?:_exact)?", "score",
         "final_int6_sliding_window_s64_exact val_loss:1.89120000 val_bpb:1.12010000"),
    _row("sliding", r"final_sliding", "score",
         "final_sliding val_loss:2.9869 val_bpb:1.1565 (stride=16, T=0.90) eval_time:429311ms"),
    _row("baseline-int8-zlib", r"final_int8_zlib_roundtrip(?:_exact)?", "score",
         "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570"),
    _row("int7-zlib", r"final_INT7_zlib_roundtrip(?:_exact)?", "score",
         "final_INT7_zlib_roundtrip val_loss:2.0784 val_bpb:1.2353"),
    _row("xnor", r"final_xnor_roundtrip(?:_exact)?", "score", "final_xnor_roundtrip val_loss:2.3121 val_bpb:1.3694"),
    # printed before the sliding-window score of the int6 scripts; never the submission's score
    _row("int6-roundtrip", r"final_int6_roundtrip(?:_exact)?", "diagnostic",
         "final_int6_roundtrip_exact val_loss:1.93330000 val_bpb:1.14500000"),
    _row("temped", r"final_temped\b.*", "diagnostic", "final_temped T=0.90 val_loss:2.9901 val_bpb:1.1577"),
    _row("ttt-sliding-done", r"ttt_sliding:done", "diagnostic", "ttt_sliding:done val_loss=1.8899 val_bpb=1.1193"),
    _row("diagnostic", r"(?i:diagnostic)\b.*", "diagnostic",
         "diagnostic pre-quantization post-ema val_loss:2.76990528 val_bpb:1.07228209 eval_time:6424ms"),
)

# Lines that show an evaluation began whose score must follow: without it the run did not finish (a
# crash in TTT must not fall back to the quantized diagnostic as if that were the score).
EVAL_STARTED = ("ttt_lora:warming up compile", "beginning TTT eval timer", "ttt_phased:", "ttt_lora:DEBUG BYPASS")


def strip_prefix(line: str) -> str:
    """A log line without its trailing newline and without a console capture's epoch prefix."""
    line = line.rstrip("\r\n")
    return _EPOCH_PREFIX.sub("", line, count=1)


def find_format(label: str) -> ScoreFormat | None:
    for fmt in SCORE_FORMATS:
        if fmt.label.fullmatch(label):
            return fmt
    return None


def is_score_label(label: str) -> bool:
    """True when a line with this label is a reported score (not a diagnostic, not unknown)."""
    fmt = find_format(label)
    return fmt is not None and fmt.role == "score"


def match_score(line: str) -> ScoreLine | None:
    """A score-like line (prefix already stripped) read as label and figures; None if it is not one.

    The label is the head's words up to the first `key:value` token after the first word
    (`final_sliding_window_eval_exact stride:64` → `final_sliding_window_eval_exact`)."""
    m = _SCORE_LINE.match(line)
    if m is None:
        return None
    words = m.group("head").split()
    label_words = words[:1] + [w for w in _until_key_value(words[1:])]
    label = " ".join(label_words)
    timed = _EVAL_TIME.search(m.group("tail")) or _EVAL_TIME.search(m.group("head"))
    return ScoreLine(label, float(m.group("loss")), float(m.group("bpb")),
                     None if timed is None else float(timed.group(1)), find_format(label), line)


def _until_key_value(words: list[str]) -> list[str]:
    out = []
    for w in words:
        if ":" in w or "=" in w or w.startswith("("):
            break
        out.append(w)
    return out


# --------------------------------------------------------------------------- artifact naming

# "Serialized model int6+zstd-22: N bytes", "… mixed_int5_int6+brotli: …", "… quantized+brotli: …"
ARTIFACT_LINE = re.compile(r"^(Serialized model|Total submission size) ([A-Za-z][\w]*)\+([\w\-]+): (\d+) bytes")


def artifact_name(scheme: str) -> str:
    """The file a quantization scheme is written to: the record's `quantized` is int6
    (`final_model.int6.ptz`), the baseline's `int8` → `final_model.int8.ptz`, any other scheme by its
    own name (`mixed_int5_int6` → `final_model.mixed_int5_int6.ptz`)."""
    return f"final_model.{'int6' if scheme == 'quantized' else scheme}.ptz"
