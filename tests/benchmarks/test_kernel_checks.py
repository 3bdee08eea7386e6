"""benchmarks/kernel_checks.py's FP8 estimate on the CPU (torch runs float8 _scaled_mm there too): the operand
layouts and scales that _scaled_mm needs give the bf16 products, and the per-step sums count every call; and its
loss-kernel sweep, its q/k and XSA checks and its MLP_SAVE_SIGNS check under Triton's interpreter."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.conftest import INTERPRETER_ENV
from tests.trainer.test_kernels import needs_triton

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


# Each interpreted body gets kernel_checks as kc and `countdown`, a timer that runs the function and says each call
# was faster than the one before (100.0, 99.0, ...)
_PRELUDE = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import kernel_checks as kc
ticks = iter(range(1000))
countdown = lambda fn: (fn(), 100.0 - next(ticks))[1]
"""


def interpreted(body: str) -> dict:
    """Runs _PRELUDE + `body` in a fresh process under Triton's CPU interpreter (TRITON_INTERPRET=1, read when the
    kernels are decorated); returns the JSON its last line of output holds."""
    env = {**os.environ, **INTERPRETER_ENV}
    out = subprocess.run([sys.executable, "-c", _PRELUDE + body, str(Path(kc.__file__).parent)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


_SWEEP = """
torch.manual_seed(0)
x = (4 * torch.randn(8, 1024)).to(torch.bfloat16)
y = torch.randint(0, 1024, (8,))
print(json.dumps(kc.loss_kernel_sweep(x, y, timer=countdown)))
"""


@needs_triton
def test_loss_kernel_sweep_checks_every_launch_against_the_built_in_one():
    """benchmarks/kernel_checks.py's loss sweep, run on the CPU by Triton's interpreter at a small shape (tiles wider
    than the vocabulary and taller than the batch among them): every candidate launch of both kernels builds and
    matches the built-in launch's outputs, and `best` is the one the timer called fastest (here the last timed)."""
    res = interpreted(_SWEEP)
    for which in ("fwd", "bwd"):
        rows = res["candidates"][which]
        assert list(rows) == [",".join(map(str, t)) for t in kc.LOSS_TILE_CANDIDATES[which]]
        assert all(r.get("close") for r in rows.values()), rows
        best = res["best"][which]
        assert best["tile"] == list(rows)[-1] and best["ms"] == min(r["ms"] for r in rows.values())
        assert best["default_tile"] in rows and best["speedup"] > 1


def assert_rows_sweep(sweep: dict, candidates: list, defaults: dict) -> None:
    """A rows_kernel_sweep result (the q/k and XSA checks): each kernel's rows are the candidates in order, each
    launch matched the built-in one, and `best` is the last timed (the countdown timer's fastest) with its default."""
    for which, default in defaults.items():
        rows = sweep["candidates"][which]
        assert list(rows) == [f"{r},{w}" for r, w in candidates]
        assert all(r.get("close") for r in rows.values()), rows
        best = sweep["best"][which]
        assert best["tile"] == list(rows)[-1] and best["default_tile"] == default and best["speedup"] > 1


_QK = """
print(json.dumps(kc.check_qk(m=48, device="cpu", timer=countdown, busy=lambda fn: (fn(), 7.0)[1])))
"""


@needs_triton
def test_qk_check_compares_with_the_plain_ops_and_sweeps_every_launch():
    """benchmarks/kernel_checks.py's q/k check on the CPU (Triton's interpreter, 48 tokens of the record's heads):
    the fused op through torch.compile against the plain ops compiled by Inductor, within bf16 rounding, and every
    candidate launch of both kernels with the built-in launch's outputs; `best` is the one the timer called fastest
    (here the last timed), with its bandwidth from the bytes each kernel must move."""
    res = interpreted(_QK)
    assert res["ok"] and set(res["rel_err"]) == {"q", "k", "dq", "dk", "dgain"}, res["rel_err"]
    assert max(res["rel_err"].values()) < 2e-2 and res["ms_fwd_bwd"] == {"plain_inductor": 100.0, "fused_triton": 99.0}
    assert res["gpu_busy_ms_fwd_bwd"] == {"plain_inductor": 7.0, "fused_triton": 7.0}
    sweep = res["kernels"]
    assert sweep["gb"]["bwd"] == pytest.approx(1.5 * sweep["gb"]["fwd"]) == 3 * 48 * 12 * 64 * 2 / 1e9
    assert_rows_sweep(sweep, kc.QK_TILE_CANDIDATES, {"fwd": "16,4", "bwd": "16,4"})


_XSA = """
print(json.dumps(kc.check_xsa(m=48, device="cpu", timer=countdown, busy=lambda fn: (fn(), 7.0)[1])))
"""


@needs_triton
def test_xsa_check_compares_with_the_plain_ops_and_sweeps_every_launch():
    """benchmarks/kernel_checks.py's XSA check on the CPU (Triton's interpreter, 48 tokens of the record's heads):
    the fused op through torch.compile against the plain ops compiled by Inductor, within bf16 rounding, and every
    candidate launch of both kernels with the built-in launch's outputs; `best` is the one the timer called fastest
    (here the last timed), with its bandwidth from the bytes each kernel must move."""
    res = interpreted(_XSA)
    assert res["ok"] and set(res["rel_err"]) == {"out", "dy", "dv"}, res["rel_err"]
    assert 0 < max(res["rel_err"].values()) < 2e-2  # bf16 rounding differs, and no more than that
    assert res["ms_fwd_bwd"] == {"plain_inductor": 100.0, "fused_triton": 99.0}
    sweep = res["kernels"]
    y_gb, v_gb = 48 * 8 * 64 * 2 / 1e9, 48 * 4 * 64 * 2 / 1e9
    assert sweep["gb"] == {"fwd": pytest.approx(2 * y_gb + v_gb), "bwd": pytest.approx(3 * y_gb + 2 * v_gb)}
    assert_rows_sweep(sweep, kc.XSA_TILE_CANDIDATES, {"fwd": "16,4", "bwd": "16,8"})


_MLP_SIGNS = """
print(json.dumps(kc.check_mlp_signs(m=48, device="cpu", timer=countdown)))
"""


@needs_triton
def test_mlp_signs_check_compares_both_forms_of_the_fused_mlp():
    """benchmarks/kernel_checks.py's MLP_SAVE_SIGNS check on the CPU (Triton's interpreter, 48 tokens at the record's
    widths): post bit for bit, the kernel's signs those of its pre, dPre and the compiled op's output and gradients
    within bf16 rounding of keeping pre, and each timing taken (here by a timer that counts down)."""
    res = interpreted(_MLP_SIGNS)
    assert res["ok"] and res["post_bitwise_equal"] and res["signs_equal"], res
    assert res["dpre_rel_err"] < 2e-2 and set(res["rel_err"]) == {"out", "dx", "dw_up", "dw_down"}
    assert max(res["rel_err"].values()) < 2e-2 and 0 < res["rel_err"]["dx"]  # the rounding differs, within bf16's
    assert res["ms"] == {"up_pre": 100.0, "up_signs": 99.0, "grad_pre": 98.0, "grad_signs": 97.0}
    assert res["ms_fwd_bwd"] == {"pre": 96.0, "signs": 95.0}


def test_cu_padded_keeps_the_sequences_and_sets_the_trailing_empty_ones():
    """The fa4 check's cu_seqlens of other lengths: the sequences in use unchanged, then empty ones (the total
    repeated) to the length asked; fewer entries than in use is refused with both counts."""
    import torch
    cu = torch.tensor([0, 5, 9, 12, 12, 12, 12, 12], dtype=torch.int32)
    assert kc.cu_padded(cu, 4).tolist() == [0, 5, 9, 12]
    assert kc.cu_padded(cu, 10).tolist() == [0, 5, 9, 12] + [12] * 6
    assert kc.cu_padded(cu, 8).dtype == torch.int32
    with pytest.raises(ValueError, match="cu_seqlens has 4 entries in use, more than 3"):
        kc.cu_padded(cu, 3)
