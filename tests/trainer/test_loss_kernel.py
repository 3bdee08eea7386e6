"""The fused soft-capped cross-entropy of train_gpt.py (LOSS_KERNEL, section FUSED SOFT-CAPPED LOSS) on the CPU:
the custom ops with torch math against F.cross_entropy of c·tanh(logits / c), the Triton kernels under Triton's
interpreter against that math, both kernels compiled for sm_90 at the record's vocabulary without a GPU, a
fullgraph compile through the ops, and the tiny model's training loss and gradients against the plain path.
Its speed is the GPU's to show (benchmarks/README.md)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.trainer.conftest import counted_training_and_eval, loss_and_grads, run_interpreted, train_losses_until
from tests.trainer.test_kernels import compile_sm90, needs_triton, ptxas_registers
from tests.trainer.test_model import TINY

CAP = 30.0


@pytest.fixture
def loss_kernel(tg):
    """Select a loss kernel for one test and restore the plain path after it."""
    yield lambda name: tg.select_loss_kernel(torch.device("cpu"), name)
    tg.select_loss_kernel(torch.device("cpu"), "plain")


def _reference(x, y):
    return F.cross_entropy(CAP * torch.tanh(x.float() / CAP), y)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-6)])
def test_softcap_ce_torch_ops_match_cross_entropy(tg, loss_kernel, dtype, tol):
    """golf::softcap_ce and its backward (torch math inside) give F.cross_entropy's mean loss over the
    soft-capped logits and its gradient, in the logits' dtype; logits large enough for the cap to bite."""
    loss_kernel("torch")
    g = torch.Generator().manual_seed(0)
    x = (40 * torch.randn(37, 500, generator=g)).to(dtype).requires_grad_()
    y = torch.randint(0, 500, (37,), generator=g)
    got = tg.softcap_ce_mean(x, y, CAP)
    (dx,) = torch.autograd.grad(got, x)
    ref = _reference(x, y)
    (dref,) = torch.autograd.grad(ref, x)
    assert dx.dtype == dtype and got.dtype == torch.float32
    assert abs(got.item() - ref.item()) <= tol * abs(ref.item())
    assert (dx.float() - dref.float()).abs().max() <= 1e-2 * dref.float().abs().max()


def test_softcap_ce_traces_under_fullgraph_compile(tg, loss_kernel):
    """torch.compile(fullgraph=True) with Inductor, as the trainer compiles on a GPU, calls the custom ops (fake
    impls, autograd formula, saved logits) without a graph break, and the gradient is the plain one."""
    loss_kernel("torch")
    x = torch.randn(24, 64, requires_grad=True)
    y = torch.randint(0, 64, (24,))
    fn = torch.compile(lambda a, b: tg.softcap_ce_mean(a[None], b[None], CAP), fullgraph=True, backend="inductor")
    (dx,) = torch.autograd.grad(fn(x, y), x)
    (dref,) = torch.autograd.grad(_reference(x, y), x)
    assert torch.allclose(dx, dref, atol=1e-7)


def test_model_training_loss_same_with_fused_loss(tg, loss_kernel):
    """The tiny model's training loss and gradients (the tied embedding, which the loss reaches first, and an
    attention bank) are the same through the fused ops as through the plain path; eval keeps the plain path."""
    h = tg.Hyperparameters(TINY)
    torch.manual_seed(0)
    m = tg.build_model(h, torch.device("cpu"))
    params = (m.tok_emb.weight, m.qo_bank)
    m.train()
    ref = loss_and_grads(m, params)
    loss_kernel("torch")
    got, calls = counted_training_and_eval(tg, m, params, "_softcap_ce_torch")
    assert calls == 1  # the training forward only
    assert torch.allclose(got[0], ref[0], atol=1e-6)
    for a, b in zip(got[1:], ref[1:]):
        assert torch.allclose(a.float(), b.float(), atol=1e-6, rtol=1e-3)


