"""Where a training step's GPU time goes: the record configuration on one GPU (grad accumulation 8),
compiled as train_gpt.py compiles it, profiled with torch.profiler for one optimizer step without looping
and one with looping. Kernels are grouped by kind. Prints JSON (and writes it to argv[1] if given).
With TORCHINDUCTOR_BENCHMARK_KERNEL=1 (its own compile: Inductor's configuration is part of its cache key) each
phase also says how far Inductor's kernels are from the bandwidth of a device copy (inductor_bytes.py). Each
phase's `idle` says where the GPU waited on the host inside the step (step_gaps.py). A third phase,
`preloop_one_microbatch`, takes optimizer steps of one microbatch each: one GPU's share of an 8-GPU step.
Usage: DATA_DIR=... python benchmarks/profile_step.py [out.json]"""
import copy
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_gpt as T  # noqa: E402
from inductor_bytes import bandwidth, read_cache  # noqa: E402
from step_gaps import idle_gaps, intervals  # noqa: E402

INDUCTOR = "inductor triton (fused elementwise/norm/loss)"


def kind(name: str) -> str:
    n = name.lower()
    if n.startswith(("_mlp_", "_softcap_", "_qk_norm_rope")):  # train_gpt.py's own Triton kernels (no "triton" in
        return "ours (fused MLP, loss and q/k norm, Triton)"  # their names); the q/k norm's since the tenth session
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


def copy_gb_per_s(dev: torch.device) -> float:
    """Bytes read and written per second by a 1 GiB device-to-device copy: the bandwidth a kernel can reach."""
    x = torch.empty(1 << 28, dtype=torch.float32, device=dev)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize()
    return 10 * 2 * x.nbytes / 1e9 / (start.elapsed_time(end) / 1000)


def profile_phase(h, fn, opt, loader, ema) -> tuple[dict, list]:
    """Two warm-up steps, three timed, one profiled: the phase's figures, and Inductor's kernels as
    (full name, ms, launches). Each step's loss is read back before the next starts, as in the record's loop."""
    t = time.perf_counter()
    for _ in range(2):
        T.train_step(h, fn, opt, loader).item()
    T.sync(loader.device)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(3):
        T.train_step(h, fn, opt, loader).item()
        ema.update()
    T.sync(loader.device)
    step_ms = 1000 * (time.perf_counter() - t) / 3
    on = torch.profiler.ProfilerActivity
    # the GPU's kernels; on a CPU (the tests) the host's ops, which hold no kernel time
    with torch.profiler.profile(activities=[on.CUDA if loader.device.type == "cuda" else on.CPU]) as prof:
        T.train_step(h, fn, opt, loader).item()
        ema.update()
        T.sync(loader.device)
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
    # the GPU's idle time inside the profiled step; outside it, the timed steps' wall time less this span:
    # the host's start of a step before its first kernel, and the wait for its loss after the last
    idle = idle_gaps(intervals(prof), kind)
    idle["outside_kernel_span_ms"] = round(step_ms - idle["span_ms"], 3)
    return {
        "first_two_steps_s (includes compilation)": warm, "step_ms": step_ms,
        "tokens_per_s": h.grad_accum_steps * loader.L / (step_ms / 1000),
        "gpu_kernel_ms": sum(groups.values()), "by_kind_ms": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "top_kernels_ms": [[round(ms, 2), k] for ms, k in top[:40]],
        # what each kind is made of, "other" included (the 40 largest overall can hide a kind's many small ones)
        "top_by_kind_ms": {g: [[round(ms, 2), k] for ms, k in sorted(v, reverse=True)[:8]]
                           for g, v in by_kind.items()},
        "idle": idle,
    }, inductor_rows


def one_microbatch(h):
    """h with optimizer steps of one microbatch (the loader's size: one GPU's share of an 8-GPU step)."""
    one = copy.copy(h)
    one.grad_accum_steps = 1
    return one


def main():
    h = T.Hyperparameters(dict(os.environ, TTT_ENABLED="0"))
    dev = torch.device("cuda", 0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    T.select_kernels(h, dev)  # as the trainer does: MLP tiles, loss kernel, FA4's backward included
    torch.manual_seed(0)
    model = T.build_model(h, dev)
    fn, _ = T.compile_model(h, model, dev)
    opt = T.Optimizers(model, h, 0, 1, dev)
    files = T.list_shards(h.train_files, "train")
    loader = T.DocumentPackingLoader(files, h.train_batch_tokens // 8, h.train_seq_len, 0, 1, dev, T.CU_PAD_COMPILED)
    ema = T.EMA(model, h.ema_decay)
    out = {"device": torch.cuda.get_device_name(), "attention": T.attention_backend_label(),
           "mlp_kernel": T._MLP["kernel"], "loss_kernel": T._LOSS["kernel"],
           "qk_kernel": T._QK["kernel"], "phases": {}}
    inductor_rows = {}  # phase -> (full kernel name, ms, launches) of Inductor's kernels
    for looping in (False, True):
        model.looping = looping
        name = "loop" if looping else "preloop"
        out["phases"][name], inductor_rows[name] = profile_phase(h, fn, opt, loader, ema)
    # A step of one microbatch, on the pre-loop graph already compiled: one GPU's step of an 8-GPU run (without
    # its communication), where the host's share of a step, eight times larger than above, is measured directly.
    model.looping = False
    out["phases"]["preloop_one_microbatch"], _ = profile_phase(one_microbatch(h), fn, opt, loader, ema)
    if os.environ.get("TORCHINDUCTOR_BENCHMARK_KERNEL") == "1":  # both phases' graphs are compiled by now
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        gb, bw = read_cache(Path(cache_dir())), copy_gb_per_s(dev)
        for name, rows in inductor_rows.items():
            out["phases"][name]["inductor_bytes"] = bandwidth(rows, gb, bw)
    text = json.dumps(out, indent=2)
    print(text)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)


if __name__ == "__main__":
    main()
