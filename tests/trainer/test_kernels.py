"""Kernel paths of train_gpt.py on the CPU: the fused MLP custom ops (torch fallback; the Triton kernels
under Triton's interpreter where Triton is installed), and the FA3 branch of `attend` through a stand-in
`flash_attn_interface` (tests/trainer/fa3_standin) with FA3's call signature, routed to torch kernels.
The same checks run on a GPU with the real kernels in benchmarks/kernel_checks.py."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.trainer.conftest import TRAINER, loss_and_grads, run_interpreted, tiny_batch, train_losses_until
from tests.trainer.test_model import TINY

STANDIN = Path(__file__).resolve().parent / "fa3_standin"


def _reference_mlp(x, w_up, w_down):
    return F.linear(F.leaky_relu(F.linear(x, w_up), 0.5).square(), w_down)


def _mlp_inputs(dtype, M=37, K=32, N=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g).to(dtype).requires_grad_()
    w_up = (torch.randn(N, K, generator=g) / K ** 0.5).to(dtype).requires_grad_()
    w_down = (torch.randn(K, N, generator=g) / N ** 0.5).to(dtype).requires_grad_()
    return x, w_up, w_down


@pytest.fixture
def mlp_kernel(tg):
    """Select an MLP kernel (and MLP_SAVE_SIGNS) for one test and restore the plain path after it."""
    yield lambda name, signs=False: tg.select_mlp_kernel(torch.device("cpu"), name, save_signs=signs)
    tg.select_mlp_kernel(torch.device("cpu"), "plain")


@pytest.mark.parametrize("signs", [False, True], ids=["pre", "signs"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_fused_mlp_torch_fallback_matches_reference(tg, mlp_kernel, dtype, tol, signs):
    """Output and all three gradients of golf::mlp_fused (torch math inside) equal the plain ops', whether the
    backward gets pre or, with MLP_SAVE_SIGNS, post and pre's signs (phi'(pre) = 2 sqrt(post) or -sqrt(post))."""
    assert mlp_kernel("torch", signs) == "torch"
    x, w_up, w_down = _mlp_inputs(dtype)
    g = torch.randn(x.size(0), w_down.size(0)).to(dtype)
    out = tg.fused_mlp(x, w_up, w_down)
    grads = torch.autograd.grad(out, (x, w_up, w_down), g)
    ref = _reference_mlp(x, w_up, w_down)
    ref_grads = torch.autograd.grad(ref, (x, w_up, w_down), g)
    scale = ref.float().abs().max()
    assert (out.float() - ref.float()).abs().max() <= tol * scale
    for a, b in zip(grads, ref_grads):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert (a.float() - b.float()).abs().max() <= tol * b.float().abs().max()


@pytest.mark.parametrize("signs", [False, True], ids=["pre", "signs"])
def test_fused_mlp_traces_under_fullgraph_compile(tg, mlp_kernel, signs):
    """torch.compile(fullgraph=True) goes through the custom ops (fake impls, autograd formula; with
    MLP_SAVE_SIGNS a uint8 saved tensor) without a graph break, and the compiled gradients equal the eager ones."""
    mlp_kernel("torch", signs)
    x, w_up, w_down = _mlp_inputs(torch.float32, M=24)
    fn = torch.compile(lambda a, u, d: tg.fused_mlp(a[None], u, d).sum(), fullgraph=True, backend="aot_eager")
    grads = torch.autograd.grad(fn(x, w_up, w_down), (x, w_up, w_down))
    ref = torch.autograd.grad(_reference_mlp(x, w_up, w_down).sum(), (x, w_up, w_down))
    for a, b in zip(grads, ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_signs_pack_eight_columns_to_a_byte(tg):
    """pack_signs: bit c % 8 of byte c // 8 in each row says pre[m, c] > 0 (zero counts as not positive), a
    ragged last byte padded with zeros; unpack_signs reads back exactly the booleans."""
    pre = torch.tensor([[1.0, -1.0, 0.0, 2.0, -0.5, 3.0, 4.0, -2.0, 5.0, -1.0, 0.5],
                        [-1.0] * 10 + [1.0]])
    signs = tg.pack_signs(pre)
    assert signs.dtype == torch.uint8 and signs.tolist() == [[0b01101001, 0b101], [0, 0b100]]
    pre = torch.randn(37, 2048, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tg.unpack_signs(tg.pack_signs(pre), 2048), pre > 0)
    assert tg.pack_signs(pre).shape == (37, 256)  # a sixteenth of pre's bf16 bytes


def test_model_training_step_same_with_fused_mlp(tg, mlp_kernel):
    """A training-mode loss and gradients of the tiny model are the same with the fused ops as with the
    plain ones; eval mode (and with it Hessian collection) always takes the plain path."""
    h = tg.Hyperparameters(TINY)
    torch.manual_seed(0)
    m = tg.build_model(h, torch.device("cpu"))
    with torch.no_grad():
        m.mlp_down_bank.normal_(0, 0.02)  # zero at init: make the MLP's gradients non-trivial
    m.train()
    mlp_kernel("plain")
    ref = loss_and_grads(m, (m.mlp_up_bank, m.qo_bank))
    mlp_kernel("torch")
    got = loss_and_grads(m, (m.mlp_up_bank, m.qo_bank))
    assert torch.allclose(got[0], ref[0], atol=1e-5)
    for a, b in zip(got[1:], ref[1:]):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-3)
    m.eval()
    calls = []
    m.hessian_tap = lambda name, x: calls.append(name)
    with torch.no_grad():
        m.forward_logits(tiny_batch()[0])
    assert "blocks.0.mlp.proj" in calls


def test_mlp_kernel_selection(tg, mlp_kernel):
    assert mlp_kernel("auto") == "plain"  # no CUDA here
    with pytest.raises(RuntimeError, match="MLP_KERNEL=triton"):
        mlp_kernel("triton")
    with pytest.raises(ValueError, match="MLP_KERNEL='fast' must be auto, triton, torch or plain"):
        tg.Hyperparameters({**TINY, "MLP_KERNEL": "fast"})


def test_mlp_tile_settings(tg, mlp_kernel):
    """MLP_TILE_UP / MLP_TILE_GRAD: '' is the device's default (Hopper: each kernel's persistent form as the H100
    sweep timed it; elsewhere the record's tiles); a value sets that kernel's launch configuration (kept within
    the widths); a malformed one is refused at start, naming the variable and the format."""
    record = {"BM": 128, "BN": 256, "BK": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 4, "persistent": 0}
    assert tg.parse_mlp_tile("", "MLP_TILE_UP") == record
    for cap in (None, (8, 0), (10, 0), (12, 0)):  # no GPU, A100, B200, consumer Blackwell: not timed there
        assert tg.default_mlp_tile("up", cap) == tg.default_mlp_tile("grad", cap) == record
    assert tg.default_mlp_tile("up", (9, 0)) == {**record, "BN": 128, "num_stages": 6, "persistent": 1}
    assert tg.default_mlp_tile("grad", (9, 0)) == {**record, "num_stages": 3, "persistent": 1}
    assert tg.parse_mlp_tile("", "MLP_TILE_GRAD", tg.default_mlp_tile("grad", (9, 0)))["persistent"] == 1
    tg.select_mlp_kernel(torch.device("cpu"), "torch", "", "")
    assert tg._mlp_tiles(2048, 512, "up") == tg._mlp_tiles(2048, 512, "grad") == record
    tg.select_mlp_kernel(torch.device("cpu"), "torch", "", "64,128,64,4,4,4")
    assert tg._mlp_tiles(2048, 512, "up")["BM"] == 128
    assert tg._mlp_tiles(2048, 512, "grad") == {"BM": 64, "BN": 128, "BK": 64, "GROUP_M": 4, "num_warps": 4,
                                                "num_stages": 4, "persistent": 0}
    assert tg._mlp_tiles(96, 512, "grad") is None  # BN 96 is no power of two: that width takes the torch math
    tg.select_mlp_kernel(torch.device("cpu"), "torch", "128,256,64,8,8,3,1", "")
    assert tg._mlp_tiles(2048, 512, "up")["persistent"] == 1 and tg._mlp_tiles(2048, 512, "grad")["persistent"] == 0
    assert tg._mlp_tiles(16, 512, "up")["persistent"] == 0  # half tiles of 8 columns: the pointer kernel instead
    tg.select_mlp_kernel(torch.device("cpu"), "torch", "128,128,64,8,4,2,2", "")
    assert tg._mlp_tiles(2048, 512, "up")["persistent"] == 2  # two programs per SM
    for bad in ("128,256,64", "128,100,64,8,8,3", "128,256,64,8,3,3", "128,256,64,0,8,3", "a,b,c,d,e,f",
                "128,256,64,8,8,3,3", "128,256,64,8,8,3,1,1"):
        with pytest.raises(ValueError, match=r"MLP_TILE_GRAD=.* must be BM,BN,BK,GROUP_M,num_warps,num_stages"):
            tg.Hyperparameters({**TINY, "MLP_TILE_GRAD": bad})
    h = tg.Hyperparameters({**TINY, "MLP_TILE_UP": "64,256,64,8,4,3"})
    assert h.mlp_tile_up == "64,256,64,8,4,3"


_INTERPRET = """
torch.manual_seed(0)
res = {}
for dtype in (torch.float32, torch.bfloat16):
    for M, N, K in ((200, 256, 128), (128, 512, 64), (37, 64, 32)):
        x = torch.randn(M, K).to(dtype); w = (torch.randn(N, K) / K ** 0.5).to(dtype)
        wd = (torch.randn(K, N) / N ** 0.5).to(dtype); g = torch.randn(M, K).to(dtype)
        assert tg._mlp_tiles(N, K) is not None
        pre, post = tg._up_act_triton(x, w)
        pre_r, post_r = tg._up_act_torch(x, w)
        d, d_r = tg._act_grad_triton(g, wd, pre_r, post_r), tg._act_grad_torch(g, wd, pre_r, post_r)
        assert pre.dtype == post.dtype == d.dtype == dtype
        res.setdefault(str(dtype), []).append(
            [float((a.float() - b.float()).abs().max() / b.float().abs().max()) for a, b in ((pre, pre_r), (post, post_r), (d, d_r))])
        # MLP_SAVE_SIGNS: the same post, pre's signs bit for bit, dPre from post and the signs as the torch math has it
        signs, post_s = tg._up_act_triton(x, w, True)
        signs_r = tg._up_act_torch(x, w, True)[0]
        assert signs.dtype == torch.uint8 and signs.shape == (M, N // 8) and torch.equal(signs, signs_r), (M, N, K)
        assert torch.equal(post_s, post), (M, N, K)
        d_s, d_s_r = tg._act_grad_triton(g, wd, signs_r, post_r, True), tg._act_grad_torch(g, wd, signs_r, post_r, True)
        res[str(dtype)].append([float((d_s.float() - d_s_r.float()).abs().max() / d_s_r.float().abs().max())])
# MLP_TILE_UP / MLP_TILE_GRAD: other tiles, warps and stages for each kernel, on a ragged M that spans two row tiles;
# then the persistent kernels, where 3 programs walk 16 tiles (ragged last row tile, two K tiles, half-tile stores)
for up, grad in (("64,128,32,2,4,4", "32,64,64,1,4,2"), ("32,64,32,2,4,2,1", "32,64,64,1,4,3,1")):
    tg.select_mlp_kernel(torch.device("cpu"), "triton", up, grad)
    assert (tg._mlp_tiles(256, 128, "up")["BN"], tg._mlp_tiles(256, 128, "grad")["BN"]) == (int(up.split(",")[1]), 64)
    persistent = int(up.split(",")[6]) if up.count(",") == 6 else 0
    assert tg._mlp_tiles(256, 128, "up")["persistent"] == tg._mlp_tiles(256, 128, "grad")["persistent"] == persistent
    x = torch.randn(100, 128); w = torch.randn(256, 128) / 128 ** 0.5; wd = torch.randn(128, 256) / 16; g = torch.randn(100, 128)
    pre, post = tg._up_act_triton(x, w)
    pre_r, post_r = tg._up_act_torch(x, w)
    d, d_r = tg._act_grad_triton(g, wd, pre_r, post_r), tg._act_grad_torch(g, wd, pre_r, post_r)
    res["torch.float32"].append([float((a - b).abs().max() / b.abs().max()) for a, b in ((pre, pre_r), (post, post_r), (d, d_r))])
    xb, wb, wdb, gb = (t.bfloat16() for t in (x, w, wd, g))
    pre, post = tg._up_act_triton(xb, wb)
    pre_r, post_r = tg._up_act_torch(xb, wb)
    d, d_r = tg._act_grad_triton(gb, wdb, pre_r, post_r), tg._act_grad_torch(gb, wdb, pre_r, post_r)
    res["torch.bfloat16"].append([float((a.float() - b.float()).abs().max() / b.float().abs().max()) for a, b in ((pre, pre_r), (post, post_r), (d, d_r))])
# the persistent kernels, one and two programs per SM, against the pointer kernels at the same tiles: the same dots
# in the same order, bit for bit, pre's signs and the dPre made from them too; each persistent launch asks for its
# programs per SM
real_programs, per_sm = tg._mlp_programs, []
tg._mlp_programs = lambda device, tiles, n=1: (per_sm.append(n), real_programs(device, tiles, n))[1]
assert real_programs(torch.device("cpu"), 100, 2) == 6 and real_programs(torch.device("cpu"), 4, 2) == 4
for dtype in (torch.float32, torch.bfloat16):
    x, w, wd, g = (t.to(dtype) for t in (x, w, wd, g))
    outs, per_sm[:] = [], []
    for spec in ("32,64,32,2,4,3", "32,64,32,2,4,3,1", "32,64,32,2,4,3,2"):
        tg.select_mlp_kernel(torch.device("cpu"), "triton", spec, spec)
        pre, post = tg._up_act_triton(x, w)
        signs = tg._up_act_triton(x, w, True)[0]
        outs.append((pre, post, tg._act_grad_triton(g, wd, pre, post), signs, tg._act_grad_triton(g, wd, signs, post, True)))
    assert all(torch.equal(a, b) for ref, other in zip(outs, outs[1:]) for a, b in zip(ref, other)), dtype
    assert per_sm == [1, 1, 1, 1, 2, 2, 2, 2], per_sm  # up and grad twice at ,1 then at ,2; the pointer kernels ask nothing
print(json.dumps(res))
"""
# Triton's interpreter is what CI runs these kernels with (scripts/ci/setup.sh installs triton); elsewhere it is
# optional. CI=true makes a missing triton a failure, so the test cannot silently turn into a skip there.
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None and os.environ.get("CI") != "true",
                                  reason="Triton is not installed here")


@needs_triton
def test_triton_mlp_kernels_under_interpreter():
    """The Triton kernels themselves (tile order, masks on ragged M, a K loop of two tiles, two column tiles,
    bf16 loads and stores, epilogues) against the torch math, run by Triton's CPU interpreter
    (TRITON_INTERPRET=1) in a fresh process; the persistent forms also bit for bit against the pointer kernels. fp32 agrees to rounding; bf16 to one bf16 unit in the last place
    (the interpreter truncates fp32 -> bf16 where the GPU rounds to nearest)."""
    res = run_interpreted(_INTERPRET)
    for dtype, tol in (("torch.float32", 1e-5), ("torch.bfloat16", 2 ** -7)):
        for errs in res[dtype]:
            assert max(errs) < tol, (dtype, errs)


def _tile_candidates() -> list[tuple[int, ...]]:
    """benchmarks/kernel_checks.py's MLP_TILE_CANDIDATES, read without importing the GPU script."""
    tree = ast.parse((TRAINER.parent / "benchmarks" / "kernel_checks.py").read_text())
    return next(ast.literal_eval(n.value) for n in tree.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "MLP_TILE_CANDIDATES")


def test_every_default_tile_is_a_sweep_candidate(tg):
    """Each kernel's default, on Hopper and elsewhere, and its pointer form (what an unaligned view falls back to)
    are among the GPU sweep's candidates: so the sweep can start from it and the test below compiles it."""
    spelled = [tg.parse_mlp_tile(",".join(map(str, c)), "MLP_TILE_UP") for c in _tile_candidates()]
    for default in (tg.default_mlp_tile(w, cap) for w in ("up", "grad") for cap in (None, (9, 0))):
        assert default in spelled and {**default, "persistent": 0} in spelled, default


H100_SHARED_BYTES = 232448  # the most dynamic shared memory one block may use on sm_90 (227 KiB)
H100_SM_SHARED_BYTES, H100_SM_REGISTERS = 233472, 65536  # what an SM holds (228 KiB, 1 KiB of it kept per block)


def compile_sm90(fn, consts: dict, types: dict, num_warps: int):
    """Triton kernel `fn` compiled for sm_90 without a GPU (shared by the loss, q/k and XSA kernels' tests): the
    arguments of `consts` as constexprs, those of `types` of the type given, other pointers *bf16, other scalars
    i32."""
    import triton
    from triton.backends.compiler import GPUTarget

    sig = {a: "constexpr" if a in consts else types.get(a, "*bf16" if a.endswith("_ptr") else "i32")
           for a in fn.arg_names}
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})


