"""The challenge's limits (shared/reference/submission-format.md §1) and one pure check per rule.

A `Finding` is an observed value against its limit: ok True/False, or None when the run does not
show the figure (never a pass by default). Stdlib only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ARTIFACT_CAP_BYTES = 16_000_000  # decimal bytes, code + compressed model
TRAIN_CAP_S = 600.0  # training, GPTQ calibration and quantization included
EVAL_CAP_S = 600.0
MIN_SEEDS = 3
# Full validation split, in scored targets (tokens − 1), by data variant (submission-format.md §4,
# the logs' `val_tokens:` lines). A variant not listed is checked against a count given by the caller.
FULL_VAL_TARGETS = {"sp1024": 62_021_632, "sp4096": 47_851_520, "sp8192": 40_540_160}

# The names records use in submission.json's compliance block, per check.
COMPLIANCE_KEYS = {
    "artifact_bytes": "artifact_under_16mb",
    "train_time": "train_under_600s",
    "eval_time": "eval_under_600s",
    "seeds": "three_seeds",
    "full_validation": "full_validation_split",
    "scored_once": "score_every_target_once",
    "dump_matches_score": "score_recomputed_from_dump",
    "normalised": "normalized_distribution",
    "causality": "no_val_token_used_before_scored",
}


@dataclass(frozen=True)
class Finding:
    check: str  # a COMPLIANCE_KEYS key
    ok: bool | None  # None: the run does not show this figure
    observed: float | int | None
    limit: float | int | None
    unit: str
    detail: str = ""
    seed: int | None = None

    def describe(self) -> str:
        verdict = {True: "ok", False: "VIOLATED", None: "not shown"}[self.ok]
        who = f"seed {self.seed}: " if self.seed is not None else ""
        obs, lim = _number(self.observed), _number(self.limit)
        return f"{who}{self.check}: {verdict} ({obs} {self.unit} against {lim}){' — ' + self.detail if self.detail else ''}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(x: float | int | None) -> str:
    if x is None:
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    if 0 < abs(x) < 1e-3:  # a tolerance in nats (the causality check's 1e-09) is not 0
        return f"{x:.3g}"
    return f"{x:,.3f}".rstrip("0").rstrip(".")


def artifact_bytes(code_bytes: int | None, model_bytes: int | None, reported_bytes: int | None = None,
                   cap: int = ARTIFACT_CAP_BYTES, seed: int | None = None) -> Finding:
    """Code bytes as shipped (the bytes of the submitted train_gpt.py, however it is packed) plus the
    compressed model. The total the trainer printed must fit too: the larger of the two counts is
    the observed value (a trainer that counts a minified code size it does not ship is caught)."""
    shipped = code_bytes + model_bytes if code_bytes is not None and model_bytes is not None else None
    counts = [x for x in (shipped, reported_bytes) if x is not None]
    if not counts:
        return Finding("artifact_bytes", None, None, cap, "bytes", "no artifact size shown", seed)
    parts = []
    if shipped is not None:
        parts.append(f"shipped: code {code_bytes:,} + model {model_bytes:,} = {shipped:,}")
    if reported_bytes is not None:
        parts.append(f"the trainer reports {reported_bytes:,}")
    total = max(counts)
    return Finding("artifact_bytes", total <= cap, total, cap, "bytes", "; ".join(parts), seed)


def train_time(train_s: float | None, gptq_s: float | None, cap: float = TRAIN_CAP_S,
               seed: int | None = None, how: str = "") -> Finding:
    """Training plus the GPTQ/Hessian work that reads training data after the loop stopped."""
    if train_s is None:
        return Finding("train_time", None, None, cap, "s", "no training time in the run", seed)
    total = train_s + (gptq_s or 0.0)
    detail = how or (f"train {train_s:.1f} s + GPTQ {gptq_s:.1f} s" if gptq_s is not None
                     else f"train {train_s:.1f} s (no GPTQ time shown)")
    return Finding("train_time", total <= cap, round(total, 3), cap, "s", detail, seed)


def eval_time(eval_s: float | None, cap: float = EVAL_CAP_S, seed: int | None = None, how: str = "") -> Finding:
    ok = None if eval_s is None else eval_s <= cap
    return Finding("eval_time", ok, None if eval_s is None else round(eval_s, 3), cap, "s", how, seed)


def seeds(n: int, minimum: int = MIN_SEEDS, detail: str = "") -> Finding:
    return Finding("seeds", n >= minimum, n, minimum, "seeds", detail)


def full_validation(scored: int | None, full: int | None, seed: int | None = None, how: str = "") -> Finding:
    if scored is None or full is None:
        why = "the run does not say how many validation tokens it scored" if scored is None else \
            "the full split's size is unknown for this data variant (pass it with --val-targets)"
        return Finding("full_validation", None, scored, full, "targets", why, seed)
    return Finding("full_validation", scored == full, scored, full, "targets", how, seed)


def compliance_block(findings: list[Finding]) -> dict[str, bool]:
    """submission.json's `compliance`: per rule, true only when every finding of it is ok
    (a rule the run does not show is left out, not claimed)."""
    out: dict[str, bool] = {}
    for key, name in COMPLIANCE_KEYS.items():
        mine = [f for f in findings if f.check == key]
        if mine and all(f.ok is not None for f in mine):
            out[name] = all(bool(f.ok) for f in mine)
        elif any(f.ok is False for f in mine):
            out[name] = False
    return out