def test_loss_kernel_settings(tg, loss_kernel):
    assert tg.Hyperparameters(TINY).loss_kernel == "auto"
    assert loss_kernel("auto") == "plain" and tg._LOSS["kernel"] == "plain"  # the CPU
    if tg.triton is not None:  # the choice reads only the device's type: no CUDA call, so it is checked here
        assert tg.select_loss_kernel(torch.device("cuda"), "auto") == "triton" and tg._LOSS["kernel"] == "triton"
    with pytest.raises(ValueError, match="LOSS_KERNEL='fast' must be auto, plain, triton or torch"):
        tg.Hyperparameters({**TINY, "LOSS_KERNEL": "fast"})
    if not tg._TRITON_INTERPRETED:
        with pytest.raises(RuntimeError, match="LOSS_KERNEL=triton needs"):
            loss_kernel("triton")


def test_loss_tiles_and_cap_settings(tg, loss_kernel):
    """LOSS_TILE_*: the built-in launches or ones set, each bad value named. The kernels sum e^z without a running
    maximum, so a soft cap above LOSS_TRITON_MAX_CAP is refused for triton and sends auto to Inductor's loss."""
    h = tg.Hyperparameters(TINY)
    assert (h.loss_tile_fwd, h.loss_tile_bwd) == ("", "")
    tg.select_loss_kernel(torch.device("cpu"), "torch", "", "8,512,2")
    assert tg._LOSS["fwd"] == {"ROWS": 1, "BLOCK_V": 1024, "num_warps": 4}
    assert tg._LOSS["bwd"] == {"ROWS": 8, "BLOCK_V": 512, "num_warps": 2}
    if tg.triton is not None:  # the choice reads only the device's type and the cap
        assert tg.select_loss_kernel(torch.device("cuda"), "auto", cap=60.0) == "triton"
        assert tg.select_loss_kernel(torch.device("cuda"), "auto", cap=61.0) == "plain"
    assert tg.Hyperparameters({**TINY, "LOSS_KERNEL": "triton", "LOGIT_SOFTCAP": "60"}).loss_kernel == "triton"
    with pytest.raises(ValueError, match="LOSS_KERNEL=triton needs LOGIT_SOFTCAP <= 60.0 .*not 61.0"):
        tg.Hyperparameters({**TINY, "LOSS_KERNEL": "triton", "LOGIT_SOFTCAP": "61"})
    with pytest.raises(ValueError, match="the Triton loss needs 0 < LOGIT_SOFTCAP <= 60.0, not 61.0"):
        tg._softcap_ce_triton(torch.zeros(2, 16), torch.zeros(2, dtype=torch.long), 61.0)
    for bad in ("4,1024", "3,1024,4", "4,8,4", "64,1024,4", "1,1024,32", "a,b,c"):
        with pytest.raises(ValueError, match=f"LOSS_TILE_BWD='{bad}' must be ROWS,BLOCK_V,num_warps"):
            tg.Hyperparameters({**TINY, "LOSS_TILE_BWD": bad})


_INTERPRET = """
torch.manual_seed(0)
res = []
# the built-in launches, and tiles that cut rows and columns unevenly, wider than the vocabulary or taller than the batch
for fwd, bwd in (("", ""), ("4,128,4", "2,64,4"), ("1,8192,8", "8,512,4"), ("16,512,8", "1,512,2")):
    tg.select_loss_kernel(torch.device("cpu"), "triton", fwd, bwd)
    for dtype, scale in ((torch.float32, 40), (torch.bfloat16, 40), (torch.float32, 4), (torch.bfloat16, 4)):
        for N, V in ((37, 512), (5, 500), (3, 8192), (8, 1024)):
            x = (scale * torch.randn(N, V)).to(dtype); y = torch.randint(0, V, (N,)); g = torch.rand(N)
            nll, lse = tg._softcap_ce_triton(x, y, 30.0)
            nll_r, lse_r = tg._softcap_ce_torch(x, y, 30.0)
            dx, dx_r = tg._softcap_ce_bwd_triton(g, x, y, lse_r, 30.0), tg._softcap_ce_bwd_torch(g, x, y, lse_r, 30.0)
            assert dx.dtype == dtype
            res.append([f"{fwd} {bwd}", str(dtype), V, float((nll - nll_r).abs().max()),
                        float((lse - lse_r).abs().max()),
                        float((dx.float() - dx_r.float()).abs().max() / dx_r.float().abs().max())])
print(json.dumps(res))
"""


