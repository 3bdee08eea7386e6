"""Attention kernels for the record's packed training shape on one GPU: 98,304 tokens per micro-step,
8 query heads, 4 KV heads, head_dim 64, bf16, documents cut at 2048 (cu_seqlens).

Times forward+backward of each candidate and checks it against the reference (torch varlen flash).
cuDNN / flash SDPA run the dense causal (48, 2048) layout, which ignores document boundaries: they are
an upper bound on speed for the varlen case, not a substitute. Prints one JSON object.
Usage: python benchmarks/attn_bench.py [out.json]"""
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

T, H, HKV, D, SEQ = 98304, 8, 4, 64, 2048


def doc_cu(seed=0):
    rng = np.random.default_rng(seed)
    starts, pos = [0], 0
    while pos < T:
        pos += int(rng.exponential(700)) + 16  # synthetic document lengths
        if pos < T:
            starts.append(pos)
    cu = []
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else T
        cu.extend(range(s, e, SEQ))
    cu.append(T)
    cu += [T] * ((-len(cu)) % 64)
    return torch.tensor(cu, dtype=torch.int32, device="cuda")


def bench(fn, iters=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / iters


def main():
    torch.manual_seed(0)
    q = torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(T, HKV, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(T, HKV, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16)
    cu = doc_cu()
    out = {"shape": {"tokens": T, "heads": H, "kv_heads": HKV, "head_dim": D, "max_seqlen": SEQ,
                     "segments": int((cu[1:] > cu[:-1]).sum())},
           "device": torch.cuda.get_device_name(), "torch": torch.__version__, "ms_fwd_bwd": {}, "notes": {}}
    res = out["ms_fwd_bwd"]

    from torch.nn.attention.varlen import varlen_attn
    import inspect
    gqa = "enable_gqa" in inspect.signature(varlen_attn).parameters

    def run_varlen():
        kk, vv = (k, v) if gqa else (k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
        kw = {"enable_gqa": True} if gqa else {}
        o = varlen_attn(q, kk, vv, cu, cu, SEQ, SEQ, window_size=(-1, 0), **kw)
        o.backward(g)
        return o
    ref = run_varlen().detach()
    res["torch_varlen_attn"] = bench(run_varlen)
    out["notes"]["torch_varlen_attn"] = f"native GQA: {gqa}"

    try:
        from torch.nn.attention.flex_attention import flex_attention, create_block_mask
        seg = torch.searchsorted(cu, torch.arange(T, device="cuda", dtype=torch.int32), right=True)

        def mask_mod(b, h, qi, ki):
            return (seg[qi] == seg[ki]) & (qi >= ki)
        t0 = time.perf_counter()
        bm = create_block_mask(mask_mod, None, None, T, T, device="cuda")
        out["notes"]["flex_block_mask_ms"] = 1000 * (time.perf_counter() - t0)
        flex = torch.compile(flex_attention)

        def run_flex():
            o = flex(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], block_mask=bm,
                     enable_gqa=True)
            o.backward(g.transpose(0, 1)[None])
            return o
        o = run_flex().detach()[0].transpose(0, 1)
        out["notes"]["flex_max_abs_diff_vs_varlen"] = float((o.float() - ref.float()).abs().max())
        res["flex_attention (doc mask)"] = bench(run_flex)
    except Exception as e:  # noqa: BLE001 - report, keep benchmarking the others
        out["notes"]["flex_attention"] = f"failed: {type(e).__name__}: {e}"[:300]

    from torch.nn.attention import SDPBackend, sdpa_kernel
    qd = q.detach().view(48, SEQ, H, D).transpose(1, 2).requires_grad_()
    kd = k.detach().view(48, SEQ, HKV, D).transpose(1, 2).requires_grad_()
    vd = v.detach().view(48, SEQ, HKV, D).transpose(1, 2).requires_grad_()
    gd = g.view(48, SEQ, H, D).transpose(1, 2)
    for name, backend in (("sdpa_cudnn dense causal (no doc mask)", SDPBackend.CUDNN_ATTENTION),
                          ("sdpa_flash dense causal (no doc mask)", SDPBackend.FLASH_ATTENTION)):
        def run_sdpa(backend=backend):
            with sdpa_kernel([backend]):
                kk, vv = kd.repeat_interleave(2, 1), vd.repeat_interleave(2, 1)
                o = F.scaled_dot_product_attention(qd, kk, vv, is_causal=True)
            o.backward(gd)
            return o
        try:
            res[name] = bench(run_sdpa)
        except Exception as e:  # noqa: BLE001
            out["notes"][name] = f"failed: {type(e).__name__}: {e}"[:300]
    text = json.dumps(out, indent=2)
    print(text)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(text)


if __name__ == "__main__":
    main()
