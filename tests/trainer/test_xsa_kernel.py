"""The fused XSA of train_gpt.py (XSA_KERNEL, section FUSED XSA) on the CPU: the custom op with torch math against
the plain ops' autograd, the Triton kernels under Triton's interpreter against that math, both kernels compiled for
sm_90 without a GPU, a fullgraph compile through the op, and the tiny model's and the trainer's training losses
against the plain path. Its speed is the GPU's to show (benchmarks/README.md)."""
from __future__ import annotations

import pytest
import torch

from tests.trainer.conftest import (counted_training_and_eval, loss_and_grads, run_interpreted, tiny_batch,
                                    train_losses_until)
from tests.trainer.test_kernels import compile_sm90, needs_triton, ptxas_registers
from tests.trainer.test_model import TINY


@pytest.fixture
def xsa_kernel(tg):
    """Select an XSA kernel for one test and restore the plain path after it."""
    yield lambda name, head_dim=64: tg.select_xsa_kernel(torch.device("cpu"), name, head_dim)
    tg.select_xsa_kernel(torch.device("cpu"), "plain")


def _inputs(dtype, T=37, H=4, HK=2, D=16, seed=0):
    """y, v and y's gradient; two of v's rows are below F.normalize's eps (one zero), where it divides by eps."""
    g = torch.Generator().manual_seed(seed)
    y = (3 * torch.randn(2, T, H, D, generator=g)).to(dtype)
    v = torch.randn(2, T, HK, D, generator=g)
    v[0, 3, HK - 1] = 0.0
    v[1, 5, 0] *= 1e-14
    return y.requires_grad_(), v.to(dtype).requires_grad_(), torch.randn(2, T, H, D, generator=g).to(dtype)


def _rel(a, b):
    """The largest difference of a row (head_dim) against that row's largest value: the rows of v below
    normalize's eps have gradients 1e12 times the others', which would hide any error elsewhere."""
    a, b = a.detach().float(), b.detach().float()
    return float(((a - b).abs().amax(-1) / b.abs().amax(-1).clamp_min(1e-30)).max())


def _plain_and_op(tg, xsa_kernel, y, v, go):
    """(output, dy, dv) of the plain ops and of golf::xsa with torch math on the same inputs."""
    xsa_kernel("plain")
    ref = tg.xsa_plain(y, v)
    ref = (ref, *torch.autograd.grad(ref, (y, v), go))
    assert xsa_kernel("torch") == "torch"
    got = tg.xsa(y, v)
    return ref, (got, *torch.autograd.grad(got, (y, v), go))


@pytest.mark.parametrize("H,HK", [(4, 2), (4, 4), (8, 1)])  # the record's two heads a group, none, eight
def test_xsa_torch_op_matches_plain_ops(tg, xsa_kernel, H, HK):
    """golf::xsa with torch math: the output and the gradients of y and v of the plain ops' autograd, v's rows
    below normalize's eps included: in fp32 to rounding; in bf16 at least as close to the fp32 result on the same
    inputs as the plain ops in bf16 are (they round after every op, the op once)."""
    y, v, go = _inputs(torch.bfloat16, H=H, HK=HK)
    exact = [t.detach().float().requires_grad_() for t in (y, v)]
    ref, got = _plain_and_op(tg, xsa_kernel, *exact, go.float())
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
        assert _rel(a, b) <= 1e-6, (_rel(a, b), a.shape)
    assert _rel(got[0], exact[0]) > 0.1  # the projection changed y
    ref16, got16 = _plain_and_op(tg, xsa_kernel, y, v, go)
    for a, b, e in zip(got16, ref16, ref):
        assert a.dtype == b.dtype == torch.bfloat16 and a.shape == b.shape
        assert _rel(a, e) <= _rel(b, e), (_rel(a, e), _rel(b, e), a.shape)


