"""Where a training step's GPU time goes: the record configuration on one GPU (grad accumulation 8),
compiled as train_gpt.py compiles it, profiled with torch.profiler for one optimizer step without looping
and one with looping. Kernels are grouped by kind. Prints JSON (and writes it to argv[1] if given).
With TORCHINDUCTOR_BENCHMARK_KERNEL=1 (its own compile: Inductor's configuration is part of its cache key) each
phase also says how far Inductor's kernels are from the bandwidth of a device copy (inductor_bytes.py). Each
phase's `idle` says where the GPU waited on the host inside the step (step_gaps.py), and `inductor_origins` which
ops its largest Inductor kernels compute (inductor_origins.py: Inductor's comments in its code cache). A third phase,
`preloop_one_microbatch`, takes optimizer steps of one microbatch each: one GPU's share of an 8-GPU step.
Usage: DATA_DIR=... python benchmarks/profile_step.py [out.json]"""
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_gpt as T  # noqa: E402
from inductor_bytes import bandwidth, read_cache  # noqa: E402
from inductor_origins import largest_origins  # noqa: E402
from profile_kinds import summarize  # noqa: E402

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
    figures, inductor_rows = summarize(prof, step_ms)
    return {"first_two_steps_s (includes compilation)": warm,
            "tokens_per_s": h.grad_accum_steps * loader.L / (step_ms / 1000), **figures}, inductor_rows


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
           "qk_kernel": T._QK["kernel"], "xsa_kernel": T._XSA["kernel"], "phases": {}}
    inductor_rows = {}  # phase -> (full kernel name, ms, launches) of Inductor's kernels
    for looping in (False, True):
        model.looping = looping
        name = "loop" if looping else "preloop"
        out["phases"][name], inductor_rows[name] = profile_phase(h, fn, opt, loader, ema)
    # A step of one microbatch, on the pre-loop graph already compiled: one GPU's step of an 8-GPU run (without
    # its communication), where the host's share of a step, eight times larger than above, is measured directly.
    model.looping = False
    out["phases"]["preloop_one_microbatch"], _ = profile_phase(one_microbatch(h), fn, opt, loader, ema)
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    if os.environ.get("TORCHINDUCTOR_BENCHMARK_KERNEL") == "1":  # both phases' graphs are compiled by now
        gb, bw = read_cache(Path(cache_dir())), copy_gb_per_s(dev)
        for name, rows in inductor_rows.items():
            out["phases"][name]["inductor_bytes"] = bandwidth(rows, gb, bw)
    for name, rows in inductor_rows.items():  # which ops the largest Inductor kernels compute
        out["phases"][name]["inductor_origins"] = largest_origins(rows, Path(cache_dir()))
    text = json.dumps(out, indent=2)
    print(text)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)


if __name__ == "__main__":
    main()
