"""The per-target score dump (`SCORE_DUMP_PATH`, train_gpt.py `ScoreDump`): entry i scores token i+1
of the validation stream; `nll` (nats, NaN where never scored), `prob_sum` (the sum over the vocabulary
of the probabilities of the distribution the target was scored under, NaN where never scored), `bytes`,
`count` (times scored) and `step` (the TTT scoring event). `nll` and `prob_sum` are sums over a target's
scorings: one scored k times holds about k in `prob_sum`, so it is divided by `count` here (and the
target is flagged by `scored_once` anyway). From it: every target scored exactly once, the whole split
covered, the reported score recomputed, every scored distribution normalised (|sum p − 1| within
PROB_SUM_TOLERANCE). A dump without `prob_sum` (another trainer, or golfrun's before it wrote one) shows
no normalisation: that check is "not shown".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from golfrun.audit.rules import Finding
from golfrun.errors import TrainerResultError

if TYPE_CHECKING:
    import numpy as np

DUMP_KEYS = ("nll", "bytes", "count")
REL_TOLERANCE = 1e-9  # the recomputed bpb against the reported one (the log prints 8 decimals: see below)
# |sum p − 1| per scored target. The trainer sums exp(log_softmax) of fp32 logits (bf16 matmuls are cast
# up before the softcap), so only fp32 rounding is left: on the CPU 2.1e-6 at worst over 4,096 rows of
# 8,192 entries (softcapped logits of any spread), 3e-7 in the tiny CPU runs of the tests (V=96, with
# and without the n-gram corrector; the V=512 trainer runs stay under 1e-5, asserted); a GPU's
# approximate exp and other reduction order add a few ulp per entry. 1e-4 leaves 50x over that, while a
# real leak still shows: a bonus of b nats on a token of probability p adds p(e^b − 1), e.g. 1e-3 nats on
# p = 0.1 is 1e-4.
PROB_SUM_TOLERANCE = 1e-4


def is_score_dump(path: Path) -> bool:
    import numpy as np

    try:
        with np.load(path) as d:
            return all(k in d.files for k in DUMP_KEYS)
    except (OSError, ValueError):
        return False


def audit_dump(path: Path, reported_bpb: float | None, full_targets: int | None,
               seed: int | None = None) -> list[Finding]:
    import numpy as np

    try:
        with np.load(path) as d:
            nll, nbytes, count = (np.asarray(d[k]) for k in DUMP_KEYS)
            prob_sum = np.asarray(d["prob_sum"]) if "prob_sum" in d.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise TrainerResultError(f"{path}: not a score dump ({exc})") from exc
    n = int(count.size)
    twice, never = int((count > 1).sum()), int((count == 0).sum())
    detail = f"{path.name}: {n:,} targets, {twice:,} scored more than once, {never:,} never scored"
    out = [Finding("scored_once", twice == 0 and never == 0, twice + never, 0, "targets off", detail, seed)]
    if full_targets is not None:
        out.append(Finding("full_validation", n == full_targets and never == 0, n - never, full_targets, "targets",
                           f"{path.name}: targets scored, from the dump", seed))
    scored = count > 0
    if reported_bpb is not None and scored.any():
        bpb = float(np.nansum(nll[scored]) / (math.log(2) * float(nbytes[scored].sum())))
        # the log prints 8 decimals: agreement to that precision is all a log-read score can show
        ok = abs(bpb - reported_bpb) <= max(REL_TOLERANCE * reported_bpb, 5e-9)
        out.append(Finding("dump_matches_score", ok, round(bpb, 10), reported_bpb, "bpb",
                           f"{path.name}: bpb recomputed from the dump against the reported score", seed))
    out.append(_normalised(path, prob_sum, count, seed))
    return out


def _normalised(path: Path, prob_sum: "np.ndarray | None", count: "np.ndarray", seed: int | None) -> Finding:
    import numpy as np

    unit, scored = "max |sum p − 1|", np.flatnonzero(count > 0)
    if prob_sum is None or scored.size == 0:
        why = "carries no prob_sum (its trainer does not write one)" if prob_sum is None else "scores nothing"
        return Finding("normalised", None, None, PROB_SUM_TOLERANCE, unit, f"{path.name} {why}", seed)
    # a sum over k scorings: its mean is compared; NaN (a non-finite score) counts as the worst deviation
    dev = np.abs(prob_sum[scored] / count[scored] - 1.0)
    dev = np.where(np.isnan(dev), np.inf, dev)
    i = int(np.argmax(dev))
    worst, off, at = float(dev[i]), int((dev > PROB_SUM_TOLERANCE).sum()), int(scored[i])
    return Finding("normalised", worst <= PROB_SUM_TOLERANCE, worst, PROB_SUM_TOLERANCE, unit,
                   f"{path.name}: worst {worst:.2e} at target {at:,} (sum p {float(prob_sum[at]):.8g} over "
                   f"{int(count[at])} scoring(s)); {off:,} of {scored.size:,} targets outside ±{PROB_SUM_TOLERANCE:g}",
                   seed)
