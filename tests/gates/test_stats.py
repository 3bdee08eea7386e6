"""The gates' statistics against values computed by hand, and cross-checked with scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from golfrun.gates.stats import (
    AblationOutcome,
    ablation_decision,
    classify_delta,
    one_sample_below,
    seed_stats,
    welch_one_sided,
    welch_record_test,
)

# ----------------------------------------------------------------------------------------------
# seed_stats


def test_seed_stats_by_hand() -> None:
    # [1, 2, 3, 4]: mean 10/4 = 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; / (n − 1) = 5/3
    mean, std, n = seed_stats([1, 2, 3, 4])
    assert (mean, n) == (2.5, 4)
    assert std == pytest.approx(math.sqrt(5 / 3), rel=1e-15)


def test_seed_stats_of_the_published_record() -> None:
    # trainer-facts §9.3: val_bpb mean 1.07280628, sample std 0.00056869 (population 0.00046433);
    # val_loss mean 2.77117005, sample std 0.00146898.
    bpb = seed_stats([1.07216564, 1.07300174, 1.07325147])
    assert bpb.mean == pytest.approx(1.07280628, abs=5e-9)
    assert bpb.std == pytest.approx(0.00056869, abs=5e-9)
    assert float(np.std([1.07216564, 1.07300174, 1.07325147])) == pytest.approx(0.00046433, abs=5e-9)
    loss = seed_stats([2.76951521, 2.77167493, 2.77232000])
    assert loss.mean == pytest.approx(2.77117005, abs=5e-9)
    assert loss.std == pytest.approx(0.00146898, abs=5e-9)


def test_seed_stats_small_samples() -> None:
    assert tuple(seed_stats([])) == (None, None, 0)
    assert tuple(seed_stats([1.5])) == (1.5, None, 1)
    assert seed_stats([2.0, 2.0]).std == 0.0
    assert seed_stats([1.0, 2.0]).to_dict() == {"mean": 1.5, "std": math.sqrt(0.5), "n": 2}


# ----------------------------------------------------------------------------------------------
# welch_record_test


def test_welch_by_hand_df_two() -> None:
    # variant [1, 3]: mean 2, s² = (1 + 1)/1 = 2 → s²/n = 1.  reference [5, 7]: mean 6, s²/n = 1.
    # t = (6 − 2 − 1) / sqrt(1 + 1) = 3/√2 = 2.12132034
    # df = (1 + 1)² / (1²/1 + 1²/1) = 2
    # with 2 degrees of freedom the t tail has a closed form: P(T > t) = 1/2 − t / (2·sqrt(2 + t²))
    #   = 0.5 − 2.12132034 / (2 · 2.54950976) = 0.5 − 0.41602515 = 0.08397485
    r = welch_record_test([1.0, 3.0], [5.0, 7.0], margin_nats=1.0, alpha=0.1)
    assert r.t == pytest.approx(3 / math.sqrt(2), rel=1e-12)
    assert r.df == pytest.approx(2.0, rel=1e-12)
    t = 3 / math.sqrt(2)
    assert r.p == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), rel=1e-9)
    assert r.p == pytest.approx(0.08397485, abs=1e-8)
    assert r.mean_diff == 4.0 and (r.mean_variant, r.mean_reference) == (2.0, 6.0)
    assert r.passed is True  # 0.084 < 0.1
    assert welch_record_test([1.0, 3.0], [5.0, 7.0], margin_nats=1.0, alpha=0.05).passed is False


def test_welch_by_hand_one_side_constant_df_one() -> None:
    # variant [2, 2]: s² = 0.  reference [5, 7]: s²/n = 1.  margin 1:
    # t = (6 − 2 − 1) / sqrt(0 + 1) = 3;  df = 1² / (0 + 1²/1) = 1 (Cauchy):
    # P(T > 3) = 1/2 − atan(3)/π = 0.5 − 0.39758362 = 0.10241638
    r = welch_record_test([2.0, 2.0], [5.0, 7.0], margin_nats=1.0, alpha=0.2)
    assert r.t == pytest.approx(3.0, rel=1e-12)
    assert r.df == pytest.approx(1.0, rel=1e-12)
    assert r.p == pytest.approx(0.5 - math.atan(3) / math.pi, rel=1e-9)
    assert r.p == pytest.approx(0.10241638, abs=1e-8)
    assert r.passed is True


def test_welch_by_hand_unequal_sizes() -> None:
    # variant [1, 2, 3]: mean 2, s² = (1 + 0 + 1)/2 = 1, s²/n = 1/3.
    # reference [4, 6]: mean 5, s² = (1 + 1)/1 = 2, s²/n = 1.   margin 0.5:
    # t = (5 − 2 − 0.5) / sqrt(1/3 + 1) = 2.5 / sqrt(4/3) = 2.5·√3/2 = 2.16506351
    # df = (4/3)² / ((1/3)²/2 + 1²/1) = (16/9) / (19/18) = 32/19 = 1.68421053
    r = welch_record_test([1.0, 2.0, 3.0], [4.0, 6.0], margin_nats=0.5, alpha=0.01)
    assert r.t == pytest.approx(2.5 * math.sqrt(3) / 2, rel=1e-12)
    assert r.df == pytest.approx(32 / 19, rel=1e-12)
    assert r.p == pytest.approx(float(sps.t.sf(2.5 * math.sqrt(3) / 2, 32 / 19)), rel=1e-12)
    assert (r.n_variant, r.n_reference, r.margin, r.alpha) == (3, 2, 0.5, 0.01)
    assert r.passed is False


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margin", [0.0, 0.005, 0.02])
def test_welch_matches_scipy(seed: int, margin: float) -> None:
    rng = np.random.default_rng(seed)
    n_v, n_r = int(rng.integers(2, 7)), int(rng.integers(2, 7))
    variant = 2.76 + rng.normal(0, 0.002 + 0.004 * rng.random(), n_v)
    reference = 2.771 + rng.normal(0, 0.002 + 0.004 * rng.random(), n_r)
    ours = welch_record_test(variant.tolist(), reference.tolist(), margin_nats=margin, alpha=0.01)
    # H1: mean(ref) − mean(var) > margin  ⇔  mean(ref − margin) > mean(var)
    theirs = sps.ttest_ind(reference - margin, variant, equal_var=False, alternative="greater")
    assert ours.t == pytest.approx(float(theirs.statistic), rel=1e-9)
    assert ours.df == pytest.approx(float(theirs.df), rel=1e-9)
    assert ours.p == pytest.approx(float(theirs.pvalue), rel=1e-8, abs=1e-15)
    assert ours.passed == (float(theirs.pvalue) < 0.01)


def test_welch_the_record_against_itself_fails() -> None:
    published = [2.76951521, 2.77167493, 2.77232000]
    r = welch_record_test(published, published)
    assert r.mean_diff == 0.0 and r.t is not None and r.t < 0 and r.p is not None and r.p > 0.5
    assert r.passed is False


def test_welch_a_clear_record_passes() -> None:
    # 0.011 nats better than #1610 with seed noise of ~0.001: a record.
    r = welch_record_test([2.760, 2.761, 2.759], [2.76951521, 2.77167493, 2.77232000])
    assert r.mean_diff == pytest.approx(0.01117005, abs=1e-8)
    assert r.p is not None and r.p < 0.01 and r.passed is True


@pytest.mark.parametrize(
    "variant, reference, note",
    [
        ([2.7], [2.77, 2.78, 2.79], "at least 2 values on each side (variant 1, reference 3)"),
        ([2.7, 2.71], [2.77], "at least 2 values on each side (variant 2, reference 1)"),
        ([], [], "at least 2 values on each side (variant 0, reference 0)"),
        ([2.7, float("nan")], [2.77, 2.78], "not finite"),
        ([2.7, float("inf")], [2.77, 2.78], "not finite"),
        ([2.7, 2.7], [2.8, 2.8], "zero variance on both sides"),
    ],
)
def test_welch_undefined_never_passes(variant: list[float], reference: list[float], note: str) -> None:
    r = welch_record_test(variant, reference)
    assert r.passed is False
    assert (r.t, r.df, r.p) == (None, None, None)
    assert note in r.note
    assert r.to_dict()["passed"] is False


# ----------------------------------------------------------------------------------------------
# ablation_decision


def test_ablation_promote_hold_kill() -> None:
    d = ablation_decision({"1a": -0.0025, "1b": -0.0012, "1c": 0.0004}, promote=-0.002, hold=-0.001)
    assert (d.outcome, d.best, d.best_delta) == (AblationOutcome.PROMOTE, "1a", -0.0025)
    outcome, best, delta = ablation_decision({"1b": -0.0012, "1c": 0.0004}, -0.002, -0.001)
    assert (outcome, best, delta) == (AblationOutcome.HOLD, "1b", -0.0012)
    d = ablation_decision({"1c": 0.0004, "1d": -0.0009}, -0.002, -0.001)
    assert (d.outcome, d.best) == (AblationOutcome.KILL, "1d")
    assert d.outcome.value == "KILL" and "no variant improves enough" in d.reason
    assert d.to_dict()["outcome"] == "KILL"


def test_ablation_thresholds_are_inclusive_at_printed_precision() -> None:
    # 1.07016564 − 1.07216564 is −0.0020000000000000018 in floating point … and the mirror case
    # 1.07116564 − 1.07216564 = −0.0009999999999998899 for hold.
    exactly_promote = 1.07016564 - 1.07216564
    exactly_hold = 1.07116564 - 1.07216564
    assert ablation_decision({"a": exactly_promote}, -0.002, -0.001).outcome is AblationOutcome.PROMOTE
    assert ablation_decision({"a": exactly_hold}, -0.002, -0.001).outcome is AblationOutcome.HOLD
    assert classify_delta(-0.0019999, -0.002, -0.001) is AblationOutcome.HOLD
    assert classify_delta(-0.0009999, -0.002, -0.001) is AblationOutcome.KILL


def test_ablation_ties_and_non_finite() -> None:
    d = ablation_decision({"b": -0.003, "a": -0.003, "c": float("nan")}, -0.002, -0.001)
    assert d.best == "a"  # ties go to the first name, so the choice is reproducible
    d = ablation_decision({"x": float("nan"), "y": -0.0021}, -0.002, -0.001)
    assert (d.outcome, d.best) == (AblationOutcome.PROMOTE, "y")
    d = ablation_decision({"x": float("nan")}, -0.002, -0.001)
    assert (d.outcome, d.best, d.best_delta) == (AblationOutcome.KILL, None, None)
    assert "no variant has a finite delta_bpb" in d.reason


def test_ablation_bad_input() -> None:
    with pytest.raises(ValueError, match="no variants"):
        ablation_decision({}, -0.002, -0.001)
    with pytest.raises(ValueError, match="must be <= hold"):
        ablation_decision({"a": 0.0}, -0.001, -0.002)


# ----------------------------------------------------------------------------------------------
# degenerate samples: undefined with a reason, never a pass


def test_float_rounding_spread_is_no_spread() -> None:
    # [2.76]*3 against [2.80]*3 carries a rounding variance of ~5e-16: a naive t-test "passes" at
    # p ≈ 4e-29. Here it is undefined.
    r = welch_one_sided([2.76] * 3, [2.80] * 3, 0.005, 0.01)
    assert (r.defined, r.passed, r.t, r.p) == (False, False, None, None)
    assert "zero variance on both sides" in r.reason
    # the same with values that differ only in the 12th decimal (below 1e-9 of their magnitude)
    assert not welch_one_sided([2.76, 2.76 + 1e-12, 2.76 - 1e-12], [2.80, 2.80 + 2e-12], 0.005).defined
    # a real spread of 1e-5 nats is kept
    assert welch_one_sided([2.76, 2.76001], [2.80, 2.80001], 0.005).defined
    d = r.to_dict()
    assert d["defined"] is False and d["p"] is None


def test_welch_non_finite_has_no_mean() -> None:
    r = welch_one_sided([2.7, float("nan")], [2.8, 2.81])
    assert r.mean_diff is None and r.mean_variant is None and not r.defined


def test_one_sample_by_hand() -> None:
    # [1, 2, 3] below 4: mean 2, s = 1, se = 1/√3; t = (4 − 2)·√3 = 3.46410162, df 2;
    # P(T_2 > t) = 1/2 − t/(2·sqrt(2 + t²)) = 0.5 − 3.46410162/(2·3.74165739) = 0.03708995
    r = one_sample_below([1.0, 2.0, 3.0], 4.0, alpha=0.05)
    assert r.t == pytest.approx(2 * math.sqrt(3), rel=1e-12)
    assert r.df == 2.0
    assert r.p == pytest.approx(0.03708995, abs=1e-8)
    assert r.passed is True and r.defined
    assert one_sample_below([1.0, 2.0, 3.0], 4.0, alpha=0.01).passed is False
    theirs = sps.ttest_1samp([1.0, 2.0, 3.0], 4.0, alternative="less")
    assert r.p == pytest.approx(float(theirs.pvalue), rel=1e-12)


@pytest.mark.parametrize("sample, target, why", [
    ([2.7], 2.8, "at least 2 values in the sample (sample 1)"),
    ([2.7, float("nan")], 2.8, "not finite"),
    ([2.7, 2.71], float("inf"), "target is not finite"),
    ([2.7] * 4, 2.8, "no spread"),
])
def test_one_sample_undefined(sample: list[float], target: float, why: str) -> None:
    r = one_sample_below(sample, target)
    assert (r.defined, r.passed, r.p) == (False, False, None)
    assert why in r.reason
