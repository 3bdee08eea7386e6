"""The fused q/k RMSNorm + partial RoPE + q_gain of train_gpt.py (QK_KERNEL, section FUSED Q/K NORM AND ROPE) on
the CPU: the custom op with torch math against the plain ops' autograd, the Triton kernels under Triton's
interpreter against that math, both kernels compiled for sm_90 without a GPU, a fullgraph compile through the op,
and the tiny model's and the trainer's training losses against the plain path. Its speed is the GPU's to show
(benchmarks/README.md)."""
from __future__ import annotations

import pytest
import torch

from tests.trainer.conftest import (counted_training_and_eval, loss_and_grads, run_interpreted, tiny_batch,
                                    train_losses_until)
from tests.trainer.test_kernels import compile_sm90, needs_triton, ptxas_registers
from tests.trainer.test_model import TINY


@pytest.fixture
def qk_kernel(tg):
    """Select a q/k kernel for one test and restore the plain path after it."""
    yield lambda name, head_dim=64: tg.select_qk_kernel(torch.device("cpu"), name, head_dim)
    tg.select_qk_kernel(torch.device("cpu"), "plain")


def _inputs(dtype, T=37, H=4, HK=2, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = (3 * torch.randn(1, T, H, D, generator=g)).to(dtype).requires_grad_()
    k = torch.randn(1, T, HK, D, generator=g).to(dtype).requires_grad_()
    gain = (0.5 + torch.rand(H, generator=g)).to(dtype).requires_grad_()
    grads = (torch.randn(1, T, H, D, generator=g).to(dtype), torch.randn(1, T, HK, D, generator=g).to(dtype))
    return q, k, gain, grads


def _plain(tg, rot, q, k, gain):
    """The plain path of train_gpt.py's attention: rms_norm, the rotary, q_gain."""
    return rot(tg.rms_norm(q)) * gain[None, None, :, None], rot(tg.rms_norm(k))


def _rel(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


@pytest.mark.parametrize("rope_dims", [8, 0])  # partial RoPE (the record's: a quarter of the head) and all of it
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 2 ** -6)])
def test_qk_norm_rope_torch_op_matches_plain_ops(tg, qk_kernel, rope_dims, dtype, tol):
    """golf::qk_norm_rope with torch math: the outputs and the gradients of q, k and q_gain of the plain ops'
    autograd; bf16 within the plain path's own rounding of each op (it rounds after every op, the op once)."""
    rot = tg.Rotary(16, rope_dims, 10000.0)
    q, k, gain, grads = _inputs(dtype)
    ref = _plain(tg, rot, q, k, gain)
    dref = torch.autograd.grad(ref, (q, k, gain), grads)
    qk_kernel("torch")
    got = tg.qk_norm_rope(q, k, gain.to(dtype), *rot.table(37, q.device, dtype))
    dgot = torch.autograd.grad(got, (q, k, gain), grads)
    for a, b in zip((*got, *dgot), (*ref, *dref)):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        assert _rel(a, b) <= tol, (_rel(a, b), a.shape)


def test_qk_norm_rope_traces_under_fullgraph_compile(tg, qk_kernel):
    """torch.compile(fullgraph=True) with Inductor calls the custom ops (fake impls, autograd formula, saved
    inputs) without a graph break, and the gradients are the plain ones."""
    qk_kernel("torch")
    rot = tg.Rotary(16, 8, 10000.0)
    q, k, gain, grads = _inputs(torch.float32)
    fused = torch.compile(lambda a, b, c: tg.qk_norm_rope(a, b, c, *rot.table(37, a.device, a.dtype)),
                          fullgraph=True, backend="inductor")
    got = torch.autograd.grad(fused(q, k, gain), (q, k, gain), grads)
    ref = torch.autograd.grad(_plain(tg, rot, q, k, gain), (q, k, gain), grads)
    for a, b in zip(got, ref):
        assert _rel(a, b) < 1e-5


