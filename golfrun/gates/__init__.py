"""golfrun.gates: observations → checks → verdict, and the statistics behind the gates.

scipy is imported only inside the tests and the sequential boundaries, so importing this package
stays cheap. `welch_one_sided` is golfrun's one Welch test.
"""

from golfrun.gates.checks import (
    all_contain,
    artifact_checks,
    at_least,
    at_most,
    contains,
    describe,
    equals,
    greater_than,
    is_true,
    less_than,
    one_of,
    starts_with,
    verdict_from,
    within_tolerance,
)
from golfrun.gates.stats import (
    AblationDecision,
    AblationOutcome,
    OneSampleResult,
    SeedStats,
    WelchResult,
    ablation_decision,
    classify_delta,
    one_sample_below,
    seed_stats,
    welch_one_sided,
    welch_record_test,
)

__all__ = [
    "AblationDecision",
    "AblationOutcome",
    "OneSampleResult",
    "SeedStats",
    "WelchResult",
    "ablation_decision",
    "all_contain",
    "artifact_checks",
    "at_least",
    "at_most",
    "classify_delta",
    "contains",
    "describe",
    "equals",
    "greater_than",
    "is_true",
    "less_than",
    "one_of",
    "one_sample_below",
    "seed_stats",
    "starts_with",
    "verdict_from",
    "welch_one_sided",
    "welch_record_test",
    "within_tolerance",
]
