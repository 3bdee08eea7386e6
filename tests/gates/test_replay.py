"""The seed campaign's decisions replayed from its published numbers (trainer-facts §9.3, §7.8)
through the gates: what each design decides and how many seeds it spends (docs/gates.md)."""

from __future__ import annotations

from golfrun.gates.sequential import CONTINUE, KILL, PASS, evaluate_look, make_design
from golfrun.gates.stats import AblationOutcome, ablation_decision, one_sample_below

# PR #1610's per-seed val_loss after phased TTT (seeds 0, 1, 2) and its parent PR #1530's mean,
# 0.00144032 nats above the record's mean 2.77117005 (trainer-facts §9.3).
RECORD = [2.76951521, 2.77167493, 2.77232000]
PARENT_MEAN = 2.77117005 + 0.00144032


def replay(target: float, alpha: float, looks: tuple[int, ...], futility: float) -> tuple[str, int]:
    """(decision, seeds spent) of a design fed the record's seeds in order."""
    design = make_design(alpha, looks, 0, futility)
    for n in looks:
        if n > len(RECORD):
            return "needs more seeds", n
        look = evaluate_look(design, n, one_sample_below(RECORD[:n], target, alpha))
        if look.decision != CONTINUE:
            return look.decision, n
    raise AssertionError("the last look always decides")


def test_the_record_claim_against_its_parent() -> None:
    # ≥ 0.005 nats below the parent at p < 0.01: the fixed design spends 3 seeds to KILL; the
    # sequential design (waves of 1, 3 seeds at most) stops at 2: t = −2.76 is under its futility bound.
    target = PARENT_MEAN - 0.005
    assert replay(target, 0.01, (3,), 0.0) == (KILL, 3)
    assert replay(target, 0.01, (2, 3), 0.1) == (KILL, 2)
    assert replay(target, 0.01, tuple(range(2, 9)), 0.1) == (KILL, 2)


def test_the_frontier_claim_against_its_parent() -> None:
    # below the parent at p < 0.25: PASS with 3 seeds fixed, with 2 seeds sequential (max 3);
    # a sequential design planned for 8 seeds is more careful early and would ask for a 4th seed.
    assert replay(PARENT_MEAN, 0.25, (3,), 0.0) == (PASS, 3)
    assert replay(PARENT_MEAN, 0.25, (2, 3), 0.1) == (PASS, 2)
    assert replay(PARENT_MEAN, 0.25, tuple(range(2, 9)), 0.1) == ("needs more seeds", 4)


def test_the_corrector_grid_is_killed_before_any_seed() -> None:
    # ABL 1a, 1b, 1c: delta_bpb (variant − baseline) +0.01658, +0.01673, +0.00212 (trainer-facts §7.8)
    d = ablation_decision({"1a": 0.01658, "1b": 0.01673, "1c": 0.00212}, promote=-0.002, hold=-0.001)
    assert (d.outcome, d.best) == (AblationOutcome.KILL, "1c")

