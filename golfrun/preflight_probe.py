"""The preflight benchmark, run as a file by the trainer's interpreter (torch only in this process):

    python golfrun/preflight_probe.py --data-dir DIR --attention auto|fa3|fa2|varlen|sdpa [--gpus N]

prints one JSON object (schema golfrun.preflight/1), in seconds, not minutes:
- gpus[{index, name, matmul_bf16_tflops}]: a bf16 8192³ matrix multiply on each GPU;
- h2d_gbs: a 1 GiB pinned host-to-device copy on GPU 0;
- allreduce{gpus, mib, busbw_gbs, algbw_gbs}: NCCL all-reduce of 256 MiB across the GPUs, one
  process per GPU (bus bandwidth as nccl-tests defines it: algbw · 2(n−1)/n);
- attention{kernel, ok, ms, error}: a real forward and backward of the kernel the campaign needs
  (fa3 = flash_attn_interface, fa2 = flash_attn, varlen = torch's varlen_attn, sdpa), checked finite;
- disk{path, mb_s, bytes, files}: reading the data folder's files (page cache dropped first
  where the kernel allows it);
- skipped{figure: why}: what could not be measured here (no GPU, one GPU, no NCCL, no data).

GOLFRUN_PREFLIGHT_TEST_FIGURES (JSON) is merged over the result: used only by golfrun's tests, to
make a CPU machine look like a slow or a healthy GPU pod. Never set it on a real machine.
"""

from __future__ import annotations

import sys

# Run as a file, Python puts golfrun/ first on sys.path, where golfrun's own modules (secrets.py,
# …) shadow the standard library's for torch (torch._dynamo then fails to import): take it off.
if sys.path and sys.path[0] and __file__.startswith(sys.path[0].rstrip("/") + "/"):
    sys.path.pop(0)

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEMA = "golfrun.preflight/1"
MATMUL_N = 8192
H2D_MIB = 1024
ALLREDUCE_MIB = 256
DISK_MAX_BYTES = 1 << 30
TEST_ENV = "GOLFRUN_PREFLIGHT_TEST_FIGURES"