def ptxas_registers(ptx: str, tmp_path: Path) -> int:
    """Registers per thread that Triton's own ptxas, asked for its resource report, allocates for `ptx` on
    sm_90a, after asserting that it spills nothing (shared by the loss kernels' test)."""
    from triton.backends.nvidia.compiler import get_ptxas

    path = tmp_path / "kernel.ptx"
    path.write_text(ptx)
    report = subprocess.run([get_ptxas(90).path, "-arch=sm_90a", "-v", str(path), "-o", os.devnull],
                            capture_output=True, text=True, timeout=120)
    text = report.stdout + report.stderr
    assert report.returncode == 0 and "0 bytes spill stores, 0 bytes spill loads" in text, text[-1000:]
    return int(re.search(r"Used (\d+) registers", text).group(1))


@needs_triton
@pytest.mark.parametrize("tile", _tile_candidates(), ids=lambda t: "x".join(map(str, t)))
def test_triton_mlp_kernels_compile_for_hopper(tg, tile, tmp_path):
    """Both kernels compile for sm_90 (H100, H200) at the record's shape under the default launch configuration
    and every candidate the GPU sweep tries, on a machine without a GPU (Triton ships its own ptxas), which the
    interpreter cannot show: Triton's code generator accepts them, the dots become wgmma, the K loop is pipelined
    (cp.async into num_stages copies of the A and B tiles) and the shared memory fits an H100's, given 16-byte
    aligned pointers and strides as a launch from torch has them. The persistent kernels (seventh value 1 or 2) take
    TMA descriptors of the blocks the launch builds (mlp_descriptor_blocks): their loads and stores must be bulk
    tensor copies; with two programs per SM, two must fit one SM's shared memory and registers (ptxas's count), or
    the second would wait for the first. Each kernel compiles twice: keeping pre, and with MLP_SAVE_SIGNS (no pre
    argument; the packed signs by a uint8 pointer). A candidate that failed here would cost the sweep a compile
    error on the lent GPU instead."""
    import triton
    from triton.backends.compiler import GPUTarget

    cfg = tg.parse_mlp_tile(",".join(map(str, tile)), "MLP_TILE_UP")
    stage_bytes = 2 * (cfg["BM"] * cfg["BK"] + cfg["BK"] * cfg["BN"])  # bf16 A and B tiles
    kernels = {"up": tg._mlp_up_act_persistent, "grad": tg._mlp_act_grad_persistent} if cfg["persistent"] else \
        {"up": tg._mlp_up_act_kernel, "grad": tg._mlp_act_grad_kernel}
    for (which, fn), signs in ((kernel, signs) for kernel in kernels.items() for signs in (False, True)):
        consts = {"K": 512, "UPCAST": False, "PROGRAMS": 132, "SIGNS": signs,
                  **{k: cfg[k] for k in ("BM", "BN", "BK", "GROUP_M")}}
        consts.update({"signs_ptr": None} if not signs else {a: None for a in ("pre_desc", "pre_ptr")})
        consts = {k: v for k, v in consts.items() if k in fn.arg_names}
        blocks = iter(tg.mlp_descriptor_blocks(which, cfg))
        sig = {a: "constexpr" if a in consts else f"tensordesc<bf16{next(blocks)}>".replace(" ", "")
               if a.endswith("_desc") else "*u8" if a == "signs_ptr" else "*bf16" if a.endswith("_ptr") else "i32"
               for a in fn.arg_names}
        aligned = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names)
                   if sig[a] in ("*bf16", "*u8", "i32") and a not in ("M", "N")}
        src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=aligned)
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]})
        ptx = k.asm["ptx"]
        assert "wgmma.mma_async" in ptx and "cp.async" in ptx, (fn.__name__, signs)
        if cfg["persistent"]:  # TMA loads (Triton 3.6 says shared::cluster, 3.7 shared::cta) and TMA stores
            assert re.search(r"cp\.async\.bulk\.tensor\.2d\.shared::(cta|cluster)\.global", ptx), fn.__name__
            assert "cp.async.bulk.tensor.2d.global.shared::cta" in ptx, fn.__name__
        assert cfg["num_stages"] * stage_bytes <= k.metadata.shared <= H100_SHARED_BYTES, (fn.__name__, k.metadata.shared)
        if cfg["persistent"] == 2:
            regs = ptxas_registers(ptx, tmp_path) * 32 * cfg["num_warps"]
            assert 2 * (k.metadata.shared + 1024) <= H100_SM_SHARED_BYTES, (fn.__name__, k.metadata.shared)
            assert 2 * regs <= H100_SM_REGISTERS, (fn.__name__, regs)


