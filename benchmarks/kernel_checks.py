"""GPU checks and timings of train_gpt.py's kernels at the record's packed training shape (98,304 tokens
per micro-step, d=512, hidden 2048, 8 query / 4 KV heads of 64, documents cut at 2048). Prints and writes
one JSON object (checks: numerics against the reference path; ms: forward + backward per call).

1. Fused MLP (golf::mlp_fused, Triton) against the plain ops compiled by Inductor (what the trainer ran
   before): output and the three gradients, and time.
2. GQA attention (golf::flash_varlen, K/V not copied) against torch varlen with K/V repeated.
3. The trainer's FA3 branch, through the stand-in tests/trainer/fa3_standin (FA3's signature, torch math),
   compiled with fullgraph=True, against the varlen path at a smaller shape (the stand-in's mask is dense).
4. flash-attn-4 (CuTe DSL) through the trainer's golf::fa4_varlen, eager and compiled fullgraph, when
   importable: output and gradients against golf::flash_varlen, and time against both varlen paths.
5. mlp-tiles: each fused MLP kernel alone under every launch configuration of MLP_TILE_CANDIDATES: ms per call,
   whether its outputs equal the default configuration's bit for bit, and the fastest (MLP_TILE_UP / _GRAD).
6. loss: the fused soft-capped cross-entropy (golf::softcap_ce, Triton) against Inductor's compiled plain loss on
   the record's logits (98,304 × 8192 bf16): the loss, dlogits, and time forward + backward; then each kernel alone
   under every LOSS_TILE_CANDIDATES launch, and the fastest.
7. fp8: what FP8 matmuls would save. Every matmul of a micro-step that cuBLAS runs (forward, input gradient and
   weight gradient of the attention projections, the MLP down projection and the head) timed in bf16 and as
   torch._scaled_mm in float8_e4m3 (per-tensor and per-row scales), with the casts to FP8 that feed it; per step.
8. qk: the fused q/k RMSNorm + RoPE + q_gain (golf::qk_norm_rope, Triton) against the plain ops compiled by Inductor
   on the record's q (98,304 tokens × 8 heads × 64, 16 dimensions rotated) and k (4 heads): outputs, the gradients
   of q, k and q_gain, time forward + backward and the bandwidth each kernel reaches; then each kernel alone under
   every QK_TILE_CANDIDATES launch, and the fastest.
9. mlp-signs: MLP_SAVE_SIGNS, the fused MLP keeping pre's packed signs (a bit per element) for its backward instead
   of pre (bf16): each kernel's time both ways, post bit for bit, the signs, dPre; the op forward + backward compiled.
10. xsa: the fused XSA (golf::xsa, Triton) against the plain ops compiled by Inductor on the record's attention
   output (98,304 tokens × 8 heads × 64) and v (4 KV heads): the output, the gradients of y and v, time forward +
   backward; then each kernel alone under every XSA_TILE_CANDIDATES launch, and the fastest.
Usage: python benchmarks/kernel_checks.py OUT.json [mlp,gqa,fa3,fa4,mlp-tiles,loss,fp8,qk,mlp-signs,xsa]
       (default: the first six)"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import train_gpt as T  # noqa: E402
from attn_bench import bench, doc_cu  # noqa: E402
from step_gaps import busy_ms  # noqa: E402

M, D, HID, H, HKV, HD, SEQ = 98304, 512, 2048, 8, 4, 64, 2048
BF = torch.bfloat16


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30))


def fwd_bwd(fn, inputs, g):
    for t in inputs:
        t.grad = None
    out = fn(*inputs)
    out.backward(g)
    return [out.detach()] + [t.grad.detach().clone() for t in inputs]


def mlp_inputs(m: int = M, device: str = "cuda") -> tuple[torch.Tensor, ...]:
    """x (m × D), W_up, W_down (requiring gradients) and dOut at the record's widths, seeded."""
    torch.manual_seed(0)
    x = torch.randn(m, D, device=device, dtype=BF, requires_grad=True)
    w_up = (torch.randn(HID, D, device=device) / D ** 0.5).to(BF).requires_grad_()
    w_down = (torch.randn(D, HID, device=device) / HID ** 0.5).to(BF).requires_grad_()
    return x, w_up, w_down, torch.randn(m, D, device=device, dtype=BF)


def check_mlp() -> dict:
    x, w_up, w_down, g = mlp_inputs()
    plain = torch.compile(lambda a, u, d: F.linear(F.leaky_relu(F.linear(a, u), 0.5).square(), d), fullgraph=True)
    T.select_mlp_kernel(torch.device("cuda"), "triton")
    fused = torch.compile(lambda a, u, d: T.fused_mlp(a, u, d), fullgraph=True)
    ref = fwd_bwd(plain, (x, w_up, w_down), g)
    got = fwd_bwd(fused, (x, w_up, w_down), g)
    errs = {n: rel_err(a, b) for n, a, b in zip(("out", "dx", "dw_up", "dw_down"), got, ref)}
    ms = {"plain_inductor": bench(lambda: fwd_bwd(plain, (x, w_up, w_down), g)),
          "fused_triton": bench(lambda: fwd_bwd(fused, (x, w_up, w_down), g))}
    return {"rel_err": errs, "ok": max(errs.values()) < 2e-2, "ms_fwd_bwd": ms}


