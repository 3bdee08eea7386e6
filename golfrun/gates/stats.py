"""The statistics of the gates: seed statistics, the competition's record test, the ablation fork.

Record test (the competition's rule: beat the record by at least 0.005 nats at p < 0.01): a
one-sided Welch t-test on per-seed val_loss,

    H0: mean(ref) − mean(var) <= margin      H1: mean(ref) − mean(var) > margin
    t  = (mean_ref − mean_var − margin) / sqrt(s_v²/n_v + s_r²/n_r)          (s²: sample variances, ddof 1)
    df = (s_v²/n_v + s_r²/n_r)² / ((s_v²/n_v)²/(n_v − 1) + (s_r²/n_r)²/(n_r − 1))   (Welch–Satterthwaite)
    p  = P(T_df > t)                                                           (upper tail)

and passed iff p < alpha. It is the same test as
`scipy.stats.ttest_ind(reference − margin, variant, equal_var=False, alternative="greater")`.
`welch_one_sided` is the one implementation (gate-b and `golfrun package` call it). When the test is
undefined — fewer than 2 values on a side, a non-finite value, or no spread on both sides (a side
whose sample std is below REL_SPREAD_FLOOR = 1e-9 of its magnitude counts as constant: that spread is
float rounding) — the result has t, df, p = None, defined = False, passed = False and a `note`
saying why: an undefined test never passes.

Target test (modded-nanogpt's rule): `one_sample_below(sample, target, alpha)`, H1: mean < target,
t = (target − mean)/(s/√n), df = n − 1, with the same undefined cases.

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


# A sample whose standard deviation is below this fraction of its magnitude is constant: values
# printed with 8 significant decimals cannot carry a spread that small, so what is left is float
# rounding (`[2.76]*3` has a rounding variance of ~5e-16 and would "pass" at p = 4e-29).
REL_SPREAD_FLOOR = 1e-9


def _spread(values: Sequence[float]) -> float:
    """Sample variance, or exactly 0.0 when the spread is float noise relative to the values."""
    s = seed_stats(values)
    assert s.std is not None and s.mean is not None
    scale = max(abs(x) for x in values)
    return 0.0 if s.std <= REL_SPREAD_FLOOR * max(scale, 1e-300) else s.std**2


def _undefined_reason(samples: Mapping[str, Sequence[float]]) -> str:
    """Why a t-test of these named samples is undefined ("" when it is not, spread aside)."""
    if not all(math.isfinite(x) for xs in samples.values() for x in xs):
        return "a value is not finite (NaN or inf): the test is undefined"
    if min(len(xs) for xs in samples.values()) < 2:
        sizes = ", ".join(f"{name} {len(xs)}" for name, xs in samples.items())
        side = "on each side" if len(samples) > 1 else "in the sample"
        return f"the t-test needs at least 2 values {side} ({sizes})"
    return ""


class _TestOutcome:
    """What a test result says about itself: defined (it has a p-value) and why not, in JSON."""

    p: float | None
    note: str

    @property
    def defined(self) -> bool:
        return self.p is not None

    @property
    def reason(self) -> str:
        return self.note

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "defined": self.defined}  # type: ignore[call-overload]


@dataclass(frozen=True)
class WelchResult(_TestOutcome):
    """A one-sided t-test. `t`, `df`, `p` are None when the test is undefined (`defined` False,
    `note` says why); an undefined test never passes."""

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


def welch_one_sided(sample: Sequence[float], reference: Sequence[float], margin: float = 0.0,
                    alpha: float = 0.01) -> WelchResult:
    """Is mean(sample) below mean(reference) by more than `margin`, at p < alpha? One-sided Welch
    t-test (module docstring). Undefined — t, df, p None and a reason — for fewer than 2 values on
    a side, a non-finite value, or no spread on either side (a constant side is float noise, see
    REL_SPREAD_FLOOR); the one Welch test of golfrun (gate-b and `golfrun package` call it)."""
    from scipy import stats as sps

    v = [float(x) for x in sample]
    r = [float(x) for x in reference]
    nv, nr = len(v), len(r)
    sv, sr = seed_stats(v), seed_stats(r)
    finite = all(math.isfinite(x) for x in v + r)
    mean_diff = None if sv.mean is None or sr.mean is None or not finite else sr.mean - sv.mean

    def undefined(note: str) -> WelchResult:
        mv = sv.mean if finite else None
        mr = sr.mean if finite else None
        return WelchResult(None, None, None, mean_diff, margin, alpha, False, nv, nr, mv, mr, note)

    why = _undefined_reason({"variant": v, "reference": r})
    if why:
        return undefined(why)
    assert mean_diff is not None
    a, b = _spread(v) / nv, _spread(r) / nr
    se2 = a + b
    if se2 == 0.0:
        return undefined("zero variance on both sides (identical values up to float rounding): the t-test is "
                         "undefined; were the seeds really different?")
    t = (mean_diff - margin) / math.sqrt(se2)
    df = se2**2 / (a**2 / (nv - 1) + b**2 / (nr - 1))
    p = float(sps.t.sf(t, df))
    return WelchResult(t, df, p, mean_diff, margin, alpha, p < alpha, nv, nr, sv.mean, sr.mean)


def welch_record_test(variant_losses: Sequence[float], reference_losses: Sequence[float],
                      margin_nats: float = 0.005, alpha: float = 0.01) -> WelchResult:
    """The competition's record rule: `welch_one_sided` with its margin and alpha."""
    return welch_one_sided(variant_losses, reference_losses, margin_nats, alpha)


@dataclass(frozen=True)
class OneSampleResult(_TestOutcome):
    """One-sample t-test that the mean is below `target` (H1: mean < target)."""

    t: float | None
    df: float | None
    p: float | None
    mean: float | None
    target: float
    alpha: float
    passed: bool
    n: int
    note: str = ""


def one_sample_below(sample: Sequence[float], target: float, alpha: float = 0.01) -> OneSampleResult:
    """t = (target − mean) / (s/√n), df = n − 1, p = P(T_df > t); passed iff p < alpha. Undefined
    (never passes) for n < 2, a non-finite value or target, or no spread."""
    from scipy import stats as sps

    v = [float(x) for x in sample]
    s = seed_stats(v)
    finite = all(math.isfinite(x) for x in v) and math.isfinite(target)
    mean = s.mean if finite else None

    why = _undefined_reason({"sample": v}) or ("" if finite else "the target is not finite: the test is undefined")
    if not why and _spread(v) == 0.0:
        why = "no spread (identical values up to float rounding): the t-test is undefined"
    if why:
        return OneSampleResult(None, None, None, mean, target, alpha, False, len(v), why)
    assert s.mean is not None
    t = (target - s.mean) / math.sqrt(_spread(v) / len(v))
    df = float(len(v) - 1)
    p = float(sps.t.sf(t, df))
    return OneSampleResult(t, df, p, s.mean, target, alpha, p < alpha, len(v))


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