def test_model_training_loss_same_with_fused_qk(tg, qk_kernel, monkeypatch):
    """The tiny model's training loss and gradients (the attention banks and q_gain, which the op reaches first)
    are the same through the fused op as through the plain path; eval and TTT's LoRA forward keep the plain path."""
    h = tg.Hyperparameters(TINY)
    torch.manual_seed(0)
    m = tg.build_model(h, torch.device("cpu"))
    with torch.no_grad():  # the output projections start at zero, which would leave q and k without gradients
        m.qo_bank.normal_(0.0, 0.1)
    params = (m.qo_bank, m.kv_bank, m.blocks[0].attn.q_gain)
    m.train()
    ref = loss_and_grads(m, params)
    qk_kernel("torch")
    got, calls = counted_training_and_eval(tg, m, params, "_qk_norm_rope_torch")
    assert calls == sum(map(len, m.schedule()))  # each layer of the training forward only
    lora = tg.BatchedLora(h, sum(map(len, m.schedule())), 1, torch.device("cpu"))
    lora.reset(torch.Generator().manual_seed(0))
    seen, real = [], tg._qk_norm_rope_torch
    monkeypatch.setattr(tg, "_qk_norm_rope_torch", lambda *a: (seen.append(1), real(*a))[1])
    m.train()  # as TTT trains its adapters
    with torch.no_grad():
        m.hidden_states(tiny_batch()[0], lora=lora)
    assert seen == []
    assert torch.allclose(got[0], ref[0], atol=1e-5)
    for a, b in zip(got[1:], ref[1:]):
        assert _rel(a, b) < 1e-4


def test_qk_kernel_settings(tg, qk_kernel):
    """QK_KERNEL: auto by default (since the tenth session's H100 run), the Triton kernels on CUDA, plain on the CPU
    or where head_dim is no power of two (one tile row per head); bad values named."""
    assert tg.Hyperparameters(TINY).qk_kernel == "auto"
    assert qk_kernel("auto") == "plain" and tg._QK["kernel"] == "plain"  # the CPU
    if tg.triton is not None:  # the choice reads only the device's type and head_dim: checked here without CUDA
        assert tg.select_qk_kernel(torch.device("cuda"), "auto", 64) == "triton" and tg._QK["kernel"] == "triton"
        assert tg.select_qk_kernel(torch.device("cuda"), "auto", 48) == "plain"
    with pytest.raises(ValueError, match="QK_KERNEL='fast' must be auto, plain, triton or torch"):
        tg.Hyperparameters({**TINY, "QK_KERNEL": "fast"})
    # refused at load, before any compile: MODEL_DIM 96 over 4 heads is a head of 24
    with pytest.raises(ValueError, match="QK_KERNEL=triton needs a power-of-two head_dim .*not 24"):
        tg.Hyperparameters({**TINY, "QK_KERNEL": "triton", "MODEL_DIM": "96", "EMBEDDING_DIM": "96"})
    assert tg.Hyperparameters({**TINY, "QK_KERNEL": "auto", "MODEL_DIM": "96", "EMBEDDING_DIM": "96"}).qk_kernel == "auto"
    if tg.triton is not None and tg._TRITON_INTERPRETED:
        with pytest.raises(ValueError, match="QK_KERNEL=triton needs a power-of-two head_dim .*not 48"):
            qk_kernel("triton", 48)
    if not tg._TRITON_INTERPRETED:
        with pytest.raises(RuntimeError, match="QK_KERNEL=triton needs"):
            qk_kernel("triton")