# Launch configurations tried for the fused MLP kernels: BM, BN, BK, GROUP_M, num_warps, num_stages (train_gpt's
# MLP_TILE_UP / MLP_TILE_GRAD; a seventh value 1: the persistent form). Each kernel's sweep starts from the
# trainer's default for this GPU (train_gpt.default_mlp_tile), which is among these. BK stays 64, so every output
# element sums the same products in the same order; what changes is how many tiles an SM holds and how loads
# overlap stores (the kernels ran at 0.56 ms a call on an H100, slower than cuBLAS for the same GEMM).
# tests/trainer/test_kernels.py compiles each one for sm_90 on the CPU: wgmma, and the shared memory fits.
MLP_TILE_CANDIDATES = (
    (128, 256, 64, 8, 8, 4),  # the record's forward (4 stages); the default where the GPU is not Hopper
    (128, 256, 64, 8, 8, 3),  # the trainer's default until the sweep of 2026-12-05
    (128, 128, 64, 8, 4, 3),
    (128, 128, 64, 8, 4, 4),
    (128, 128, 64, 8, 8, 3),
    (128, 128, 64, 8, 8, 4),
    (64, 256, 64, 8, 4, 3),
    (64, 128, 64, 8, 4, 4),
    (256, 128, 64, 8, 8, 3),
    (128, 128, 64, 8, 8, 6),  # the pointer form of the Hopper default up tile (its fallback for unaligned views)
    # the persistent kernels (TMA loads and half-tile TMA stores; one program per SM walks the tiles)
    (128, 256, 64, 8, 8, 3, 1),  # the Hopper default grad tile; 4 stages would need 256 KiB in the backward kernel
    (128, 128, 64, 8, 8, 4, 1),
    (128, 128, 64, 8, 4, 4, 1),
    (128, 128, 64, 8, 8, 6, 1),  # the Hopper default up tile
    # two persistent programs per SM (seventh value 2), each small enough that two fit an SM's shared memory and
    # registers (tests/trainer/test_kernels.py checks both with ptxas): one's epilogue beside the other's dots
    (128, 128, 64, 8, 4, 2, 2),
    (128, 128, 64, 8, 8, 2, 2),
    (64, 128, 64, 8, 4, 3, 2),
    (64, 128, 64, 8, 4, 4, 2),
    (64, 256, 64, 8, 4, 2, 2),
    (128, 64, 64, 8, 4, 3, 2),
)


def tile_text(cfg: dict) -> str:
    """A launch configuration as MLP_TILE_* spells it: six values, or seven for the persistent form."""
    vals = [cfg[k] for k in T.MLP_TILE_KEYS]
    return ",".join(map(str, vals if vals[-1] else vals[:-1]))


def check_mlp_tiles() -> dict:
    """Each fused MLP kernel alone at the record's shape (up: X·W_upᵀ → pre, post; grad: (G·W_down) ⊙ φ'(pre))
    under every candidate launch configuration: ms per call, and its outputs against the default's."""
    torch.manual_seed(0)
    x = torch.randn(M, D, device="cuda", dtype=BF)
    w_up = (torch.randn(HID, D, device="cuda") / D ** 0.5).to(BF)
    w_down = (torch.randn(D, HID, device="cuda") / HID ** 0.5).to(BF)
    g = torch.randn(M, D, device="cuda", dtype=BF)
    pre, post = T._up_act_triton(x, w_up)
    kernels = {"up": lambda: T._up_act_triton(x, w_up), "grad": lambda: (T._act_grad_triton(g, w_down, pre, post),)}
    res = {"shape": {"M": M, "N": HID, "K": D}, "candidates": {}, "best": {}}
    cap = torch.cuda.get_device_capability()
    for which, fn in kernels.items():
        rows, ref = {}, None
        default = tile_text(T.default_mlp_tile(which, cap))
        for key in [default] + [k for k in (",".join(map(str, c)) for c in MLP_TILE_CANDIDATES) if k != default]:
            T._MLP[which] = T.parse_mlp_tile(key, which)
            try:
                out = fn()
                ref = out if ref is None else ref  # the first candidate is the default
                diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(out, ref))
                rows[key] = {"ms": bench(fn), "bitwise_equal": all(torch.equal(a, b) for a, b in zip(out, ref)),
                             "max_abs_diff": diff}
            except Exception as e:  # a configuration Triton cannot build here is a finding, not a failed sweep
                rows[key] = {"error": f"{type(e).__name__}: {e}"[:300]}
        T._MLP[which] = T.default_mlp_tile(which, cap)
        timed = {k: r["ms"] for k, r in rows.items() if "ms" in r and r["bitwise_equal"]}
        best = min(timed, key=timed.get)
        res["candidates"][which] = rows
        res["best"][which] = {"tile": best, "ms": timed[best], "default_tile": default, "default_ms": timed[default],
                              "speedup": timed[default] / timed[best]}
    res["ok"] = True
    return res


