"""The statistics of the gates: seed statistics, the competition's record test, the ablation fork.

Record test (the competition's rule: beat the record by at least 0.005 nats at p < 0.01): a
one-sided Welch t-test on per-seed val_loss,

    H0: mean(ref) − mean(var) <= margin      H1: mean(ref) − mean(var) > margin
    t  = (mean_ref − mean_var − margin) / sqrt(s_v²/n_v + s_r²/n_r)          (s²: sample variances, ddof 1)
    df = (s_v²/n_v + s_r²/n_r)² / ((s_v²/n_v)²/(n_v − 1) + (s_r²/n_r)²/(n_r − 1))   (Welch–Satterthwaite)
    p  = P(T_df > t)                                                           (upper tail)

and passed iff p < alpha. It is the same test as
`scipy.stats.ttest_ind(reference − margin, variant, equal_var=False, alternative="greater")`.
When the test is undefined — fewer than 2 values on a side, a non-finite value, or zero variance on
both sides — the result has t, df, p = None, passed = False and a `note` saying why: an undefined
test never passes.

Ablation: deltas are `variant − baseline` in BPB (negative = better). The best (most negative)
delta decides: ≤ promote → PROMOTE, ≤ hold → HOLD, else KILL.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Slack for comparing a delta with a threshold: deltas of values printed with 8 decimals carry
# float noise (1.07016564 − 1.07216564 = −0.0020000000000000018); a delta equal to the threshold
# at printed precision counts as reaching it.
THRESHOLD_EPS = 1e-12


@dataclass(frozen=True)
class SeedStats:
    mean: float | None  # None when there are no values
    std: float | None  # sample standard deviation (ddof = 1); None when n < 2
    n: int

    def __iter__(self) -> Iterator[Any]:  # `mean, std, n = seed_stats(xs)`
        return iter((self.mean, self.std, self.n))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_stats(values: Sequence[float]) -> SeedStats:
    """Mean and sample standard deviation (ddof = 1) of per-seed values."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return SeedStats(None, None, 0)
    mean = math.fsum(xs) / n
    if n < 2:
        return SeedStats(mean, None, n)
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    return SeedStats(mean, math.sqrt(var), n)


@dataclass(frozen=True)
class WelchResult:
    t: float | None
    df: float | None
    p: float | None
    mean_diff: float | None  # mean(reference) − mean(variant): the improvement in nats (positive = better)
    margin: float
    alpha: float
    passed: bool
    n_variant: int
    n_reference: int
    mean_variant: float | None = None
    mean_reference: float | None = None
    note: str = ""  # why the test is undefined, when it is

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def welch_record_test(
    variant_losses: Sequence[float],
    reference_losses: Sequence[float],
    margin_nats: float = 0.005,
    alpha: float = 0.01,
) -> WelchResult:
    """Is the variant's mean val_loss lower than the reference's by more than `margin_nats`, at
    p < alpha? One-sided Welch t-test (see the module docstring)."""
    from scipy import stats as sps

    v = [float(x) for x in variant_losses]
    r = [float(x) for x in reference_losses]
    nv, nr = len(v), len(r)
    sv, sr = seed_stats(v), seed_stats(r)
    mean_diff = None if sv.mean is None or sr.mean is None else sr.mean - sv.mean

    def undefined(note: str) -> WelchResult:
        return WelchResult(None, None, None, mean_diff, margin_nats, alpha, False, nv, nr, sv.mean, sr.mean, note)

    if not all(math.isfinite(x) for x in v + r):
        return undefined("a loss is not finite (NaN or inf): the test is undefined")
    if nv < 2 or nr < 2:
        return undefined(f"the Welch test needs at least 2 values on each side (variant {nv}, reference {nr})")
    assert sv.std is not None and sr.std is not None and mean_diff is not None
    a, b = sv.std**2 / nv, sr.std**2 / nr
    se2 = a + b
    if se2 == 0.0:
        return undefined("zero variance on both sides (identical values per side): the t-test is undefined; "
                         "were the seeds really different?")
    t = (mean_diff - margin_nats) / math.sqrt(se2)
    df = se2**2 / (a**2 / (nv - 1) + b**2 / (nr - 1))
    p = float(sps.t.sf(t, df))
    return WelchResult(t, df, p, mean_diff, margin_nats, alpha, p < alpha, nv, nr, sv.mean, sr.mean)


class AblationOutcome(str, enum.Enum):
    PROMOTE = "PROMOTE"
    HOLD = "HOLD"
    KILL = "KILL"


@dataclass(frozen=True)
class AblationDecision:
    outcome: AblationOutcome
    best: str | None  # the variant with the lowest delta_bpb (ties: the first name in sorted order)
    best_delta: float | None
    reason: str

    def __iter__(self) -> Iterator[Any]:  # `outcome, best, best_delta = ablation_decision(...)`
        return iter((self.outcome, self.best, self.best_delta))

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "best": self.best, "best_delta": self.best_delta, "reason": self.reason}


def classify_delta(delta: float, promote: float, hold: float) -> AblationOutcome:
    """One delta against the thresholds (NaN is KILL)."""
    if math.isnan(delta):
        return AblationOutcome.KILL
    if delta <= promote + THRESHOLD_EPS:
        return AblationOutcome.PROMOTE
    if delta <= hold + THRESHOLD_EPS:
        return AblationOutcome.HOLD
    return AblationOutcome.KILL


def ablation_decision(deltas: Mapping[str, float], promote: float, hold: float) -> AblationDecision:
    """PROMOTE / HOLD / KILL from the best (lowest) `delta_bpb = variant − baseline`.

    `promote <= hold` (both usually negative: −0.002 and −0.001). A non-finite delta (a variant
    whose score is NaN) can never be best. Raises ValueError on no variants or bad thresholds.
    """
    if not deltas:
        raise ValueError("ablation_decision: no variants to decide on")
    if not promote <= hold:
        raise ValueError(f"ablation_decision: promote threshold {promote} must be <= hold threshold {hold}")
    finite = {k: float(d) for k, d in deltas.items() if d is not None and math.isfinite(float(d))}
    if not finite:
        return AblationDecision(AblationOutcome.KILL, None, None,
                                f"no variant has a finite delta_bpb ({', '.join(sorted(deltas))})")
    best = min(sorted(finite), key=lambda k: finite[k])
    delta = finite[best]
    outcome = classify_delta(delta, promote, hold)
    if outcome is AblationOutcome.PROMOTE:
        reason = f"{best}: delta_bpb {delta:+.8f} <= promote threshold {promote:g}"
    elif outcome is AblationOutcome.HOLD:
        reason = f"{best}: delta_bpb {delta:+.8f} between promote {promote:g} and hold {hold:g}: a person decides"
    else:
        reason = f"best {best}: delta_bpb {delta:+.8f} > hold threshold {hold:g}: no variant improves enough"
    return AblationDecision(outcome, best, delta, reason)