def _timed(torch: Any, fn: Any, iters: int, warmup: int = 2) -> float:
    """Seconds per call of fn on the current CUDA device."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def bench_matmul(torch: Any, index: int) -> float:
    device = torch.device("cuda", index)
    with torch.cuda.device(device):
        a = torch.randn(MATMUL_N, MATMUL_N, device=device, dtype=torch.bfloat16)
        b = torch.randn(MATMUL_N, MATMUL_N, device=device, dtype=torch.bfloat16)
        s = _timed(torch, lambda: a @ b, iters=20, warmup=3)
    return round(2 * MATMUL_N**3 / s / 1e12, 1)


def bench_h2d(torch: Any) -> float:
    host = torch.empty(H2D_MIB * 2**20, dtype=torch.uint8).pin_memory()
    dev = torch.empty_like(host, device="cuda:0")
    with torch.cuda.device(0):
        s = _timed(torch, lambda: dev.copy_(host, non_blocking=True), iters=5)
    return round(H2D_MIB * 2**20 / s / 1e9, 1)


def _attention_call(torch: Any, kernel: str) -> Any:
    """(q, k, v) → output, for the kernel; q/k/v are (B, T, H, D)."""
    if kernel == "fa3":
        import flash_attn_interface as fa3

        def call(q: Any, k: Any, v: Any) -> Any:
            out = fa3.flash_attn_func(q, k, v, causal=True)
            return out[0] if isinstance(out, tuple) else out
        return call
    if kernel == "fa2":
        from flash_attn import flash_attn_func

        return lambda q, k, v: flash_attn_func(q, k, v, causal=True)
    if kernel == "varlen":
        from torch.nn.attention.varlen import varlen_attn

        def call(q: Any, k: Any, v: Any) -> Any:
            b, t, h, d = q.shape
            cu = torch.arange(0, (b + 1) * t, t, device=q.device, dtype=torch.int32)
            flat = [x.reshape(b * t, h, d) for x in (q, k, v)]
            try:  # causal as the trainer asks for it; older torch spelled it is_causal
                out = varlen_attn(*flat, cu, cu, t, t, window_size=(-1, 0))
            except TypeError:
                out = varlen_attn(*flat, cu, cu, t, t, is_causal=True)
            return out.reshape(b, t, h, d)
        return call
    import torch.nn.functional as F

    return lambda q, k, v: F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2)


def bench_attention(torch: Any, kernel: str, cuda: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"kernel": kernel, "ok": False}
    try:
        call = _attention_call(torch, kernel)
        device, dtype = ("cuda:0", torch.bfloat16) if cuda else ("cpu", torch.float32)
        shape = (2, 2048, 8, 64) if cuda else (1, 128, 2, 16)
        q, k, v = (torch.randn(*shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        t0 = time.perf_counter()
        y = call(q, k, v)
        y.float().square().mean().backward()
        if cuda:
            torch.cuda.synchronize()
        out["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        finite = all(bool(torch.isfinite(x).all()) for x in (y, q.grad, k.grad, v.grad))
        out["ok"] = finite and tuple(y.shape) == shape
        if not out["ok"]:
            out["error"] = "non-finite output or gradient" if not finite else f"output shape {tuple(y.shape)}"
    except Exception as exc:  # a missing or broken kernel is the finding, not a crash
        out["error"] = f"{type(exc).__name__}: {exc}"[:500]
    return out


def pick_attention(torch: Any, requested: str, cuda: bool) -> str:
    """The kernel the trainer would take (train_gpt.py select_attention) unless one is required."""
    if requested != "auto":
        return requested
    if cuda:
        for kernel, module in (("fa3", "flash_attn_interface"), ("varlen", "torch.nn.attention.varlen")):
            try:
                __import__(module)
                return kernel
            except ImportError:
                pass
    return "sdpa"


def bench_disk(folder: str) -> dict[str, Any]:
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file()) if folder and Path(folder).is_dir() else []
    if not files:
        return {"path": folder, "skipped": f"no files under {folder or '(no data folder)'}"}
    total, t0 = 0, time.perf_counter()
    for path in sorted(files, key=lambda p: -p.stat().st_size):
        with open(path, "rb") as f:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            while chunk := f.read(16 << 20):
                total += len(chunk)
                if total >= DISK_MAX_BYTES:
                    break
        if total >= DISK_MAX_BYTES:
            break
    seconds = max(time.perf_counter() - t0, 1e-9)
    return {"path": folder, "mb_s": round(total / seconds / 1e6, 1), "bytes": total, "files": len(files)}


def _allreduce_rank(rank: int, world: int, port: int, out_path: str) -> None:
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    x = torch.ones(ALLREDUCE_MIB * 2**20 // 2, dtype=torch.bfloat16, device="cuda")
    for _ in range(3):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    dist.barrier()
    iters, t0 = 10, time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / iters
    if rank == 0:
        algbw = ALLREDUCE_MIB * 2**20 / seconds / 1e9
        Path(out_path).write_text(json.dumps({"gpus": world, "mib": ALLREDUCE_MIB, "algbw_gbs": round(algbw, 1),
                                              "busbw_gbs": round(algbw * 2 * (world - 1) / world, 1)}))
    dist.destroy_process_group()


def bench_allreduce(torch: Any, world: int) -> dict[str, Any]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out_path = str(Path(tmp) / "allreduce.json")
        mp.spawn(_allreduce_rank, args=(world, port, out_path), nprocs=world, join=True)
        return dict(json.loads(Path(out_path).read_text()))


def gpu_figures(torch: Any, n: int, result: dict[str, Any]) -> None:
    skipped = result["skipped"]
    result["gpus"] = [{"index": i, "name": torch.cuda.get_device_name(i), "matmul_bf16_tflops": bench_matmul(torch, i)}
                      for i in range(n)]
    result["h2d_gbs"] = bench_h2d(torch)
    if n < 2:
        skipped["allreduce"] = "one GPU: there is nothing to all-reduce across"
    elif not torch.distributed.is_available() or not torch.distributed.is_nccl_available():
        skipped["allreduce"] = "this torch has no NCCL"
    else:
        result["allreduce"] = bench_allreduce(torch, n)


def measure(data_dir: str, attention: str, gpus: int) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    n = min(gpus or torch.cuda.device_count(), torch.cuda.device_count()) if cuda else 0
    result: dict[str, Any] = {"schema": SCHEMA, "torch": torch.__version__, "device": "cuda" if cuda else "cpu",
                              "gpus": [], "skipped": {}}
    if cuda and n:
        gpu_figures(torch, n, result)
    else:
        for figure in ("matmul_bf16_tflops", "h2d_gbs", "allreduce"):
            result["skipped"][figure] = "no CUDA GPU on this machine"
    result["attention"] = bench_attention(torch, pick_attention(torch, attention, cuda), cuda)
    result["disk"] = bench_disk(data_dir)
    if "skipped" in result["disk"]:
        result["skipped"]["disk"] = result["disk"]["skipped"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--attention", default="auto", choices=("auto", "fa3", "fa2", "varlen", "sdpa"))
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to measure; 0 = every visible one")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    result = measure(args.data_dir, args.attention, args.gpus)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if os.environ.get(TEST_ENV):
        result.update(json.loads(os.environ[TEST_ENV]))
        result["test_figures"] = True
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