def check_mlp_signs(m: int = M, device: str = "cuda", timer=bench) -> dict:
    """MLP_SAVE_SIGNS at the record's shape (m tokens) and the default launches: each kernel keeping pre's packed
    signs against keeping pre (ms per call, post bit for bit, the signs those of pre, dPre from post and the signs
    against dPre from pre), then the fused op forward + backward compiled, both ways."""
    x, w_up, w_down, g = mlp_inputs(m, device)
    T.select_mlp_kernel(torch.device(device), "triton")
    with torch.no_grad():
        pre, post = T._up_act_triton(x, w_up)
        signs, post_s = T._up_act_triton(x, w_up, True)
        dpre = T._act_grad_triton(g, w_down, pre, post)
        dpre_s = T._act_grad_triton(g, w_down, signs, post, True)
        res = {"post_bitwise_equal": torch.equal(post, post_s), "signs_equal": torch.equal(signs, T.pack_signs(pre)),
               "dpre_rel_err": rel_err(dpre_s, dpre),
               "ms": {"up_pre": timer(lambda: T._up_act_triton(x, w_up)),
                      "up_signs": timer(lambda: T._up_act_triton(x, w_up, True)),
                      "grad_pre": timer(lambda: T._act_grad_triton(g, w_down, pre, post)),
                      "grad_signs": timer(lambda: T._act_grad_triton(g, w_down, signs, post, True))}}
    outs, res["ms_fwd_bwd"] = {}, {}
    for name, flag in (("pre", False), ("signs", True)):
        torch._dynamo.reset()
        T.select_mlp_kernel(torch.device(device), "triton", save_signs=flag)
        fused = torch.compile(lambda a, u, d: T.fused_mlp(a, u, d), fullgraph=True)
        outs[name] = fwd_bwd(fused, (x, w_up, w_down), g)
        res["ms_fwd_bwd"][name] = timer(lambda: fwd_bwd(fused, (x, w_up, w_down), g))
    res["rel_err"] = {n: rel_err(a, b) for n, a, b in zip(("out", "dx", "dw_up", "dw_down"), outs["signs"], outs["pre"])}
    T.select_mlp_kernel(torch.device(device), "triton")
    res["ok"] = res["post_bitwise_equal"] and res["signs_equal"] and res["dpre_rel_err"] < 2e-2 \
        and max(res["rel_err"].values()) < 2e-2
    return res


# Launch configurations tried for the fused loss's kernels (ROWS, BLOCK_V, num_warps; LOSS_TILE_FWD / _BWD), the
# trainer's built-in ones among them: one row whole per program, down to small tiles of a few rows. The ninth
# session's sweep on an H100 chose the built-in ones (forward 0.63 ms, 1.11× its first guess 4,1024,4; backward
# 1.09 ms, 1.02× 1,2048,4).
LOSS_TILE_CANDIDATES = {
    "fwd": ((1, 8192, 8), (1, 8192, 16), (1, 4096, 8), (1, 2048, 4), (1, 1024, 4), (2, 2048, 4), (2, 4096, 8),
            (4, 1024, 4), (4, 2048, 8), (8, 512, 4), (8, 1024, 8), (16, 512, 8)),
    "bwd": ((1, 8192, 8), (1, 4096, 8), (1, 4096, 4), (1, 2048, 4), (1, 2048, 8), (1, 1024, 4), (1, 512, 2),
            (2, 1024, 4), (2, 2048, 8), (4, 512, 4), (4, 1024, 8), (8, 256, 4)),
}


def check_loss() -> dict:
    """The fused loss through the compiled op against Inductor's plain loss: the loss, dlogits, and time forward
    + backward; then each Triton kernel alone under every LOSS_TILE_CANDIDATES launch against the built-in one."""
    torch.manual_seed(0)
    x = (4 * torch.randn(M, 8192, device="cuda")).to(BF).requires_grad_()
    y = torch.randint(0, 8192, (M,), device="cuda")
    plain = torch.compile(lambda a, b: F.cross_entropy(30.0 * torch.tanh(a.float() / 30.0), b), fullgraph=True)
    fused = torch.compile(lambda a, b: T.softcap_ce_mean(a, b, 30.0), fullgraph=True)

    def run(fn):
        x.grad = None
        loss = fn(x, y)
        loss.backward()
        return loss.detach(), x.grad.detach().clone()
    # The selection is read while tracing, so Dynamo guards on it: everything that times `fused` runs inside it.
    # (Until 2026-12-05 the selection was reset before the timing, which then recompiled and timed the torch-math
    # fallback: 50.8 ms against 3.9, a figure of the wrong kernel.)
    T.select_loss_kernel(torch.device("cuda"), "triton")
    try:
        ref, got = run(plain), run(fused)
        ms = {"plain_inductor": bench(lambda: run(plain)), "fused_triton": bench(lambda: run(fused))}
        sweep = loss_kernel_sweep(x.detach(), y)
    finally:
        T.select_loss_kernel(torch.device("cuda"), "plain")
    errs = {"loss": rel_err(got[0], ref[0]), "dlogits": rel_err(got[1], ref[1])}
    return {"rel_err": errs, "ok": errs["loss"] < 1e-4 and errs["dlogits"] < 2e-2, "ms_fwd_bwd": ms, "kernels": sweep}


