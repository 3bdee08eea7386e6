"""Simulated seed campaigns for the sequential test: type-I error, power and expected seeds.

    python -m golfrun.gates.simulate        # the table in docs/gates.md

Each campaign draws a reference of n_r seeds N(μ, σ²) and up to max_seeds variant seeds
N(μ − improvement, σ²), then runs the looks of a design. The looks are evaluated with numpy over
all campaigns at once (the same formulas as `welch_one_sided` and `evaluate_look`;
tests/gates/test_sequential.py checks that both give the same decisions campaign by campaign).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from golfrun.gates.sequential import Design, futility_z, make_design, planned_df

# The records' seed spread: 0.0004–0.001 BPB (users.md §4) at 2.19 nats per BPB (sp8192).
NATS_PER_BPB = 2.19
SIGMAS_NATS = (0.0004 * NATS_PER_BPB, 0.001 * NATS_PER_BPB)


@dataclass(frozen=True)
class SimResult:
    pass_rate: float
    mean_seeds: float
    futility_stops: float  # fraction of campaigns stopped early by the futility boundary
    reps: int


def simulate(design: Design, margin: float, improvement: float, sigma: float, reps: int, seed: int,
             use_futility: bool = True) -> SimResult:
    """Campaigns under a true improvement (reference − variant, nats) against the margin."""
    import numpy as np
    from scipy.stats import norm
    from scipy.stats import t as student

    rng = np.random.default_rng(seed)
    nr, last = design.n_reference, design.looks[-1]
    ref = rng.normal(0.0, sigma, (reps, nr))
    var = rng.normal(-improvement, sigma, (reps, last))
    alive = np.ones(reps, bool)
    passed = np.zeros(reps, bool)
    futile = np.zeros(reps, bool)
    used = np.zeros(reps)
    b = ref.var(axis=1, ddof=1) / nr
    for k, n in enumerate(design.looks):
        v = var[:, :n]
        a = v.var(axis=1, ddof=1) / n
        se2 = a + b
        t = (ref.mean(axis=1) - v.mean(axis=1) - margin) / np.sqrt(se2)
        df = se2**2 / (a**2 / (n - 1) + b**2 / (nr - 1))
        df_b = df if len(design.looks) == 1 else np.minimum(df, planned_df(n, nr))
        p_b = norm.sf(design.z_bounds[k])
        hit = alive & (t > student.isf(p_b, df_b))
        if k == len(design.looks) - 1:
            stop = alive.copy()
        else:
            z_f = futility_z(design, k)
            stop = hit.copy()
            if use_futility and z_f is not None:
                fut = alive & ~hit & (t < student.isf(norm.sf(z_f), df_b))
                futile |= fut
                stop |= fut
        used[stop] = n
        passed |= hit
        alive &= ~stop
    return SimResult(float(passed.mean()), float(used.mean()), float(futile.mean()), reps)


def table(reps: int = 40_000) -> list[str]:
    """The docs/gates.md table: the record rule (0.005 nats, α 0.01), 3 reference seeds."""
    rows = ["| design | σ (nats) | type-I at the margin (futility ignored / used) | power at 0.008 nats | "
            "expected seeds at 0.008 / at the margin |", "|---|---|---|---|---|"]
    designs = {
        "fixed, 3 seeds": make_design(0.01, (3,), 3, 0.0),
        "fixed, 8 seeds": make_design(0.01, (8,), 3, 0.0),
        "sequential, 2..8 seeds, waves of 1": make_design(0.01, tuple(range(2, 9)), 3, 0.1),
        "sequential, 2..8 seeds, waves of 2": make_design(0.01, (2, 4, 6, 8), 3, 0.1),
    }
    for name, d in designs.items():
        for i, sigma in enumerate(SIGMAS_NATS):
            null_free = simulate(d, 0.005, 0.005, sigma, reps, 10 + i, use_futility=False)
            null = simulate(d, 0.005, 0.005, sigma, reps, 10 + i)
            alt = simulate(d, 0.005, 0.008, sigma, reps, 20 + i)
            mc = math.sqrt(0.01 * 0.99 / reps)
            rows.append(f"| {name} | {sigma:.5f} | {null_free.pass_rate:.4f} / {null.pass_rate:.4f} (± {mc:.4f}) | "
                        f"{alt.pass_rate:.3f} | {alt.mean_seeds:.2f} / {null.mean_seeds:.2f} |")
    return rows


if __name__ == "__main__":
    print("\n".join(table()))