_MODEL_GRADS = """
h = tg.Hyperparameters(json.loads(sys.argv[2]))
torch.manual_seed(0)
m = tg.build_model(h, torch.device("cpu"))
with torch.no_grad():
    m.mlp_down_bank.normal_(0, 0.02)  # zero at init: make every MLP gradient non-trivial
ids = torch.randint(0, 512, (1, 160))
cu = torch.tensor([0, 70, 160, 160], dtype=torch.int32)  # 160 rows: one full and one ragged row tile
m.train()
res = {}
for kernel, signs in (("plain", False), ("triton", False), ("triton", True)):
    assert tg.select_mlp_kernel(torch.device("cpu"), kernel, save_signs=signs) == kernel
    m.zero_grad(set_to_none=True)
    loss = m(ids, torch.roll(ids, -1, 1), cu, 96)
    loss.backward()
    res[kernel, signs] = (loss.detach(), m.mlp_up_bank.grad.clone(), m.mlp_down_bank.grad.clone(), m.qo_bank.grad.clone())
print(json.dumps([float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                  for signs in (False, True) for a, b in zip(res["triton", signs], res["plain", False])]))
"""


@needs_triton
def test_tiny_model_gradients_same_with_triton_mlp_under_interpreter(tg):
    """The tiny model's training loss and its gradients (both MLP banks, and the attention bank upstream of
    the MLPs) are the same with MLP_KERNEL=triton, under the interpreter, as with the plain ops: the kernels
    as the model calls them (banks sliced and cast, packed documents, backward through golf::mlp_act_grad), keeping
    pre and keeping its signs (MLP_SAVE_SIGNS)."""
    h = tg.Hyperparameters(TINY)
    assert tg._mlp_tiles(int(h.mlp_mult * h.model_dim), h.model_dim) is not None  # the kernels, not the fallback
    errs = run_interpreted(_MODEL_GRADS, json.dumps(TINY))
    assert len(errs) == 8 and max(errs) < 1e-5, errs  # loss, d mlp_up, d mlp_down, d qo (fp32 on a CPU), twice