def loss_kernel_sweep(x: torch.Tensor, y: torch.Tensor, timer=bench) -> dict:
    """Each loss kernel alone under every candidate launch: ms per call, and its outputs against the built-in
    launch's (nll to 1e-4, dlogits to 2^-7 of their largest); `best`: the fastest launch of each kernel with such
    outputs, and its speed-up over the built-in one (None when the built-in one failed). Leaves the built-in
    launches selected."""
    g = torch.full((x.size(0),), 1.0 / x.size(0), device=x.device)
    T.select_loss_kernel(x.device, "triton")
    nll, lse = T._softcap_ce_triton(x, y, 30.0)
    dx = T._softcap_ce_bwd_triton(g, x, y, lse, 30.0)
    kernels = {"fwd": (lambda: T._softcap_ce_triton(x, y, 30.0),
                       lambda out: float((out[0] - nll).abs().max()) < 1e-4),
               "bwd": (lambda: T._softcap_ce_bwd_triton(g, x, y, lse, 30.0),
                       lambda out: rel_err(out, dx) < 2 ** -7)}
    res = {"candidates": {}, "best": {}}
    for which, (fn, close) in kernels.items():
        rows = {}
        for tile in LOSS_TILE_CANDIDATES[which]:
            key = ",".join(map(str, tile))
            T.select_loss_kernel(x.device, "triton", **{f"tile_{which}": key})
            try:
                rows[key] = {"ms": timer(fn), "close": close(fn())}
            except Exception as e:  # a launch Triton cannot build here is a finding, not a failed sweep
                rows[key] = {"error": f"{type(e).__name__}: {e}"[:300]}
        timed = {k: r["ms"] for k, r in rows.items() if r.get("close")}
        res["candidates"][which] = rows
        if timed:
            best = min(timed, key=timed.get)
            default = ",".join(str(T._LOSS_TILE_DEFAULT[which][k]) for k in T.LOSS_TILE_KEYS)
            res["best"][which] = {"tile": best, "ms": timed[best], "default_tile": default,
                                  "default_ms": timed.get(default),
                                  "speedup": timed[default] / timed[best] if default in timed else None}
    T.select_loss_kernel(x.device, "triton")
    return res


# Launches tried for the q/k kernels (ROWS head rows a program, num_warps): more rows a program against more programs
# an SM (the backward's registers decide how many fit; tests/trainer/test_qk_kernel.py)
QK_TILE_CANDIDATES = ((8, 1), (8, 2), (16, 2), (16, 4), (32, 4), (32, 8), (64, 4), (64, 8), (128, 8))
ROPE_DIMS = 16


def check_qk(m: int = M, device: str = "cuda", timer=bench, busy=busy_ms) -> dict:
    """golf::qk_norm_rope (Triton) against the plain ops compiled by Inductor at the record's q and k (m tokens):
    outputs and the gradients of q, k and q_gain, ms forward + backward by the clock and as the GPU's busy time (the
    fused op's clock figure is the host's: little GPU work behind autograd), each kernel's bandwidth, the sweep."""
    torch.manual_seed(0)
    dev = torch.device(device)
    q = torch.randn(1, m, H, HD, device=dev, dtype=BF, requires_grad=True)
    k = torch.randn(1, m, HKV, HD, device=dev, dtype=BF, requires_grad=True)
    gain = (1.5 + 0.1 * torch.randn(H, device=dev)).to(BF).requires_grad_()
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    rot = T.Rotary(HD, ROPE_DIMS, 10000.0).to(dev)
    plain = torch.compile(lambda a, b, c: (rot(T.rms_norm(a)) * c[None, None, :, None], rot(T.rms_norm(b))),
                          fullgraph=True)
    fused = torch.compile(lambda a, b, c: T.qk_norm_rope(a, b, c, *rot.table(m, a.device, a.dtype)), fullgraph=True)

    def run(fn):
        for t in (q, k, gain):
            t.grad = None
        out = fn(q, k, gain)
        torch.autograd.backward(out, (gq, gk))
        return [o.detach() for o in out] + [t.grad.detach().clone() for t in (q, k, gain)]
    T.select_qk_kernel(dev, "triton")  # read while tracing: everything that times `fused` runs inside it
    try:
        ref, got = run(plain), run(fused)
        ms = {"plain_inductor": timer(lambda: run(plain)), "fused_triton": timer(lambda: run(fused))}
        gpu_ms = {"plain_inductor": busy(lambda: run(plain)), "fused_triton": busy(lambda: run(fused))}
        sweep = qk_kernel_sweep(q.detach(), k.detach(), gain.detach(), gq, gk, rot, timer)
    finally:
        T.select_qk_kernel(dev, "plain")
    errs = dict(zip(("q", "k", "dq", "dk", "dgain"), (rel_err(a, b) for a, b in zip(got, ref))))
    return {"rel_err": errs, "ok": all(e < 2e-2 for e in errs.values()), "ms_fwd_bwd": ms,
            "gpu_busy_ms_fwd_bwd": gpu_ms, "kernels": sweep}


