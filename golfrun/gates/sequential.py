"""The sequential seed test: group-sequential looks with Lan–DeMets O'Brien–Fleming alpha spending.

Seeds of the variant arrive one wave at a time; after each wave (from the second seed on) the
rule's one-sided t statistic is compared with two boundaries:

    t ≥ efficacy boundary   → PASS  (the improvement is shown at the rule's overall α)
    t < futility boundary   → KILL  (the chance of passing by max_seeds has fallen below the floor)
    otherwise               → continue with the next wave; at the last look "not PASS" is KILL.

Why group-sequential and not an anytime-valid e-value: the seeds are pre-registered and capped
(max_seeds ≤ 8), so the looks are known in advance, and with n ≤ 8 a t-test e-value must reach
1/α = 100 — rarely possible with a handful of seeds — while a spending function gives nearly the
fixed design's power at the last look and stops most clear cases at the first or second.

Spending: α(τ) = 2·(1 − Φ(z_{1−α/2} / √τ)) (Lan & DeMets 1983, the O'Brien–Fleming shape: almost
nothing spent early). τ_k is the information fraction of look k. The statistic's information with
n variant seeds against a fixed reference of n_r seeds is I(n) = 1/(1/n + 1/n_r) (equal variances
assumed for planning: the reference does not grow, so later seeds add less); one-sample: I(n) = n.
The joint law of the Z statistics at the looks is the canonical one (corr(Z_j, Z_k) = √(I_j/I_k)),
so the efficacy boundaries c_k on the z scale are found look by look by numerical integration
(Armitage–McPherson–Rowe recursion) so that P(first crossing at look k | H0) = α(τ_k) − α(τ_{k−1}).

The t statistic has few degrees of freedom; each z boundary is carried to the t scale by matching
the nominal level (Jennison & Turnbull 2000, §3.8): t boundary = F⁻¹_{t,df_b}(Φ(c_k)), with
df_b = min(the look's Welch df, the planned df) and the planned df the Welch–Satterthwaite df for
n and n_r seeds of equal variance. Why the cap: the small reference's variance is shared by every
look, so a reference that happens to look tight inflates all looks at once; with the observed df
alone the simulated type-I error at α = 0.01 was 0.0124 (8 looks, 3 reference seeds), with the cap
0.0046 (tests/gates/test_sequential.py; figures in docs/gates.md).

Futility (non-binding: the efficacy boundaries are computed as if it never stopped anything, so
ignoring it never inflates α): the conditional power under the current trend,
CP_k = 1 − Φ((c_K − z_k/√τ_k) / √(1 − τ_k)); KILL when CP_k < futility_power, i.e. when
z_k < √τ_k·(c_K − √(1 − τ_k)·z_{1−futility_power}). 0 turns it off.

Everything a look decides is recorded (`Look.to_dict`), with the design (`Design.to_dict`), so the
decision can be recomputed from the summary alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

PASS, KILL, CONTINUE = "PASS", "KILL", "continue"
_GRID = 1001  # points of the numerical integration per look (boundaries good to ~1e-5 in z)


class TTest(Protocol):
    """What a look needs from a test result (WelchResult and OneSampleResult both fit)."""

    t: float | None
    df: float | None
    p: float | None
    note: str

    @property
    def defined(self) -> bool: ...


def obf_spent(tau: float, alpha: float) -> float:
    """Lan–DeMets O'Brien–Fleming spending: the one-sided α spent by information fraction τ."""
    from scipy.stats import norm

    if tau <= 0:
        return 0.0
    return float(2.0 * norm.sf(norm.isf(alpha / 2.0) / math.sqrt(min(tau, 1.0))))


def information(n: int, n_reference: int) -> float:
    """The test statistic's information with n variant seeds (n_reference 0 = one-sample)."""
    return float(n) if n_reference <= 0 else 1.0 / (1.0 / n + 1.0 / n_reference)


def efficacy_bounds(taus: Sequence[float], alpha: float) -> list[float]:
    """z-scale efficacy boundaries c_k for looks at information fractions `taus` (increasing, last 1)."""
    import numpy as np
    from scipy import optimize
    from scipy.stats import norm

    bounds: list[float] = []
    x = f = None  # grid and sub-density of W = Z·√τ on the continuation region of the last look
    tau_prev = spent_prev = 0.0
    for tau in taus:
        spent = obf_spent(tau, alpha)
        target = spent - spent_prev
        d = tau - tau_prev
        if f is None:
            b = math.sqrt(tau) * float(norm.isf(target))
        else:
            def crossing(b: float) -> float:
                return float(np.trapezoid(f * norm.sf((b - x) / math.sqrt(d)), x)) - target
            b = float(optimize.brentq(crossing, -10.0, 40.0, xtol=1e-10))
        bounds.append(b / math.sqrt(tau))
        grid = np.linspace(-10.0 * math.sqrt(tau), b, _GRID)
        if f is None:
            f_new = norm.pdf(grid / math.sqrt(tau)) / math.sqrt(tau)
        else:
            u = (grid[:, None] - x[None, :]) / math.sqrt(d)
            kernel = np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi * d)
            f_new = np.trapezoid(kernel * f[None, :], x, axis=1)
        x, f = grid, f_new
        tau_prev, spent_prev = tau, spent
    return bounds


def look_schedule(max_seeds: int, wave_size: int) -> tuple[int, ...]:
    """Cumulative seed counts at which the test looks: the end of each wave, from 2 seeds on
    (wave_size 0 = one wave of max_seeds: the fixed design)."""
    if max_seeds < 2:
        raise ValueError(f"a seed test needs at least 2 seeds, max_seeds is {max_seeds}")
    w = max_seeds if wave_size <= 0 else wave_size
    ends = list(range(w, max_seeds, w)) + [max_seeds]
    return tuple(n for n in ends if n >= 2)


