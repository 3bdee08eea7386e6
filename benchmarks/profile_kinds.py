"""A torch.profiler capture of one training step, summarised: the GPU's kernel time by kind, the 40 largest
kernels, the 8 largest of each kind, and where the GPU waited (step_gaps.py). profile_step.py reads its captures
of our trainer with it and record_profile.py those of a record's own script, so the two compare kind by kind."""
from collections import defaultdict

from step_gaps import idle_gaps, intervals

INDUCTOR = "inductor triton (fused elementwise/norm/loss)"


def kind(name: str) -> str:
    n = name.lower()
    # train_gpt.py's own Triton kernels (no "triton" in their names); the q/k norm's since the tenth session, XSA's
    # since the nineteenth (before it, this kind was named "ours (fused MLP, loss and q/k norm, Triton)")
    if n.startswith(("_mlp_", "_softcap_", "_qk_norm_rope", "_xsa_")):
        return "ours (fused MLP, loss, q/k norm and XSA, Triton)"
    if n.startswith("linear_leaky_relu_square"):  # the record's fused MLP up-projection (trainer-facts §10.3)
        return "record's fused MLP (Triton)"
    if "flash" in n or "fmha" in n or "attn" in n:
        return "attention"
    if any(k in n for k in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "matmul")):
        return "matmul"
    if "adam" in n or "multi_tensor" in n or "foreach" in n:
        return "optimizer (Adam/EMA foreach)"
    if "triton" in n:
        return INDUCTOR
    if "memcpy" in n or "memset" in n or "copy" in n:
        return "copies"
    return "other"


def summarize(prof, step_ms: float) -> tuple[dict, list]:
    """A finished capture of one step whose wall time was `step_ms`: its figures, and Inductor's kernels as
    (full name, ms, launches) for inductor_bytes.py."""
    groups = defaultdict(float)
    top = []
    by_kind = defaultdict(list)
    inductor_rows = []
    for e in prof.key_averages():
        us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        if us <= 0:
            continue
        groups[kind(e.key)] += us / 1000
        top.append((us / 1000, e.key[:120]))
        by_kind[kind(e.key)].append((us / 1000, e.key[:120]))
        if kind(e.key) == INDUCTOR:
            inductor_rows.append((e.key, us / 1000, e.count))
    top.sort(reverse=True)
    # the GPU's idle time inside the profiled step; outside it, the step's wall time less this span: the host's
    # start of a step before its first kernel, and the wait for its loss after the last
    idle = idle_gaps(intervals(prof), kind)
    idle["outside_kernel_span_ms"] = round(step_ms - idle["span_ms"], 3)
    return {
        "step_ms": step_ms,
        "gpu_kernel_ms": sum(groups.values()), "by_kind_ms": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "top_kernels_ms": [[round(ms, 2), k] for ms, k in top[:40]],
        # what each kind is made of, "other" included (the 40 largest overall can hide a kind's many small ones)
        "top_by_kind_ms": {g: [[round(ms, 2), k] for ms, k in sorted(v, reverse=True)[:8]]
                           for g, v in by_kind.items()},
        "idle": idle,
    }, inductor_rows
