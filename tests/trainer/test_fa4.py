"""The trainer's flash-attn-4 branch (ATTN_BACKEND=fa4, the custom op golf::fa4_varlen) on the CPU, through a
stand-in `flash_attn.cute` (tests/trainer/fa4_standin) with FA4 4.0.0b40's call signatures, routed to torch
math: the op's fake impl and autograd registration, its output and gradients against the trainer's SDPA path
(the CPU reference for packed attention; on a GPU benchmarks/kernel_checks.py compares the real FA4 with
torch's varlen kernel), torch.compile(fullgraph=True) through it, and a few training steps of the tiny model."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.test_model import TINY

STANDIN = Path(__file__).resolve().parent / "fa4_standin"


def _forget_flash_attn(monkeypatch) -> None:
    for name in [n for n in sys.modules if n == "flash_attn" or n.startswith("flash_attn.")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.fixture
def fa4(tg, monkeypatch):
    """The trainer's fa4 branch selected with the stand-in importable; the CPU default (SDPA) restored after."""
    monkeypatch.syspath_prepend(str(STANDIN))
    _forget_flash_attn(monkeypatch)
    from flash_attn.cute import interface
    # select_attention only looks at the device type to decide that FA4 may be tried
    assert tg.select_attention(torch.device("cuda"), "fa4") == "fa4"
    assert tg._ATTN["fa4"] is interface
    assert tg.attention_backend_label() == "fa4 (flash_attn.cute varlen, native GQA)"
    yield interface
    tg.select_attention(torch.device("cpu"))


def _packed_qkv(T=40, H=4, Hkv=2, D=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, T, h, D, generator=g).to(dtype).requires_grad_() for h in (H, Hkv, Hkv))
    # two empty segments at the end, as build_cu_seqlens pads cu_seqlens with the total length
    cu = torch.tensor([0, 7, 19, 33, T, T, T], dtype=torch.int32)
    return q, k, v, cu


def _attend_and_grads(tg, name, q, k, v, cu, max_seqlen=16, cu_used=None):
    tg._ATTN["name"] = name
    out = tg.attend(q, k, v, cu, max_seqlen, cu_used)
    w = torch.linspace(-1, 1, out.numel()).view_as(out).to(out.dtype)  # a gradient that is not all ones
    return (out, *torch.autograd.grad((out * w).sum(), (q, k, v)))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fa4_branch_matches_sdpa_path(tg, fa4, dtype, tol):
    """Packed GQA attention through golf::fa4_varlen (forward: FA4's flash_attn_varlen_func; backward: its
    _flash_attn_bwd from the saved lse) equals the SDPA path: output and the three gradients, K/V gradients
    with the K/V head count. Dense calls (no cu_seqlens) do not go through FA4."""
    q, k, v, cu = _packed_qkv(dtype=dtype)
    before = dict(fa4.CALLS)
    got = _attend_and_grads(tg, "fa4", q, k, v, cu)
    assert fa4.CALLS == {"fwd": before["fwd"] + 1, "bwd": before["bwd"] + 1}
    ref = _attend_and_grads(tg, "sdpa", q, k, v, cu)
    for a, b in zip(got, ref):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert (a.float() - b.float()).abs().max() <= tol * b.float().abs().max()
    tg._ATTN["name"] = "fa4"
    tg.attend(q[:, :12], k[:, :12], v[:, :12])
    assert fa4.CALLS["fwd"] == before["fwd"] + 1


def test_fa4_op_registration_checks(tg, fa4):
    """torch.library.opcheck: the schema, the fake (meta) impl's shapes and dtypes against the real call, the
    autograd registration and AOT dispatch, for golf::fa4_varlen and its backward op."""
    q, k, v, cu = _packed_qkv()
    q, k, v = q[0].detach().requires_grad_(), k[0].detach().requires_grad_(), v[0].detach().requires_grad_()
    used = torch.tensor(5)  # the entries in use, a CPU tensor as the loader counts them
    tg.select_attention(torch.device("cuda"), "fa4", cu_trim=True)
    for extra in ((), (used,)):
        torch.library.opcheck(torch.ops.golf.fa4_varlen.default, (q, k, v, cu, 16, *extra))
        out, lse = torch.ops.golf.fa4_varlen(q, k, v, cu, 16, *extra)
        assert lse.shape == (4, 40) and lse.dtype == torch.float32
        g = torch.randn_like(out)
        torch.library.opcheck(torch.ops.golf.fa4_varlen_bwd.default,
                              (g, q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), cu, 16, *extra))