def qk_kernel_sweep(q, k, gain, gq, gk, rot, timer=bench) -> dict:
    """Each q/k kernel alone under every QK_TILE_CANDIDATES launch (rows_kernel_sweep); the bytes each must move: q
    and k read and written forward; the gradients and q, k read and the gradients written backward."""
    cos, sin = rot.table(q.size(1), q.device, q.dtype)
    gb = {"fwd": 2 * (q.nbytes + k.nbytes) / 1e9, "bwd": 3 * (q.nbytes + k.nbytes) / 1e9}
    kernels = {"fwd": lambda: T._qk_norm_rope_triton(q, k, gain, cos, sin),
               "bwd": lambda: T._qk_norm_rope_bwd_triton(gq, gk, q, k, gain, cos, sin)}
    return rows_kernel_sweep(kernels, gb, T._QK, T._QK_TILE_DEFAULT, QK_TILE_CANDIDATES, timer)


def rows_kernel_sweep(kernels: dict, gb: dict, table: dict, defaults: dict, candidates, timer=bench) -> dict:
    """Each kernel of `kernels` ({which: fn}) alone under every (ROWS, num_warps) of `candidates`, set in the
    trainer's launch `table` (restored to `defaults` after): ms per call, GB/s from the bytes `gb[which]` it must
    move, whether its outputs equal the built-in launch's bit for bit or to bf16 rounding (a launch of other warps
    may sum a row in another order); `best`: the fastest launch of each kernel with such outputs."""
    res = {"gb": gb, "candidates": {}, "best": {}}
    for which, fn in kernels.items():
        table[which] = dict(defaults[which])
        want = fn()
        rows = {}
        for r, w in candidates:
            table[which] = {"ROWS": r, "num_warps": w}
            try:
                t = timer(fn)
                got = fn()
                rows[f"{r},{w}"] = {"ms": t, "gb_per_s": gb[which] / t * 1e3,
                                    "equal": all(torch.equal(a, b) for a, b in zip(got, want)),
                                    "close": all(rel_err(a, b) < 2 ** -7 for a, b in zip(got, want))}
            except Exception as e:  # a launch Triton cannot build here is a finding, not a failed sweep
                rows[f"{r},{w}"] = {"error": f"{type(e).__name__}: {e}"[:300]}
        table[which] = dict(defaults[which])
        res["candidates"][which] = rows
        timed = {key: row["ms"] for key, row in rows.items() if row.get("close")}
        default = "{ROWS},{num_warps}".format(**defaults[which])
        if timed:
            best = min(timed, key=timed.get)
            res["best"][which] = {"tile": best, "ms": timed[best], "default_tile": default,
                                  "default_ms": timed.get(default),
                                  "speedup": timed[default] / timed[best] if default in timed else None}
    return res


# Launches tried for the XSA kernels (ROWS kv rows a program, num_warps): the backward holds twice the forward's
# tiles (tests/trainer/test_xsa_kernel.py: 72 and 74 registers a thread at the built-in launches)
XSA_TILE_CANDIDATES = ((8, 2), (8, 4), (16, 4), (16, 8), (32, 4), (32, 8), (64, 8))