@needs_triton
def test_trainer_losses_same_with_triton_mlp_under_interpreter(tg, tiny_data, tmp_path):
    """train_gpt.py on the tiny configuration, MLP_KERNEL=triton under Triton's interpreter against
    MLP_KERNEL=plain: the same training loss at every step (priming steps with and without looping included,
    so both graphs use the kernels), keeping pre and keeping its signs (MLP_SAVE_SIGNS=1). A longer run is
    benchmarks/kernel_equivalence_cpu.py."""
    h = tg.Hyperparameters(TINY)
    assert tg._mlp_tiles(int(h.mlp_mult * h.model_dim), h.model_dim) is not None  # the kernels, not the fallback
    run = {"ITERATIONS": "3", "WARMUP_STEPS": "1", "TRAIN_BATCH_TOKENS": "1024"}
    plain = train_losses_until(tiny_data, tmp_path / "plain", {**run, "MLP_KERNEL": "plain"})
    assert sorted(plain) == [1, 2, 3]
    for signs in ("0", "1"):
        out = tmp_path / f"triton-signs{signs}"
        fused = train_losses_until(tiny_data, out, {**run, "MLP_KERNEL": "triton", "TRITON_INTERPRET": "1",
                                                    "MLP_SAVE_SIGNS": signs})
        log = (out / "stdout.txt").read_text().splitlines()
        assert "mlp_kernel:triton" in log and f"mlp_save_signs:{signs}" in log
        assert sorted(fused) == sorted(plain)
        for step in plain:  # fp32 on a CPU: only the order of the sums differs; losses are logged to 4 decimals
            assert abs(fused[step] - plain[step]) <= 2e-4, (signs, step, fused, plain)