@pytest.mark.parametrize("transposed", [False, True])
def test_xsa_traces_under_fullgraph_compile(tg, xsa_kernel, transposed):
    """torch.compile(fullgraph=True) with Inductor calls the custom ops (fake impls, autograd formula, saved
    inputs) without a graph break, and the output and gradients are the plain ones, also for a y laid out
    (B, H, T, D) as attend's SDPA path returns it."""
    xsa_kernel("torch")
    y, v, go = _inputs(torch.float32)
    if transposed:
        y = y.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
        assert not y.is_contiguous()
    # a sum over head_dim after the op: Inductor reads the op's output inside its own kernel, by the layout it expects
    fused = torch.compile(lambda a, b: (tg.xsa(a, b) * 2.0).sum(-1), fullgraph=True, backend="inductor")
    out, go = fused(y, v), go[..., 0]
    got = (out, *torch.autograd.grad(out, (y, v), go))
    ref = (tg.xsa_plain(y, v) * 2.0).sum(-1)
    ref = (ref, *torch.autograd.grad(ref, (y, v), go))
    for a, b in zip(got, ref):
        assert _rel(a, b) < 1e-5


def test_xsa_compiled_without_autograd_takes_a_transposed_y(tg, xsa_kernel):
    """A forward-only graph (as evaluation compiles one) of the op on a y laid out (B, H, T, D), as attend's SDPA path
    returns it: xsa hands the op contiguous tensors, since Inductor expects the op's output laid out as its input."""
    xsa_kernel("torch")
    y, v, _ = (t.detach() for t in _inputs(torch.float32))
    y = y.transpose(1, 2).contiguous().transpose(1, 2)
    fused = torch.compile(lambda a, b: (tg.xsa(a, b) * 2.0).sum(-1), fullgraph=True, backend="inductor")
    assert _rel(fused(y, v), (tg.xsa_plain(y, v) * 2.0).sum(-1)) < 1e-5


def test_model_training_loss_same_with_fused_xsa(tg, xsa_kernel, monkeypatch):
    """The tiny model's training loss and gradients (the value and output banks, which XSA reaches first) are the
    same through the fused op as through the plain path; eval and TTT's LoRA forward keep the plain path."""
    h = tg.Hyperparameters(TINY)
    torch.manual_seed(0)
    m = tg.build_model(h, torch.device("cpu"))
    with torch.no_grad():  # the output projections start at zero, which would leave XSA's inputs without gradients
        m.qo_bank.normal_(0.0, 0.1)
    params = (m.qo_bank, m.kv_bank)
    m.train()
    ref = loss_and_grads(m, params)
    xsa_kernel("torch")
    got, calls = counted_training_and_eval(tg, m, params, "_xsa_torch")
    xsa_layers = sum(m.blocks[l].xsa for layers in m.schedule() for l in layers)
    assert calls == xsa_layers > 0  # each XSA layer of the training forward only
    lora = tg.BatchedLora(h, sum(map(len, m.schedule())), 1, torch.device("cpu"))
    lora.reset(torch.Generator().manual_seed(0))
    seen, real = [], tg._xsa_torch
    monkeypatch.setattr(tg, "_xsa_torch", lambda *a: (seen.append(1), real(*a))[1])
    m.train()  # as TTT trains its adapters
    with torch.no_grad():
        m.hidden_states(tiny_batch()[0], lora=lora)
    assert seen == []
    assert torch.allclose(got[0], ref[0], atol=1e-5)
    for a, b in zip(got[1:], ref[1:]):
        assert _rel(a, b) < 1e-4


def test_xsa_kernel_settings(tg, xsa_kernel):
    """XSA_KERNEL: plain by default until an H100 has timed the kernels; auto takes them on CUDA where head_dim is a
    power of two, plain on the CPU; bad values named."""
    assert tg.Hyperparameters(TINY).xsa_kernel == "plain"
    assert xsa_kernel("auto") == "plain" and tg._XSA["kernel"] == "plain"  # the CPU
    if tg.triton is not None:  # the choice reads only the device's type and head_dim: checked here without CUDA
        assert tg.select_xsa_kernel(torch.device("cuda"), "auto", 64) == "triton" and tg._XSA["kernel"] == "triton"
        assert tg.select_xsa_kernel(torch.device("cuda"), "auto", 48) == "plain"
    with pytest.raises(ValueError, match="XSA_KERNEL='fast' must be auto, plain, triton or torch"):
        tg.Hyperparameters({**TINY, "XSA_KERNEL": "fast"})
    with pytest.raises(ValueError, match="XSA_KERNEL=triton needs a power-of-two head_dim .*not 24"):
        tg.Hyperparameters({**TINY, "XSA_KERNEL": "triton", "MODEL_DIM": "96", "EMBEDDING_DIM": "96"})
    if not tg._TRITON_INTERPRETED:
        with pytest.raises(RuntimeError, match="XSA_KERNEL=triton needs"):
            xsa_kernel("triton")


