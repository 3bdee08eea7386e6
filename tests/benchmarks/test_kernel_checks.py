"""benchmarks/kernel_checks.py's FP8 estimate on the CPU (torch runs float8 _scaled_mm there too): the operand
layouts and scales that _scaled_mm needs give the bf16 products, and the per-step sums count every call."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import kernel_checks as kc  # noqa: E402


def test_fp8_estimate_matches_bf16_and_counts_every_matmul_of_a_step():
    res = kc.check_fp8(m=64, device="cpu", timer=lambda fn: 1.0)
    assert res["ok"]  # forward, input and weight gradient of each map within 10 % of bf16 (e4m3: 3 mantissa bits)
    errs = [row[part]["rel_err"] for row in res["matmuls"].values() for part in ("fwd", "dgrad", "wgrad")]
    assert len(errs) == 18 and max(errs) < 0.1 and min(errs) > 0  # FP8 rounding is there, and no more than that
    calls = 8 * 3 * sum(c for _, _, c in kc.FP8_LINEARS.values())  # 8 micro-steps × 3 matmuls × calls each
    assert calls == 1344
    total = res["per_step_preloop"]
    assert total["bf16_ms"] == total["fp8_ms"] == total["cast_ms"] == calls
    assert total["saved_ms"] == -calls and total["saved_ms_casts_fused"] == -calls / 3