def check_xsa(m: int = M, device: str = "cuda", timer=bench, busy=busy_ms) -> dict:
    """golf::xsa (Triton) against the plain ops compiled by Inductor at the record's attention output y (m tokens
    × 8 heads × 64) and v (4 KV heads): the output and the gradients of y and v, ms forward + backward by the clock
    and as the GPU's busy time, and each kernel alone under every XSA_TILE_CANDIDATES launch."""
    torch.manual_seed(0)
    dev = torch.device(device)
    y = torch.randn(1, m, H, HD, device=dev, dtype=BF, requires_grad=True)
    v = torch.randn(1, m, HKV, HD, device=dev, dtype=BF, requires_grad=True)
    go = torch.randn_like(y)
    plain = torch.compile(T.xsa_plain, fullgraph=True)
    fused = torch.compile(T.xsa, fullgraph=True)

    def run(fn):
        y.grad = v.grad = None
        out = fn(y, v)
        out.backward(go)
        return [out.detach(), y.grad.detach().clone(), v.grad.detach().clone()]
    T.select_xsa_kernel(dev, "triton")  # read while tracing `fused` (xsa_plain reads no setting)
    try:
        ref, got = run(plain), run(fused)
        ms = {"plain_inductor": timer(lambda: run(plain)), "fused_triton": timer(lambda: run(fused))}
        gpu_ms = {"plain_inductor": busy(lambda: run(plain)), "fused_triton": busy(lambda: run(fused))}
        yd, vd = y.detach(), v.detach()
        # forward: y and v read, y's projection written; backward: go, y and v read, dy and dv written
        gb = {"fwd": (2 * yd.nbytes + vd.nbytes) / 1e9, "bwd": (3 * yd.nbytes + 2 * vd.nbytes) / 1e9}
        sweep = rows_kernel_sweep({"fwd": lambda: (T._xsa_triton(yd, vd),),
                                   "bwd": lambda: T._xsa_bwd_triton(go, yd, vd)},
                                  gb, T._XSA, T._XSA_TILE_DEFAULT, XSA_TILE_CANDIDATES, timer)
    finally:
        T.select_xsa_kernel(dev, "plain")
    errs = dict(zip(("out", "dy", "dv"), (rel_err(a, b) for a, b in zip(got, ref))))
    return {"rel_err": errs, "ok": all(e < 2e-2 for e in errs.values()), "ms_fwd_bwd": ms,
            "gpu_busy_ms_fwd_bwd": gpu_ms, "kernels": sweep}


# The linear maps of one micro-step that cuBLAS runs, as F.linear(x (M, K), W (N, K)): N, K, calls per micro-step
# before looping. The MLP's up projection and the down projection's input gradient are the fused Triton kernels; the
# down projection's forward stands for the up projection's input gradient too (dPre (M, 2048) · W_up: the same shape).
FP8_LINEARS = {"q": (512, 512, 11), "k": (256, 512, 11), "v": (256, 512, 11), "out": (512, 512, 11),
               "mlp_down": (512, 2048, 11), "head": (8192, 512, 1)}
E4M3 = torch.float8_e4m3fn


def fp8_rowwise(t: torch.Tensor):
    """t (rows, cols) → float8 and the per-row scale that undoes it (rows, 1)."""
    amax = t.abs().amax(-1, keepdim=True).float().clamp_min(1e-12)
    return (t.float() * (448.0 / amax)).to(E4M3), amax / 448.0


def fp8_tensorwise_t(t: torch.Tensor):
    """tᵀ as a row-major float8 copy and its scale: _scaled_mm takes its first operand row-major and its second
    column-major only, so a weight gradient (Gᵀ · X, summed over the tokens) needs both operands transposed."""
    amax = t.abs().amax().float().clamp_min(1e-12)
    return (t.float() * (448.0 / amax)).to(E4M3).t().contiguous(), amax / 448.0


def fp8_gemms(m: int, device: str, timer) -> dict:
    """Per linear map of FP8_LINEARS at m tokens: ms of the forward, input and weight gradient in bf16 and in FP8
    (rowwise scales for the forward and the input gradient, whose sums run over features; per-tensor for the weight
    gradient, whose sum runs over the tokens), the casts of the activation-sized operands, and the FP8 results'
    error against bf16. The casts are timed as separate compiled kernels: fused into the kernels that produce those
    tensors they would cost about the FP8 write alone (a third of this)."""
    torch.manual_seed(0)
    rows = {}
    q_row = torch.compile(fp8_rowwise, fullgraph=True)
    q_t = torch.compile(fp8_tensorwise_t, fullgraph=True)
    mm = lambda a, b, sa, sb: torch._scaled_mm(a, b, sa, sb, out_dtype=BF, use_fast_accum=True)
    for name, (n, k, calls) in FP8_LINEARS.items():
        x = torch.randn(m, k, device=device, dtype=BF)
        w = (torch.randn(n, k, device=device) / k ** 0.5).to(BF)
        g = torch.randn(m, n, device=device, dtype=BF)
        (x8, sx), (g8, sg) = q_row(x), q_row(g)
        w8, sw = q_row(w)  # rows of W are output features: the forward's column scales
        wt8, swt = q_row(w.t().contiguous())  # the input gradient sums over W's rows: scales per input feature
        (gt8, sgt), (xt8, sxt) = q_t(g), q_t(x)
        bf16 = {"fwd": lambda: x @ w.t(), "dgrad": lambda: g @ w, "wgrad": lambda: g.t() @ x}
        fp8 = {"fwd": lambda: mm(x8, w8.t(), sx, sw.t()), "dgrad": lambda: mm(g8, wt8.t(), sg, swt.t()),
               "wgrad": lambda: mm(gt8, xt8.t(), sgt, sxt)}
        casts = {"fwd": lambda: q_row(x), "dgrad": lambda: q_row(g), "wgrad": lambda: (q_t(g), q_t(x))}
        row = {"n": n, "k": k, "calls_per_microstep": calls}
        for part in bf16:
            ref, got = bf16[part](), fp8[part]()
            row[part] = {"bf16_ms": timer(bf16[part]), "fp8_ms": timer(fp8[part]), "cast_ms": timer(casts[part]),
                         "rel_err": rel_err(got, ref)}
        rows[name] = row
    return rows


