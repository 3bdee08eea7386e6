"""The sequential seed test: boundaries against published values and hand computation, looks,
and a seeded simulation of many campaigns (type-I error at the margin, stopping under a real gain)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from scipy.stats import t as student

from golfrun.gates.sequential import (
    CONTINUE,
    KILL,
    PASS,
    efficacy_bounds,
    evaluate_look,
    futility_z,
    information,
    look_schedule,
    make_design,
    obf_spent,
    planned_df,
)
from golfrun.gates.simulate import SIGMAS_NATS, simulate
from golfrun.gates.stats import one_sample_below, welch_one_sided


def test_obf_spending_by_hand() -> None:
    # α(τ) = 2·(1 − Φ(z_{1−α/2}/√τ)); α = 0.025, τ = 1/2: z_{0.9875} = 2.241403, /√0.5 = 3.169850,
    # 1 − Φ(3.169850) = 0.000762 → 0.001525 spent at half the information; all of α at τ = 1.
    assert obf_spent(0.5, 0.025) == pytest.approx(2 * norm.sf(2.241403 / math.sqrt(0.5)), rel=1e-5)
    assert obf_spent(0.5, 0.025) == pytest.approx(0.001525, abs=2e-6)
    assert obf_spent(1.0, 0.01) == pytest.approx(0.01, rel=1e-12)
    assert obf_spent(0.0, 0.01) == 0.0


@pytest.mark.parametrize("taus, published", [
    # Lan–DeMets O'Brien–Fleming, one-sided α = 0.025, equally spaced looks (gsDesign sfLDOF / rpact
    # designGroupSequential(typeOfDesign = "asOF")): 3.7103, 2.5114, 1.9930 and
    # 4.8769, 3.3569, 2.6803, 2.2898, 2.0310.
    ((1 / 3, 2 / 3, 1.0), (3.7103, 2.5114, 1.9930)),
    ((0.2, 0.4, 0.6, 0.8, 1.0), (4.8769, 3.3569, 2.6803, 2.2898, 2.0310)),
])
def test_efficacy_bounds_match_published_tables(taus: tuple[float, ...], published: tuple[float, ...]) -> None:
    assert efficacy_bounds(taus, 0.025) == pytest.approx(published, abs=2e-4)


def test_one_look_is_the_fixed_test() -> None:
    d = make_design(0.01, (3,), 3, 0.1)
    assert d.z_bounds == (pytest.approx(2.326348, abs=1e-6),)
    # a look of the fixed design is exactly the rule's Welch test: PASS iff p < α
    for variant in ([2.760, 2.761, 2.759], [2.762, 2.766, 2.760], [2.7665, 2.766, 2.7655]):
        w = welch_one_sided(variant, [2.76951521, 2.77167493, 2.77232000], 0.005, 0.01)
        look = evaluate_look(d, 3, w)
        assert (look.decision == PASS) == w.passed
        assert look.decision in (PASS, KILL)
        assert look.boundary == pytest.approx(float(student.isf(0.01, w.df)), rel=1e-9)


def test_schedule_information_and_planned_df_by_hand() -> None:
    assert look_schedule(8, 1) == (2, 3, 4, 5, 6, 7, 8)
    assert look_schedule(8, 3) == (3, 6, 8)
    assert look_schedule(5, 2) == (2, 4, 5)
    assert look_schedule(3, 0) == (3,)
    with pytest.raises(ValueError):
        look_schedule(1, 1)
    # I(n) = 1/(1/n + 1/n_r): I(2) with 3 reference seeds = 1/(5/6) = 1.2; I(8) = 24/11
    assert information(2, 3) == pytest.approx(1.2)
    assert make_design(0.01, (2, 8), 3).taus == pytest.approx((1.2 / (24 / 11), 1.0))
    assert information(4, 0) == 4.0
    # equal-variance Welch df for 2 and 3 seeds: (1/2 + 1/3)² / ((1/2)²/1 + (1/3)²/2) = (25/36)/(11/36) = 25/11
    assert planned_df(2, 3) == pytest.approx(25 / 11)
    assert planned_df(5, 0) == 4.0


def test_a_look_by_hand() -> None:
    d = make_design(0.01, (2, 3, 4), 3, 0.1)
    # variant [2.760, 2.762] against the record's three seeds, margin 0.005
    w = welch_one_sided([2.760, 2.762], [2.76951521, 2.77167493, 2.77232000], 0.005, 0.01)
    look = evaluate_look(d, 2, w)
    assert look.df_boundary == pytest.approx(min(w.df, 25 / 11))
    assert look.p_boundary == pytest.approx(float(norm.sf(d.z_bounds[0])))
    assert look.boundary == pytest.approx(float(student.isf(look.p_boundary, look.df_boundary)))
    # futility: z_f = √τ·(c_K − √(1 − τ)·z_{0.9}) carried to t with the same df
    tau = d.taus[0]
    z_f = math.sqrt(tau) * (d.z_bounds[-1] - math.sqrt(1 - tau) * 1.2815516)
    assert look.z_futility == pytest.approx(z_f, abs=1e-6)
    assert look.futility_boundary == pytest.approx(float(student.isf(norm.sf(z_f), look.df_boundary)), rel=1e-6)
    assert look.alpha_spent == pytest.approx(obf_spent(tau, 0.01))
    expected = PASS if w.t > look.boundary else KILL if w.t < look.futility_boundary else CONTINUE
    assert look.decision == expected
    assert look.to_dict()["n"] == 2


def test_undefined_looks_never_pass() -> None:
    d = make_design(0.01, (2, 3), 3, 0.1)
    flat = welch_one_sided([2.76, 2.76], [2.80, 2.80, 2.80], 0.005)
    assert not flat.defined
    first = evaluate_look(d, 2, flat)
    assert (first.decision, first.t, first.boundary) == (CONTINUE, None, None)
    assert "undefined" in first.reason
    assert evaluate_look(d, 3, welch_one_sided([2.76] * 3, [2.80] * 3, 0.005)).decision == KILL
    with pytest.raises(ValueError, match="no look is planned at 5"):
        evaluate_look(d, 5, flat)


def test_last_look_futility_is_the_efficacy_boundary() -> None:
    d = make_design(0.01, (2, 4, 6), 5, 0.1)
    assert futility_z(d, 2) == d.z_bounds[-1]
    assert futility_z(make_design(0.01, (2, 4, 6), 5, 0.0), 0) is None


def test_target_rule_looks() -> None:
    d = make_design(0.05, (2, 3, 4), 0, 0.1)
    assert d.taus == pytest.approx((0.5, 0.75, 1.0))
    r = one_sample_below([2.70, 2.701, 2.7005], 2.8, 0.05)
    assert evaluate_look(d, 3, r).decision == PASS


def test_simulation_matches_the_library_campaign_by_campaign() -> None:
    """The vectorized simulation decides exactly as welch_one_sided + evaluate_look would."""
    d = make_design(0.01, (2, 3, 4, 5), 3, 0.1)
    rng = np.random.default_rng(7)
    sigma, reps = SIGMAS_NATS[1], 150
    ref = rng.normal(0.0, sigma, (reps, 3))
    var = rng.normal(-0.0065, sigma, (reps, 5))
    passes = seeds = 0
    for i in range(reps):
        for n in d.looks:
            look = evaluate_look(d, n, welch_one_sided(var[i, :n].tolist(), ref[i].tolist(), 0.005, 0.01))
            if look.decision != CONTINUE:
                break
        passes += look.decision == PASS
        seeds += n
    sim = simulate(d, 0.005, 0.0065, sigma, reps, 7)
    assert sim.pass_rate == pytest.approx(passes / reps, abs=1e-12)
    assert sim.mean_seeds == pytest.approx(seeds / reps, abs=1e-12)


@pytest.mark.parametrize("sigma", SIGMAS_NATS)
def test_simulated_type_one_error_and_early_stops(sigma: float) -> None:
    """Record rule (0.005 nats, α 0.01), 3 reference seeds, looks after each seed from 2 to 8."""
    reps = 20_000
    mc = 3 * math.sqrt(0.01 * 0.99 / reps)  # three Monte-Carlo standard errors at α
    seq = make_design(0.01, look_schedule(8, 1), 3, 0.1)
    # Under the null at the margin (true improvement exactly 0.005 nats): ≤ α, with the futility
    # stop ignored (it is non-binding) and used.
    assert simulate(seq, 0.005, 0.005, sigma, reps, 1, use_futility=False).pass_rate <= 0.01 + mc
    null = simulate(seq, 0.005, 0.005, sigma, reps, 1)
    assert null.pass_rate <= 0.01 + mc
    assert null.mean_seeds < 3.0  # most null campaigns stop at the first or second look
    # A true improvement of 0.008 nats: fewer seeds on average than the fixed 8-seed design, and at
    # least the fixed 3-seed design's power.
    alt = simulate(seq, 0.005, 0.008, sigma, reps, 2)
    fixed3 = simulate(make_design(0.01, (3,), 3, 0.0), 0.005, 0.008, sigma, reps, 2)
    assert alt.mean_seeds < 8.0 - 2.0
    assert alt.pass_rate >= fixed3.pass_rate - 3 * math.sqrt(0.25 / reps)
