"""golfrun.gates: observations → checks → verdict, and the statistics behind the gates.

scipy is imported only inside `welch_record_test`, so importing this package stays cheap.
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
    SeedStats,
    WelchResult,
    ablation_decision,
    classify_delta,
    seed_stats,
    welch_record_test,
)

__all__ = [
    "AblationDecision",
    "AblationOutcome",
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
    "seed_stats",
    "starts_with",
    "verdict_from",
    "welch_record_test",
    "within_tolerance",
]