def check_fp8(m: int = M, device: str = "cuda", timer=bench, microsteps: int = 8) -> dict:
    rows = fp8_gemms(m, device, timer)
    total = {"bf16_ms": 0.0, "fp8_ms": 0.0, "cast_ms": 0.0}
    for row in rows.values():
        for part in ("fwd", "dgrad", "wgrad"):
            for key in total:
                total[key] += row[part][key] * row["calls_per_microstep"] * microsteps
    total["saved_ms"] = total["bf16_ms"] - total["fp8_ms"] - total["cast_ms"]
    total["saved_ms_casts_fused"] = total["bf16_ms"] - total["fp8_ms"] - total["cast_ms"] / 3
    return {"matmuls": rows, "per_step_preloop": total, "shape": {"M": m, "microsteps": microsteps},
            "ok": all(r[p]["rel_err"] < 0.1 for r in rows.values() for p in ("fwd", "dgrad", "wgrad"))}


def varlen_repeat(q, k, v, cu, max_seqlen=SEQ):
    from torch.nn.attention.varlen import varlen_attn
    r = q.size(1) // k.size(1)
    return varlen_attn(q, k.repeat_interleave(r, 1), v.repeat_interleave(r, 1), cu, cu, max_seqlen, max_seqlen,
                       window_size=(-1, 0))


def attn_inputs(n: int, seed=0):
    torch.manual_seed(seed)
    q = torch.randn(n, H, HD, device="cuda", dtype=BF, requires_grad=True)
    k = torch.randn(n, HKV, HD, device="cuda", dtype=BF, requires_grad=True)
    v = torch.randn(n, HKV, HD, device="cuda", dtype=BF, requires_grad=True)
    return q, k, v, torch.randn(n, H, HD, device="cuda", dtype=BF)


def check_gqa() -> dict:
    q, k, v, g = attn_inputs(M)
    cu = doc_cu()
    gqa = lambda a, b, c: torch.ops.golf.flash_varlen(a, b, c, cu, SEQ)[0]
    rep = lambda a, b, c: varlen_repeat(a, b, c, cu)
    ref, got = fwd_bwd(rep, (q, k, v), g), fwd_bwd(gqa, (q, k, v), g)
    errs = {n: rel_err(a, b) for n, a, b in zip(("out", "dq", "dk", "dv"), got, ref)}
    ms = {"varlen_repeat_kv": bench(lambda: fwd_bwd(rep, (q, k, v), g)),
          "flash_varlen_gqa": bench(lambda: fwd_bwd(gqa, (q, k, v), g))}
    return {"rel_err": errs, "ok": max(errs.values()) < 1e-2, "ms_fwd_bwd": ms}


def check_fa3_standin() -> dict:
    sys.path.insert(0, str(HERE.parent / "tests" / "trainer" / "fa3_standin"))
    import flash_attn_interface as fa
    n = 4096
    q, k, v, g = attn_inputs(n, seed=1)
    cu = torch.tensor([0, 700, 1900, 2048, 3000, 4096] + [4096] * 58, dtype=torch.int32, device="cuda")
    res = {}
    for name in ("varlen", "fa3"):
        T.select_attention(torch.device("cuda"), name)
        fn = torch.compile(lambda a, b, c: T.attend(a[None], b[None], c[None], cu, SEQ)[0], fullgraph=True)
        res[name] = fwd_bwd(fn, (q, k, v), g)
        torch._dynamo.reset()
    T.select_attention(torch.device("cuda"), "auto")
    errs = {n: rel_err(a, b) for n, a, b in zip(("out", "dq", "dk", "dv"), res["fa3"], res["varlen"])}
    return {"rel_err": errs, "ok": max(errs.values()) < 2e-2, "standin_calls": dict(fa.CALLS),
            "shape": {"tokens": n, "segments": 5}}


def cu_padded(cu: torch.Tensor, entries: int) -> torch.Tensor:
    """cu_seqlens with its trailing empty sequences (entries equal to the total) cut or added to `entries` in all,
    as the trainer's loader pads them (CU_PAD_COMPILED) so that one compiled graph serves every batch."""
    used = T.cu_entries_in_use(cu.cpu().numpy())
    if entries < used:
        raise ValueError(f"cu_seqlens has {used} entries in use, more than {entries}")
    return torch.cat([cu[:used], cu.new_full((entries - used,), int(cu[-1]))])