@pytest.fixture
def fa3(tg, monkeypatch):
    """The trainer's FA3 branch selected with the stand-in module importable; sdpa restored after."""
    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.delitem(sys.modules, "flash_attn_interface", raising=False)
    import flash_attn_interface
    # select_attention only looks at the device type to decide that FA3 may be tried
    assert tg.select_attention(torch.device("cuda"), "fa3") == "fa3"
    assert tg._ATTN["fa3"] is flash_attn_interface
    yield flash_attn_interface
    tg.select_attention(torch.device("cpu"))
    sys.modules.pop("flash_attn_interface", None)  # a later test must not find FA3 importable


@pytest.mark.parametrize("returns_tuple", [True, False])
def test_fa3_branch_matches_sdpa_path(tg, fa3, monkeypatch, returns_tuple):
    """Packed (varlen) and dense calls through the FA3 branch equal the SDPA path, output and gradients, for
    FA3 builds that return `out` and those that return `(out, lse)`."""
    monkeypatch.setattr(fa3, "RETURN_LSE", returns_tuple)
    torch.manual_seed(0)
    T = 40
    q = torch.randn(1, T, 4, 16, requires_grad=True)
    k = torch.randn(1, T, 2, 16, requires_grad=True)
    v = torch.randn(1, T, 2, 16, requires_grad=True)
    cu = torch.tensor([0, 7, 19, 33, 40, 40, 40], dtype=torch.int32)
    before = dict(fa3.CALLS)
    outs = {}
    for name in ("fa3", "sdpa"):
        tg._ATTN["name"] = name
        packed = tg.attend(q, k, v, cu, 16)
        dense = tg.attend(q[:, :12], k[:, :12], v[:, :12])
        grads = torch.autograd.grad((packed.square().sum() + dense.sum()), (q, k, v))
        outs[name] = (packed, dense, *grads)
    assert fa3.CALLS == {"func": before["func"] + 1, "varlen": before["varlen"] + 1}
    for a, b in zip(outs["fa3"], outs["sdpa"]):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_fa3_branch_tiny_model_compiles_fullgraph(tg, fa3):
    """The tiny model's packed loss through the FA3 branch traces under torch.compile(fullgraph=True) and
    equals the eager SDPA loss."""
    h = tg.Hyperparameters(TINY)
    torch.manual_seed(0)
    m = tg.build_model(h, torch.device("cpu"))
    ids = torch.randint(0, 512, (1, 48))
    cu = torch.tensor([0, 20, 48, 48], dtype=torch.int32)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    loss = compiled(ids, torch.roll(ids, -1, 1), cu, 32)
    loss.backward()
    assert fa3.CALLS["varlen"] > 0 and m.qo_bank.grad is not None
    tg._ATTN["name"] = "sdpa"
    with torch.no_grad():
        ref = m(ids, torch.roll(ids, -1, 1), cu, 32)
    assert torch.allclose(loss.detach(), ref, atol=1e-4)


def test_measured_kernels_are_the_defaults_on_cuda_only(tg):
    """Measured on an H100 (benchmarks/results/h100-kernels-1gpu-*.json), the fused MLP and the GQA op are what
    auto picks on CUDA; on the CPU auto stays plain / SDPA, and varlen_gqa falls back to SDPA without the flag."""
    h = tg.Hyperparameters(TINY)
    assert h.mlp_kernel == "auto" and h.attn_backend == "auto"
    assert tg.select_mlp_kernel(torch.device("cpu"), h.mlp_kernel) == "plain"
    assert tg.Hyperparameters({**TINY, "ATTN_BACKEND": "varlen_gqa"}).attn_backend == "varlen_gqa"
    with pytest.raises(ValueError, match="ATTN_BACKEND='flash' must be auto, fa3, fa4, varlen, varlen_gqa or sdpa"):
        tg.Hyperparameters({**TINY, "ATTN_BACKEND": "flash"})
    assert tg.select_attention(torch.device("cpu"), "varlen_gqa") == "sdpa"
    assert tg.select_attention(torch.device("cpu"), "auto") == "sdpa" and not tg._ATTN["gqa_op"]
    assert tg.attention_backend_label() == "sdpa (block-diagonal causal mask)"