@pytest.mark.parametrize("op", ["flash_varlen", "fa4_varlen"])
def test_varlen_ops_fake_impls_and_autograd(tg, op):
    """Both ops made by _register_varlen_op (golf::flash_varlen: torch's flash-2 kernel, CUDA only; golf::fa4_varlen)
    under FakeTensorMode, where no kernel runs: out like q, lse (H, T) fp32, and a backward through the
    registered autograd formula into the fake backward op gives K/V gradients with the K/V head count."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q = torch.empty(40, 4, 16, dtype=torch.bfloat16, requires_grad=True)
        k = torch.empty(40, 2, 16, dtype=torch.bfloat16, requires_grad=True)
        v = torch.empty(40, 2, 16, dtype=torch.bfloat16, requires_grad=True)
        cu = torch.empty(5, dtype=torch.int32)
        out, lse = getattr(torch.ops.golf, op)(q, k, v, cu, 16, torch.empty((), dtype=torch.int64))
        assert out.shape == q.shape and out.dtype == q.dtype
        assert lse.shape == (4, 40) and lse.dtype == torch.float32
        dq, dk, dv = torch.autograd.grad(out.float().sum(), (q, k, v))
    assert dq.shape == q.shape and dk.shape == dv.shape == k.shape


def test_fa4_branch_compiles_fullgraph(tg, fa4):
    """torch.compile(fullgraph=True) traces attend() through the custom op (no graph break; FA4's own autograd
    Function is never seen by dynamo) and the compiled gradients equal the eager SDPA ones."""
    q, k, v, cu = _packed_qkv()
    tg._ATTN["name"] = "fa4"
    fn = torch.compile(lambda a, b, c, s: tg.attend(a, b, c, s, 16).square().sum(), fullgraph=True,
                       backend="aot_eager")
    before = dict(fa4.CALLS)
    grads = torch.autograd.grad(fn(q, k, v, cu), (q, k, v))
    assert fa4.CALLS["fwd"] > before["fwd"] and fa4.CALLS["bwd"] > before["bwd"]
    tg._ATTN["name"] = "sdpa"
    ref = torch.autograd.grad(tg.attend(q, k, v, cu, 16).square().sum(), (q, k, v))
    for a, b in zip(grads, ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_cu_trim_hands_the_kernel_only_the_entries_in_use(tg, fa4):
    """ATTN_CU_TRIM on (the default): golf::fa4_varlen gives FA4's forward and backward cu_seqlens cut to the
    entries the caller counted (the loader's count; each padding entry is an empty sequence that costs FA4's
    backward a zero-filled tile), with the padded call's output and gradients. Off, or with no count (eval): the
    padded cu_seqlens."""
    q, k, v, cu = _packed_qkv()  # 7 entries, the last two padding
    used = torch.tensor(tg.cu_entries_in_use(cu.numpy()))
    assert int(used) == 5
    assert tg._ATTN["cu_trim"]  # the default (ATTN_CU_TRIM=1)
    tg.select_attention(torch.device("cuda"), "fa4", cu_trim=False)
    ref = _attend_and_grads(tg, "fa4", q, k, v, cu, cu_used=used)
    assert fa4.CU_ENTRIES == {"fwd": 7, "bwd": 7}
    tg.select_attention(torch.device("cuda"), "fa4", cu_trim=True)
    got = _attend_and_grads(tg, "fa4", q, k, v, cu, cu_used=used)
    assert fa4.CU_ENTRIES == {"fwd": 5, "bwd": 5}
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    _attend_and_grads(tg, "fa4", q, k, v, cu)
    assert fa4.CU_ENTRIES == {"fwd": 7, "bwd": 7}


def test_cu_trim_compiles_one_graph_for_every_count(tg, fa4):
    """The count is a tensor the op reads when it runs: torch.compile(fullgraph=True) makes one graph, and each
    call's kernels get that call's count (a Python int would be baked into the graph: a recompile per batch)."""
    from torch._dynamo.testing import CompileCounterWithBackend
    tg.select_attention(torch.device("cuda"), "fa4", cu_trim=True)
    q, k, v, cu = _packed_qkv()
    counter = CompileCounterWithBackend("aot_eager")
    fn = torch.compile(lambda a, b, c, s, n: tg.attend(a, b, c, s, 16, n).square().sum(), fullgraph=True,
                       backend=counter)
    for used in (5, 7, 6):
        torch.autograd.grad(fn(q, k, v, cu, torch.tensor(used)), (q, k, v))
        assert fa4.CU_ENTRIES == {"fwd": used, "bwd": used}
    assert counter.frame_count == 1


def _train(tg, model, forward, steps=3):
    ids = torch.randint(0, 512, (1, 48), generator=torch.Generator().manual_seed(1))
    cu = torch.tensor([0, 20, 48, 48], dtype=torch.int32)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = forward(ids, torch.roll(ids, -1, 1), cu, 32)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_fa4_tiny_model_trains_compiled_like_sdpa(tg, fa4):
    """The tiny model compiled with fullgraph=True through the fa4 branch trains: three SGD steps give the same
    losses as an identical copy trained eagerly through the SDPA path, and the losses move."""
    h = tg.Hyperparameters(TINY)
    torch.manual_seed(0)
    m = tg.build_model(h, torch.device("cpu"))
    with torch.no_grad():
        m.mlp_down_bank.normal_(0, 0.02)  # zero at init: give every block a non-trivial gradient path
    ref_model = copy.deepcopy(m)
    tg._ATTN["name"] = "fa4"
    got = _train(tg, m, torch.compile(m, fullgraph=True, backend="aot_eager"))
    assert fa4.CALLS["bwd"] > 0
    tg._ATTN["name"] = "sdpa"
    ref = _train(tg, ref_model, ref_model)
    assert got == pytest.approx(ref, abs=1e-4)
    assert ref[-1] < ref[0]


def test_fa4_is_what_auto_picks_on_hopper(tg, monkeypatch):
    """ATTN_BACKEND=fa4 is a valid choice; auto picks FA4 when it imports on Hopper or newer (measured faster
    there), never on an older GPU, and falls back to the varlen path when it does not import; without CUDA fa4
    falls back to SDPA like the other GPU kernels; asked for on CUDA without the package, a clear error."""
    assert tg.Hyperparameters({**TINY, "ATTN_BACKEND": "fa4"}).attn_backend == "fa4"
    with pytest.raises(ValueError, match="ATTN_BACKEND='fa5' must be auto, fa3, fa4, varlen, varlen_gqa or sdpa"):
        tg.Hyperparameters({**TINY, "ATTN_BACKEND": "fa5"})
    monkeypatch.setitem(sys.modules, "flash_attn_interface", None)  # no FA3, which auto would prefer
    try:
        assert tg.select_attention(torch.device("cpu"), "fa4") == "sdpa"
        _forget_flash_attn(monkeypatch)
        monkeypatch.setitem(sys.modules, "flash_attn", None)  # as if not installed
        with pytest.raises(RuntimeError, match="ATTN_BACKEND=fa4 but flash_attn.cute is not importable"):
            tg.select_attention(torch.device("cuda"), "fa4")
        monkeypatch.setattr(tg, "_sm90_or_newer", lambda device: True)
        assert tg.select_attention(torch.device("cuda"), "auto") != "fa4"  # not importable: the varlen path
        monkeypatch.delitem(sys.modules, "flash_attn")
        monkeypatch.syspath_prepend(str(STANDIN))
        _forget_flash_attn(monkeypatch)
        assert tg.select_attention(torch.device("cuda"), "auto") == "fa4"
        monkeypatch.setattr(tg, "_sm90_or_newer", lambda device: False)  # an A100
        assert tg.select_attention(torch.device("cuda"), "auto") != "fa4"
    finally:
        tg.select_attention(torch.device("cpu"))


def test_priming_compiles_both_sides_of_fa4s_sequence_count_switch_at_the_first_batchs_length(tg, tmp_path):
    """Compile priming (compiled=True), before and with looping: three steps with the bucket's every entry counted,
    then one with only its sequences. flash-attn-4 compiles other kernels above 256 sequences and trimmed batches
    (ATTN_CU_TRIM) may land on either side, so both kernels compile there, not in a timed step. The bucket is the
    first batch's cu_seqlens length, the graph training runs, not a fixed one. The warm-up steps after it pass the
    loader's own counts."""
    import numpy as np
    from tests.trainer.test_data import write_shard
    h = tg.Hyperparameters({**TINY, "WARMUP_STEPS": "1", "TRAIN_SEQ_LEN": "16"})
    torch.manual_seed(0)
    model = tg.build_model(h, torch.device("cpu"))
    opt = tg.Optimizers(model, h, 0, 1, torch.device("cpu"))
    rng = np.random.default_rng(0)
    toks = [t for _ in range(300) for t in [1, *rng.integers(4, 500, size=int(rng.integers(1, 12)))]]
    shard = write_shard(tmp_path / "fineweb_train_000000.bin", toks)
    # padded to multiples of 8 (of CU_PAD_COMPILED = 512 in training), so that batches differ in length
    make_loader = lambda: tg.DocumentPackingLoader([shard], 64, 16, 0, 1, torch.device("cpu"), 8)
    first = make_loader().next_batch()[2].size(0)
    seen = []

    def model_fn(x, y, cu, max_seqlen, cu_used=None):
        seen.append((model.looping, cu.size(0), int(cu_used), tg.cu_entries_in_use(cu.numpy())))
        return model(x, y, cu, max_seqlen, cu_used=cu_used)

    tg.prime_compile(h, model, model_fn, opt, make_loader, lambda msg: None, compiled=True)
    priming = [(looping, first, used, 5) for looping in (False, True) for used in (first,) * 3 + (5,)]
    assert seen[:8] == priming  # 64 tokens cut at 16: 4 sequences, 5 entries
    warmup = seen[8:]
    assert len(warmup) == 2 * h.grad_accum_steps and [w[0] for w in warmup] == [False] * 8 + [True] * 8
    assert all(used == in_use and size % 8 == 0 for _, size, used, in_use in warmup)
    assert any(used > 5 for _, _, used, _ in warmup)  # the short documents: more sequences than the priming's
    assert first != tg.CU_PAD_COMPILED and first > 8


def test_the_compiled_backward_makes_no_copy_of_the_kernels_gradients(tg, fa4):
    """attend hands flash-attn-4 q, k, v without their batch dimension through views: the backward graph that
    torch.compile gives Inductor holds no select_backward, which Inductor lowers as a kernel that writes the
    whole of dq (or dk, dv) again (10.8 ms of an H100's step for dq and dk, benchmarks/README.md)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    graphs = []

    def keep(gm, _inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    q, k, v, cu = _packed_qkv()
    fn = torch.compile(lambda a, b, c: tg.attend(a, b, c, cu, 16).square().sum(), fullgraph=True,
                       backend=aot_autograd(fw_compiler=keep, bw_compiler=keep))
    torch.autograd.grad(fn(q, k, v), (q, k, v))
    forward, backward = graphs
    ops = {str(n.target) for n in backward.graph.nodes if n.op == "call_function"}
    assert "golf.fa4_varlen_bwd.default" in ops
    assert not any("select" in op for op in ops), sorted(ops)
    with pytest.raises(RuntimeError):  # a batch of more than one is no packed buffer
        tg.unbatched(torch.zeros(2, 3, 4))
