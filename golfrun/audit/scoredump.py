"""The per-target score dump (`SCORE_DUMP_PATH`, train_gpt.py `ScoreDump`): entry i scores token i+1
of the validation stream; `nll` (nats, NaN where never scored), `bytes`, `count` (times scored) and
`step` (the TTT scoring event). From it: every target scored exactly once, the whole split covered,
the reported score recomputed. A dump that also carries `prob_sum` (the per-position sum of the
scored distribution) is checked for normalisation; without it that check is "not shown".
"""

from __future__ import annotations

import math
from pathlib import Path

from golfrun.audit.rules import Finding
from golfrun.errors import TrainerResultError

DUMP_KEYS = ("nll", "bytes", "count")
REL_TOLERANCE = 1e-9  # the recomputed bpb against the reported one (the log prints 8 decimals: see below)


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
    if prob_sum is None:
        out.append(Finding("normalised", None, None, 1.0, "sum p",
                           "the dump carries no prob_sum; normalisation is proven by the trainer's legality tests", seed))
    else:
        worst = float(np.abs(prob_sum[scored] - 1.0).max()) if scored.any() else 0.0
        out.append(Finding("normalised", worst <= 1e-6, worst, 1e-6, "max |sum p − 1|", path.name, seed))
    return out
