"""Checks compare observed with limit; missing values fail; warnings never fail; verdicts."""

from __future__ import annotations

import pytest

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
from golfrun.summary import Check, Verdict


def test_comparisons() -> None:
    assert at_most("x", 1.0, 1.0).passed and not at_most("x", 1.1, 1.0).passed
    assert at_least("x", 1.0, 1.0).passed and not at_least("x", 0.9, 1.0).passed
    assert less_than("p", 0.009, 0.01).passed and not less_than("p", 0.01, 0.01).passed
    assert greater_than("x", 2, 1).passed and not greater_than("x", 1, 1).passed
    c = at_most("val_bpb", 1.0755, 1.07516564, detail="seed 0")
    assert (c.name, c.observed, c.limit, c.op, c.passed, c.detail, c.severity) == (
        "val_bpb", 1.0755, 1.07516564, "<=", False, "seed 0", "fail")


@pytest.mark.parametrize("observed", [None, float("nan"), "1.0", True])
def test_missing_or_non_numeric_observed_fails(observed: object) -> None:
    c = at_most("val_bpb", observed, 2.0, detail="final score")
    assert c.passed is False
    assert c.detail.startswith("final score; ")
    assert ("no observed value" in c.detail) if observed is None else ("is not a number" in c.detail)
    assert at_least("x", observed, 0.0).passed is False


def test_missing_limit_fails() -> None:
    assert "no limit" in at_most("x", 1.0, None).detail and not at_most("x", 1.0, None).passed


def test_other_checks() -> None:
    assert equals("n", 8, 8).passed and not equals("n", 7, 8).passed and not equals("n", None, None).passed
    assert one_of("mode", "train", ["train", "eval_only"]).passed and not one_of("mode", "x", ["train"]).passed
    assert contains("pkgs", ["torch", "numpy"], "torch").passed and not contains("pkgs", ["numpy"], "torch").passed
    assert contains("name", "NVIDIA H100 80GB HBM3", "H100").passed and not contains("name", None, "H100").passed
    assert contains("s", {"b", "a"}, "a").observed == ["a", "b"]
    assert all_contain("gpus", ["NVIDIA H100", "NVIDIA H100"], "H100").passed
    assert not all_contain("gpus", ["NVIDIA H100", "NVIDIA A100"], "H100").passed
    assert not all_contain("gpus", [], "H100").passed  # no GPUs is not "all are H100"
    assert starts_with("torch", "2.9.1+cu128", "2.9").passed and not starts_with("torch", None, "2.9").passed
    assert is_true("trainer", True, "/x/train_gpt.py").passed and not is_true("trainer", False).passed


def test_within_tolerance() -> None:
    # Gate A of the seed pipeline: 1.07216564 + 0.003 = 1.07516564.
    c = within_tolerance("val_bpb", 1.07218477, 1.07216564, 0.003)
    assert c.limit == pytest.approx(1.07516564) and c.passed
    assert "reference 1.07216564 + tolerance 0.003" in c.detail
    assert not within_tolerance("val_bpb", 1.0752, 1.07216564, 0.003).passed


def test_headroom_is_a_warning_never_a_failure() -> None:
    # The seed pipeline printed FAIL for an artifact 606 bytes under the real cap (its own
    # 2,480-byte headroom). Here: the cap passes, the headroom warns, the verdict is PASS.
    checks = artifact_checks("", 15_999_394, 16_000_000, headroom_bytes=2480)
    assert [(c.name, c.limit, c.passed, c.severity) for c in checks] == [
        ("artifact_bytes", 16_000_000, True, "fail"),
        ("artifact_headroom", 15_997_520, False, "warn"),
    ]
    verdict, reasons = verdict_from(checks)
    assert verdict is Verdict.PASS
    assert reasons[0].startswith("warning: artifact_headroom: 15999394 > 15997520")
    assert reasons[-1] == "all 1 gating checks passed"
    assert len(artifact_checks("s1.", 1, 16_000_000)) == 1


def test_verdict_kill_lists_failures_first() -> None:
    checks = [
        at_most("val_bpb", 1.08, 1.07516564, detail="seed 0"),
        at_most("eval_seconds", 500.0, 600.0),
        at_most("headroom", 2, 1, severity="warn"),
        at_most("artifact_bytes", None, 16_000_000),
    ]
    verdict, reasons = verdict_from(checks)
    assert verdict is Verdict.KILL
    assert reasons == [
        "val_bpb: 1.08 > 1.0751656 (seed 0)",
        "artifact_bytes: None > 16000000 (no observed value)",
        "warning: headroom: 2 > 1",
    ]


def test_verdict_pass_and_empty() -> None:
    assert verdict_from([at_most("a", 1, 2)]) == (Verdict.PASS, ["all 1 gating checks passed"])
    assert verdict_from([])[0] is Verdict.ERROR
    # Only warnings, all failing: nothing gated failed.
    assert verdict_from([at_most("a", 3, 2, severity="warn")])[0] is Verdict.PASS
    with pytest.raises(ValueError, match="severity"):
        verdict_from([Check("a", 1, 2, "<=", True, severity="fatal")])


def test_describe() -> None:
    assert describe(at_most("x", 1.0, 2.0)) == "x: 1 <= 2"
    assert describe(equals("gpu_count", 7, 8, detail="GPUs seen")) == "gpu_count: 7 != 8 (GPUs seen)"
    assert describe(starts_with("torch", "2.8.0", "2.9")) == "torch: '2.8.0' does not start with '2.9'"