@dataclass(frozen=True)
class Design:
    """A pre-registered sequential design. `z_bounds` follow from the rest (make_design)."""

    alpha: float
    looks: tuple[int, ...]  # cumulative variant seeds at each look
    n_reference: int  # seeds in the reference sample; 0 = one-sample test
    futility_power: float  # KILL when the conditional power falls below this; 0 = never
    taus: tuple[float, ...]
    z_bounds: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "looks": list(self.looks), "taus": list(self.taus), "z_bounds": list(self.z_bounds),
                "spending": "Lan-DeMets O'Brien-Fleming, one-sided",
                "information": "1/(1/n + 1/n_reference)" if self.n_reference else "n",
                "t_scale": "t boundary = t.isf(1 - Phi(z), df) (nominal-level matching)"}


def make_design(alpha: float, looks: Sequence[int], n_reference: int, futility_power: float = 0.1) -> Design:
    if not looks or list(looks) != sorted(set(looks)) or looks[0] < 2:
        raise ValueError(f"looks must be increasing seed counts from 2 on, got {list(looks)}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if not 0.0 <= futility_power < 1.0:
        raise ValueError(f"futility_power must be in [0, 1), got {futility_power}")
    full = information(looks[-1], n_reference)
    taus = tuple(information(n, n_reference) / full for n in looks)
    bounds = tuple(efficacy_bounds(taus, alpha)) if len(looks) > 1 else (_z_isf(alpha),)
    return Design(alpha, tuple(looks), n_reference, futility_power, taus, bounds)


def _z_isf(p: float) -> float:
    from scipy.stats import norm

    return float(norm.isf(p))


def planned_df(n: int, n_reference: int) -> float:
    """The t statistic's df with n and n_reference seeds of equal variance (one-sample: n − 1)."""
    if n_reference <= 0:
        return float(n - 1)
    a, b = 1.0 / n, 1.0 / n_reference
    return (a + b) ** 2 / (a * a / (n - 1) + b * b / (n_reference - 1))


def futility_z(design: Design, k: int) -> float | None:
    """The z below which look k stops for futility (None when futility is off; the last look's
    is its efficacy boundary: there, not passing is failing)."""
    tau, c_last = design.taus[k], design.z_bounds[-1]
    if k == len(design.looks) - 1:
        return c_last
    if design.futility_power <= 0:
        return None
    return math.sqrt(tau) * (c_last - math.sqrt(1.0 - tau) * _z_isf(design.futility_power))


@dataclass(frozen=True)
class Look:
    n: int
    t: float | None
    df: float | None
    p: float | None
    df_boundary: float | None  # min(df, planned df): the df the boundaries are carried to t with
    boundary: float | None  # efficacy boundary on the t scale (None: the test was undefined)
    futility_boundary: float | None  # on the t scale (None: off or undefined)
    p_boundary: float  # nominal level of the efficacy boundary: P(T_df_boundary > boundary)
    z_boundary: float
    z_futility: float | None
    alpha_spent: float  # cumulative α spent up to this look
    information_fraction: float
    decision: str  # PASS | KILL | continue
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_look(design: Design, n: int, test: TTest) -> Look:
    """The decision at the look made with n variant seeds (n must be one of design.looks)."""
    from scipy.stats import norm
    from scipy.stats import t as student

    if n not in design.looks:
        raise ValueError(f"no look is planned at {n} seeds (looks: {list(design.looks)})")
    k = design.looks.index(n)
    last = k == len(design.looks) - 1
    z_b, z_f = design.z_bounds[k], futility_z(design, k)
    p_b = float(norm.sf(z_b))
    spent = obf_spent(design.taus[k], design.alpha) if len(design.looks) > 1 else design.alpha
    common = dict(n=n, p_boundary=p_b, z_boundary=z_b, z_futility=z_f, alpha_spent=spent,
                  information_fraction=design.taus[k])
    if not test.defined or test.t is None or test.df is None or test.p is None:
        decision = KILL if last else CONTINUE
        why = f"test undefined: {test.note}" + ("; the last look cannot pass" if last else "; next wave")
        return Look(t=None, df=None, p=None, df_boundary=None, boundary=None, futility_boundary=None,
                    decision=decision, reason=why, **common)  # type: ignore[arg-type]
    # One look (the fixed design) is the rule's own test, at its own Welch df.
    df_b = float(test.df) if len(design.looks) == 1 else min(float(test.df), planned_df(n, design.n_reference))
    t_b = float(student.isf(p_b, df_b))
    t_f = None if z_f is None else float(student.isf(norm.sf(z_f), df_b))
    if test.t > t_b:
        decision, why = PASS, f"t {test.t:.4g} > {t_b:.4g} (df {df_b:.3g}, nominal level {p_b:.3g})"
    elif last:
        decision, why = KILL, f"last look ({n} seeds): t {test.t:.4g} < {t_b:.4g}"
    elif t_f is not None and test.t < t_f:
        decision, why = KILL, (f"futility: t {test.t:.4g} < {t_f:.4g}, conditional power under the "
                               f"current trend < {design.futility_power:g}")
    else:
        decision, why = CONTINUE, f"t {test.t:.4g} between futility and {t_b:.4g}: next wave"
    return Look(t=float(test.t), df=float(test.df), p=float(test.p), df_boundary=df_b, boundary=t_b,
                futility_boundary=t_f, decision=decision, reason=why,
                **common)  # type: ignore[arg-type]