@needs_triton
def test_softcap_ce_triton_kernels_under_interpreter():
    """Both Triton kernels under several launches (row and column tiles, even and with masked tails of rows and of a
    vocabulary that is no power of two; the target's logit, bf16 loads and stores) against
    the torch math, run by Triton's CPU interpreter in a fresh process, on logits where the cap bites (40·N(0,1):
    most t near ±1) and where it does not (4·N(0,1), as trained): nll and lse to 1e-4 (the kernels' tanh goes
    through exp, the sum of e^z has no running maximum), dlogits to rounding of the logits' dtype."""
    rows = run_interpreted(_INTERPRET)
    assert len(rows) == 64
    for launch, dtype, V, nll_err, lse_err, dx_err in rows:
        assert nll_err < 1e-4 and lse_err < 1e-4, (launch, dtype, V, nll_err, lse_err)
        assert dx_err < (1e-5 if dtype == "torch.float32" else 2 ** -7), (launch, dtype, V, dx_err)


@needs_triton
def test_softcap_ce_kernels_compile_for_hopper(tg, tmp_path):
    """Both kernels compile for sm_90 at the record's vocabulary and their built-in launches without a GPU, and
    keep their tiles in registers: Triton's own ptxas, asked for its resource report, spills nothing."""
    types = {"y_ptr": "*i64", "nll_ptr": "*fp32", "lse_ptr": "*fp32", "g_ptr": "*fp32", "cap": "fp32"}
    for fn, which in ((tg._softcap_ce_fwd_kernel, "fwd"), (tg._softcap_ce_bwd_kernel, "bwd")):
        launch = tg._LOSS_TILE_DEFAULT[which]
        consts = {"V": 8192, "ROWS": launch["ROWS"], "BLOCK_V": launch["BLOCK_V"], "EVEN": True}
        k = compile_sm90(fn, consts, types, launch["num_warps"])
        assert "ex2.approx" in k.asm["ptx"], fn.__name__  # tl.exp: the SFU's exp2, once per element and pass
        ptxas_registers(k.asm["ptx"], tmp_path)  # asserts that nothing spills


@needs_triton
def test_trainer_losses_same_with_triton_loss_under_interpreter(tiny_data, tmp_path):
    """train_gpt.py on the tiny configuration, LOSS_KERNEL=triton (a launch of its own for the forward) under
    Triton's interpreter against the plain loss: the same training loss at every step, priming steps with and
    without looping included, and the log says which launches ran."""
    run = {"ITERATIONS": "3", "WARMUP_STEPS": "1", "TRAIN_BATCH_TOKENS": "1024"}
    plain = train_losses_until(tiny_data, tmp_path / "plain", {**run, "LOSS_KERNEL": "plain"})
    tiled = train_losses_until(tiny_data, tmp_path / "tiled", {**run, "LOSS_KERNEL": "triton",
                                                               "LOSS_TILE_FWD": "2,256,4", "TRITON_INTERPRET": "1"})
    log = (tmp_path / "tiled" / "stdout.txt").read_text().splitlines()
    assert "loss_kernel:triton" in log and "loss_tiles:fwd=2,256,4 bwd=1,4096,8" in log
    assert sorted(tiled) == sorted(plain) == [1, 2, 3]
    for step in plain:  # fp32 on a CPU: the tanh through exp and the order of the sums differ; 4 decimals logged
        assert abs(tiled[step] - plain[step]) <= 2e-4, (step, tiled, plain)