_INTERPRET = """
torch.manual_seed(0)
res = []
# the built-in launch, one that leaves a masked tail of rows, and one taller than all of k's rows
for rows, warps in ((16, 4), (64, 2), (512, 8)):
    tg._QK.update(fwd={"ROWS": rows, "num_warps": warps}, bwd={"ROWS": rows, "num_warps": warps})
    for dtype in (torch.float32, torch.bfloat16):
        for T, H, HK, D, R in ((37, 4, 2, 16, 8), (50, 8, 4, 64, 16), (9, 2, 1, 32, 32)):
            rot = tg.Rotary(D, R, 10000.0)
            cos, sin = rot.table(T, torch.device("cpu"), dtype)
            q, k = (3 * torch.randn(2, T, H, D)).to(dtype), torch.randn(2, T, HK, D).to(dtype)
            gain = (0.5 + torch.rand(H)).to(dtype)
            gq, gk = torch.randn_like(q), torch.randn_like(k)
            got = tg._qk_norm_rope_triton(q, k, gain, cos, sin) + tg._qk_norm_rope_bwd_triton(gq, gk, q, k, gain, cos, sin)
            ref = tg._qk_norm_rope_torch(q, k, gain, cos, sin) + tg._qk_norm_rope_bwd_torch(gq, gk, q, k, gain, cos, sin)
            assert all(a.dtype == b.dtype and a.shape == b.shape for a, b in zip(got, ref))
            res.append([rows, str(dtype), D, R] + [float((a.float() - b.float()).abs().max() / b.float().abs().max())
                                                   for a, b in zip(got, ref)])
print(json.dumps(res))
"""


@needs_triton
def test_qk_norm_rope_triton_kernels_under_interpreter():
    """Both Triton kernels under three launches (masked tails of rows; a partial rotation, the record's head of 64
    with 16 rotated, a full one; two sequences, so positions wrap at T) against the torch math, run by Triton's CPU
    interpreter in a fresh process: q, k, dq, dk and dq_gain to fp32 rounding, bf16 to a unit in its last place."""
    rows = run_interpreted(_INTERPRET)
    assert len(rows) == 18
    for launch, dtype, D, R, *errs in rows:
        bound = 1e-5 if dtype == "torch.float32" else 2 ** -7
        assert max(errs) < bound, (launch, dtype, D, R, errs)


@needs_triton
def test_qk_norm_rope_kernels_compile_for_hopper(tg, tmp_path):
    """Both kernels compile for sm_90 at the record's head (64, 16 rotated) and the built-in launch without a GPU,
    and keep their tiles in registers: Triton's own ptxas spills nothing."""
    for fn, which in ((tg._qk_norm_rope_fwd_kernel, "fwd"), (tg._qk_norm_rope_bwd_kernel, "bwd")):
        launch = tg._QK_TILE_DEFAULT[which]
        consts = {"D": 64, "HALF": 8, "BH": 8, "HAS_GAIN": True, "ROWS": launch["ROWS"]}
        k = compile_sm90(fn, consts, {"dot_ptr": "*fp32", "eps": "fp32"}, launch["num_warps"])
        assert "rsqrt.approx" in k.asm["ptx"], fn.__name__  # the norm's one reciprocal square root per row
        # nothing spills (asserted inside), and at most 96 registers a thread: five programs of 4 warps an SM
        assert ptxas_registers(k.asm["ptx"], tmp_path) <= 96, fn.__name__


@needs_triton
def test_trainer_losses_same_with_triton_qk_under_interpreter(tiny_data, tmp_path):
    """train_gpt.py on the tiny configuration, QK_KERNEL=triton under Triton's interpreter against the plain ops:
    the same training loss at every step, priming steps with and without looping included; the log says so."""
    run = {"ITERATIONS": "3", "WARMUP_STEPS": "1", "TRAIN_BATCH_TOKENS": "1024"}
    plain = train_losses_until(tiny_data, tmp_path / "plain", {**run, "QK_KERNEL": "plain"})
    fused = train_losses_until(tiny_data, tmp_path / "fused", {**run, "QK_KERNEL": "triton", "TRITON_INTERPRET": "1"})
    assert "qk_kernel:triton" in (tmp_path / "fused" / "stdout.txt").read_text().splitlines()
    assert sorted(fused) == sorted(plain) == [1, 2, 3]
    for step in plain:  # fp32 on a CPU: the order of the sums differs; 4 decimals logged
        assert abs(fused[step] - plain[step]) <= 2e-4, (step, fused, plain)
