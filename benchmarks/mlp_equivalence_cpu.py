"""Loss equivalence of the fused Triton MLP on the CPU: train_gpt.py on the tests' tiny configuration, run to
the end twice on one dataset, MLP_KERNEL=plain and MLP_KERNEL=triton under Triton's interpreter
(TRITON_INTERPRET=1), compared on what a kernel error would move: the training loss of every step (logged to
4 decimals), the diagnostic validation losses (8 decimals) and the final weights (final_model.pt, EMA applied).
Too slow for the test suite (the interpreter runs a step about ten times slower than plain); the suite keeps a
3-step run (tests/trainer/test_kernels.py). Writes one JSON with machine, command and date.

Usage: .venv/bin/python benchmarks/mlp_equivalence_cpu.py [--steps 40] [--out benchmarks/results/cpu-mlp-equivalence.json]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from golfrun.data.synthetic import build_dataset  # noqa: E402
from golfrun.fileio import now_iso, write_json_atomic  # noqa: E402
from tests.trainer.conftest import read_results, run_trainer  # noqa: E402
from tests.trainer.test_end_to_end import train_losses  # noqa: E402

# Stated before measuring: the fp32 CPU path differs only in the order of the sums inside the MLP matmuls.
TOL_TRAIN_LOSS = 1e-3   # per step, on losses logged to 4 decimals
TOL_VAL_LOSS = 1e-4     # the diagnostics, logged to 8 decimals
TOL_WEIGHTS = 1e-3      # max |w_triton - w_plain| / max |w_plain| over every tensor of final_model.pt


def machine() -> dict:
    import triton
    info = Path("/proc/cpuinfo")
    models = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines()
              if ln.startswith("model name")] if info.exists() else []
    return {"cpu": models[0] if models else platform.processor(), "cores": os.cpu_count(),
            "load_avg_at_start": os.getloadavg(), "python": platform.python_version(), "torch": torch.__version__,
            "triton": triton.__version__, "platform": platform.platform()}


def run(kernel: str, data: Path, out: Path, steps: int) -> dict:
    extra = {"ITERATIONS": str(steps), "TRAIN_LOG_EVERY": "1", "MLP_KERNEL": kernel}
    if kernel == "triton":
        extra["TRITON_INTERPRET"] = "1"
    t0 = time.perf_counter()
    proc = run_trainer(data, out, extra, timeout=3600)
    res = read_results(out)
    assert res["versions"]["mlp_kernel"] == kernel, res["versions"]
    return {"wall_s": round(time.perf_counter() - t0, 1), "train_losses": train_losses(proc.stdout),
            "evals": {e["label"]: e["val_loss"] for e in res["evals"]}, "tokens_per_s": res["tokens_per_s"],
            "state": torch.load(out / "final_model.pt", map_location="cpu")}


def weight_error(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max() / b[k].float().abs().max().clamp_min(1e-30)) for k in b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cpu-mlp-equivalence.json")
    args = ap.parse_args()
    about = machine()  # the load average before our own runs add to it
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        build_dataset(data, vocab_size=512, train_docs=2000, val_docs=200, train_shards=2, seed=1234)  # the tests' set
        runs = {k: run(k, data, Path(tmp) / k, args.steps) for k in ("plain", "triton")}
    plain, fused = runs["plain"], runs["triton"]
    assert len(plain["train_losses"]) == len(fused["train_losses"]) == args.steps
    d_train = max(abs(a - b) for a, b in zip(fused["train_losses"], plain["train_losses"]))
    d_val = max(abs(fused["evals"][k] - v) for k, v in plain["evals"].items())
    d_w = weight_error(fused.pop("state"), plain.pop("state"))
    res = {"name": "cpu-mlp-equivalence", "date": now_iso(), "machine": about,
           "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "config": "tests/trainer/conftest.py TINY_ENV (4 layers, d 64, hidden 256, vocab 512, 2,048 tokens "
                     "per step in 8 micro-steps), ITERATIONS=" + str(args.steps),
           "max_abs_diff": {"train_loss": d_train, "val_loss": d_val, "weights_rel": d_w},
           "tolerance": {"train_loss": TOL_TRAIN_LOSS, "val_loss": TOL_VAL_LOSS, "weights_rel": TOL_WEIGHTS},
           "runs": runs}
    res["equivalent"] = d_train <= TOL_TRAIN_LOSS and d_val <= TOL_VAL_LOSS and d_w <= TOL_WEIGHTS
    write_json_atomic(args.out, res)
    print(f"{args.out}: equivalent={res['equivalent']} max |d| train_loss {d_train:.1e} val_loss {d_val:.1e} "
          f"weights (rel) {d_w:.1e}; wall plain {plain['wall_s']} s, triton {fused['wall_s']} s")
    sys.exit(0 if res["equivalent"] else 1)


if __name__ == "__main__":
    main()