_INTERPRET = """
torch.manual_seed(0)
res = []
# the built-in launch, one that leaves a masked tail of kv rows, and one taller than all of them
for rows, warps in ((16, 4), (64, 2), (512, 8)):
    tg._XSA.update(fwd={"ROWS": rows, "num_warps": warps}, bwd={"ROWS": rows, "num_warps": warps})
    for dtype in (torch.float32, torch.bfloat16):
        for T, H, HK, D in ((37, 4, 2, 16), (50, 8, 4, 64), (9, 8, 1, 32)):
            y, v = (3 * torch.randn(2, T, H, D)).to(dtype), torch.randn(2, T, HK, D)
            v[0, 3, 0] = 0.0  # normalize's clamp: a zero row and one below its eps
            v[1, 2, HK - 1] *= 1e-14
            v, go = v.to(dtype), torch.randn(2, T, H, D).to(dtype)
            got = (tg._xsa_triton(y, v),) + tg._xsa_bwd_triton(go, y, v)
            ref = (tg._xsa_torch(y, v),) + tg._xsa_bwd_torch(go, y, v)
            assert all(a.dtype == b.dtype and a.shape == b.shape for a, b in zip(got, ref))
            res.append([rows, str(dtype), H, HK, D] + [  # per row, as _rel
                float(((a.float() - b.float()).abs().amax(-1) / b.float().abs().amax(-1).clamp_min(1e-30)).max())
                for a, b in zip(got, ref)])
print(json.dumps(res))
"""


@needs_triton
def test_xsa_triton_kernels_under_interpreter():
    """Both Triton kernels under three launches (masked tails of kv rows; groups of two, eight and one head; v's rows
    below normalize's eps) against the torch math, run by Triton's CPU interpreter in a fresh process: y's
    projection, dy and dv to fp32 rounding, bf16 to a unit in its last place."""
    rows = run_interpreted(_INTERPRET)
    assert len(rows) == 18
    for launch, dtype, H, HK, D, *errs in rows:
        bound = 1e-5 if dtype == "torch.float32" else 2 ** -7
        assert max(errs) < bound, (launch, dtype, H, HK, D, errs)


@needs_triton
def test_xsa_kernels_compile_for_hopper(tg, tmp_path):
    """Both kernels compile for sm_90 at the record's heads (8 of 64 in groups of two) and the built-in launch
    without a GPU, and keep their tiles in registers: Triton's own ptxas spills nothing."""
    for fn, which in ((tg._xsa_fwd_kernel, "fwd"), (tg._xsa_bwd_kernel, "bwd")):
        launch = tg._XSA_TILE_DEFAULT[which]
        k = compile_sm90(fn, {"D": 64, "G": 2, "ROWS": launch["ROWS"]}, {"eps": "fp32"}, launch["num_warps"])
        assert "sqrt" in k.asm["ptx"], fn.__name__  # |v| per row
        # nothing spills (asserted inside), and at most 80 registers a thread: at least 24 warps an SM
        assert ptxas_registers(k.asm["ptx"], tmp_path) <= 80, fn.__name__


@needs_triton
def test_trainer_losses_same_with_triton_xsa_under_interpreter(tiny_data, tmp_path):
    """train_gpt.py on the tiny configuration, XSA_KERNEL=triton under Triton's interpreter against the plain ops:
    the same training loss at every step, priming steps with and without looping included; the log says so."""
    run = {"ITERATIONS": "3", "WARMUP_STEPS": "1", "TRAIN_BATCH_TOKENS": "1024"}
    plain = train_losses_until(tiny_data, tmp_path / "plain", {**run, "XSA_KERNEL": "plain"})
    fused = train_losses_until(tiny_data, tmp_path / "fused", {**run, "XSA_KERNEL": "triton", "TRITON_INTERPRET": "1"})
    assert "xsa_kernel:triton" in (tmp_path / "fused" / "stdout.txt").read_text().splitlines()
    assert sorted(fused) == sorted(plain) == [1, 2, 3]
    for step in plain:  # fp32 on a CPU: the order of the sums differs; 4 decimals logged
        assert abs(fused[step] - plain[step]) <= 2e-4, (step, fused, plain)
