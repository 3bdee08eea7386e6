"""The seed-test rule profiles gate-b can be asked to apply (`gate_b.rule`).

    record    the challenge README: mean val_loss below the reference's by ≥ margin (0.005 nats)
              at p < α (0.01), one-sided Welch against the reference's per-seed values;
    frontier  the maintainers' later practice: below the reference (no margin) at p < 0.25, Welch;
    target    modded-nanogpt's records: mean val_loss below a fixed value at p < α, one-sample t.

The margin is in nats on val_loss: 0.005 nats is ≈ 0.0023 BPB for sp8192 and different for every
tokenizer, so it is never converted. The reference sample may pool extra seeds from other runs
(labelled as such in the summary); the target rule uses no reference sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from golfrun.gates.stats import OneSampleResult, WelchResult, one_sample_below, welch_one_sided

RULES = ("record", "frontier", "target")
FRONTIER_ALPHA = 0.25


@dataclass(frozen=True)
class Rule:
    name: str  # record | frontier | target
    alpha: float
    margin_nats: float  # Welch rules: the improvement to show (0 for frontier)
    target_val_loss: float | None  # target rule only

    @property
    def two_sample(self) -> bool:
        return self.name != "target"

    def test(self, losses: Sequence[float], reference: Sequence[float]) -> WelchResult | OneSampleResult:
        """The rule's one-sided test on per-seed val_loss (the reference is ignored by `target`)."""
        if self.two_sample:
            return welch_one_sided(losses, reference, self.margin_nats, self.alpha)
        assert self.target_val_loss is not None
        return one_sample_below(losses, self.target_val_loss, self.alpha)

    def describe(self) -> str:
        if self.name == "target":
            return f"mean val_loss below {self.target_val_loss:.8f} at p < {self.alpha:g} (one-sided one-sample t)"
        what = f"by ≥ {self.margin_nats:g} nats " if self.margin_nats else ""
        return f"mean val_loss below the reference's {what}at p < {self.alpha:g} (one-sided Welch)"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "test": self.describe()}


def rule_profile(name: str, margin_nats: float, alpha: float, target_val_loss: float = 0.0) -> Rule:
    """The named profile; `margin_nats` and `alpha` are the campaign's (record; alpha also for
    target), frontier fixes both."""
    if name == "record":
        return Rule("record", alpha, margin_nats, None)
    if name == "frontier":
        return Rule("frontier", FRONTIER_ALPHA, 0.0, None)
    if name == "target":
        if not target_val_loss > 0:
            raise ValueError("the target rule needs a target val_loss > 0")
        return Rule("target", alpha, 0.0, target_val_loss)
    raise ValueError(f"unknown rule {name!r}; rules are: {', '.join(RULES)}")