def fa4_by_cu_entries(q, k, v, g, cu) -> dict:
    """flash-attn-4 forward + backward with the same sequences and cu_seqlens of different lengths: only its
    entries in use, and padded as the trainer pads them (512 entries; 1024 for the benchmarks' synthetic data, whose
    ~770 short documents a micro-step need two blocks of 512). FA4 gives each entry a tile of slack in its fp32
    dQ/dK/dV accumulators, which are zero-filled and postprocessed: what the padding costs a call. Last, 1024
    entries with the count in use handed to the op with ATTN_CU_TRIM on, as training steps call it: the op should
    run at the in-use figure."""
    used = T.cu_entries_in_use(cu.cpu().numpy())
    res = {"entries_in_use": used}
    for entries in (used, 512, 1024):
        c = cu_padded(cu, entries)
        fn = lambda a, b, d: torch.ops.golf.fa4_varlen(a, b, d, c, SEQ)[0]
        res[str(entries)] = bench(lambda: fwd_bwd(fn, (q, k, v), g))
    c, n = cu_padded(cu, 1024), torch.tensor(used)
    T.select_attention(torch.device("cuda"), "fa4", cu_trim=True)
    fn = lambda a, b, d: torch.ops.golf.fa4_varlen(a, b, d, c, SEQ, n)[0]
    res["1024_trimmed"] = bench(lambda: fwd_bwd(fn, (q, k, v), g))
    return res


def check_fa4() -> dict:
    """The trainer's golf::fa4_varlen (FA4's forward and backward behind the custom op), eager and through
    attend() compiled with fullgraph=True, against golf::flash_varlen; timed against both varlen paths."""
    t0 = time.perf_counter()
    assert T.select_attention(torch.device("cuda"), "fa4") == "fa4"
    out = {"import_s": time.perf_counter() - t0}
    q, k, v, g = attn_inputs(M)
    cu = doc_cu()
    fa4 = lambda a, b, c: torch.ops.golf.fa4_varlen(a, b, c, cu, SEQ)[0]
    gqa = lambda a, b, c: torch.ops.golf.flash_varlen(a, b, c, cu, SEQ)[0]
    t0 = time.perf_counter()
    got = fwd_bwd(fa4, (q, k, v), g)
    out["first_call_s"] = time.perf_counter() - t0  # the CuTe DSL compiles FA4's kernels on first use
    ref = fwd_bwd(gqa, (q, k, v), g)
    compiled = torch.compile(lambda a, b, c: T.attend(a[None], b[None], c[None], cu, SEQ)[0], fullgraph=True)
    traced = fwd_bwd(compiled, (q, k, v), g)
    names = ("out", "dq", "dk", "dv")
    out["rel_err"] = {n: rel_err(a, b) for n, a, b in zip(names, got, ref)}
    out["rel_err_compiled"] = {n: rel_err(a, b) for n, a, b in zip(names, traced, ref)}
    out["ok"] = max(*out["rel_err"].values(), *out["rel_err_compiled"].values()) < 2e-2
    out["ms_fwd_bwd"] = {"fa4": bench(lambda: fwd_bwd(fa4, (q, k, v), g)),
                         "flash_varlen_gqa": bench(lambda: fwd_bwd(gqa, (q, k, v), g)),
                         "varlen_repeat_kv": bench(lambda: fwd_bwd(lambda a, b, c: varlen_repeat(a, b, c, cu),
                                                                   (q, k, v), g))}
    # the kernels' own time too: the sixteenth session's first fa4 figure read 3.32 ms by the clock where the same
    # call took 2.07 seconds later (and 2.10-2.13 in thirteen sessions); the busy time tells such a reading apart
    out["gpu_busy_ms_fwd_bwd"] = {"fa4": busy_ms(lambda: fwd_bwd(fa4, (q, k, v), g)),
                                  "flash_varlen_gqa": busy_ms(lambda: fwd_bwd(gqa, (q, k, v), g))}
    out["ms_fwd_bwd_by_cu_entries"] = fa4_by_cu_entries(q, k, v, g, cu)
    torch._dynamo.reset()
    T.select_attention(torch.device("cuda"), "auto")
    return out


def main() -> None:
    path = sys.argv[1]
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else ["mlp", "gqa", "fa3", "fa4", "mlp-tiles", "loss"]
    res = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device",
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": " ".join(sys.argv)}
    T.select_attention(torch.device("cuda"), "auto")
    try:
        import triton
        res["triton"] = triton.__version__
    except ImportError:
        res["triton"] = None
    checks = {"mlp": check_mlp, "gqa": check_gqa, "fa3": check_fa3_standin, "fa4": check_fa4,
              "mlp-tiles": check_mlp_tiles, "mlp-signs": check_mlp_signs, "loss": check_loss, "fp8": check_fp8,
              "qk": check_qk, "xsa": check_xsa}
    for name, fn in ((n, checks[n]) for n in only):
        t0 = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as e:  # one failing check must not hide the others' results
            res[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000],
                         "traceback": traceback.format_exc()[-3000:]}
        res[name]["wall_s"] = time.perf_counter() - t0
        print(name, json.dumps(res[name], indent=1), flush=True)
        Path(path).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
