"""Loss equivalence of a fused Triton kernel on the CPU: train_gpt.py on the tests' tiny configuration, run to
the end three times on one dataset, the kernel's setting at `plain` and at `triton` under Triton's interpreter
(TRITON_INTERPRET=1), and at `torch` (the same custom ops with torch math: the same formulas rounded another
way, the noise floor), compared on what a kernel error would move: the training loss of every step (logged to
4 decimals), the diagnostic validation losses (8 decimals) and the final weights (final_model.pt, EMA applied).
--kernel mlp: MLP_KERNEL (the fused up-projection + LeakyReLU²); --kernel loss: LOSS_KERNEL (the fused
soft-capped cross-entropy); --kernel qk: QK_KERNEL (the fused q/k RMSNorm + RoPE); --kernel xsa: XSA_KERNEL (the
fused XSA); --tiles SPEC runs the MLP
kernels under that launch configuration (MLP_TILE_UP and MLP_TILE_GRAD, e.g. a persistent one ending in ,1).
Too slow for the test suite (the interpreter runs a step about ten times slower than plain); the suite keeps
short runs (tests/trainer/test_kernels.py, test_loss_kernel.py, test_qk_kernel.py, test_xsa_kernel.py). Writes one JSON with
machine, command and date.

Usage: .venv/bin/python benchmarks/kernel_equivalence_cpu.py [--kernel mlp|loss|qk|xsa] [--steps 40] [--tiles SPEC]
                                                            [--out benchmarks/results/cpu-KERNEL-equivalence.json]
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

# Stated before measuring: the fp32 CPU path differs only in the order of the sums inside the kernel.
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


SETTINGS = {"mlp": "MLP_KERNEL", "loss": "LOSS_KERNEL", "qk": "QK_KERNEL", "xsa": "XSA_KERNEL"}


def run(which: str, kernel: str, data: Path, out: Path, steps: int, tiles: str = "") -> dict:
    extra = {"ITERATIONS": str(steps), "TRAIN_LOG_EVERY": "1", SETTINGS[which]: kernel,
             "MLP_TILE_UP": tiles, "MLP_TILE_GRAD": tiles}
    if kernel == "triton":
        extra["TRITON_INTERPRET"] = "1"
    t0 = time.perf_counter()
    proc = run_trainer(data, out, extra, timeout=3600)
    res = read_results(out)
    assert res["versions"][SETTINGS[which].lower()] == kernel, res["versions"]
    if tiles:  # the launch configuration the kernels ran under, as the trainer resolved it
        assert all(",".join(map(str, t.values())) == tiles for t in res["versions"]["mlp_tiles"].values()), res["versions"]
    return {"wall_s": round(time.perf_counter() - t0, 1), "train_losses": train_losses(proc.stdout),
            "evals": {e["label"]: e["val_loss"] for e in res["evals"]}, "tokens_per_s": res["tokens_per_s"],
            "state": torch.load(out / "final_model.pt", map_location="cpu")}


def weight_error(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max() / b[k].float().abs().max().clamp_min(1e-30)) for k in b)


def differences(got: dict, ref: dict) -> dict:
    """Largest |got - ref| of the training losses, the validation losses and (relative) the final weights."""
    return {"train_loss": max(abs(a - b) for a, b in zip(got["train_losses"], ref["train_losses"])),
            "val_loss": max(abs(got["evals"][k] - v) for k, v in ref["evals"].items()),
            "weights_rel": weight_error(got["state"], ref["state"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", choices=sorted(SETTINGS), default="mlp")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--tiles", default="", help="MLP_TILE_UP and MLP_TILE_GRAD of the runs ('' = the default)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    name = f"cpu-{args.kernel}{'-persistent' if args.tiles.endswith(',1') else ''}-equivalence"
    out = args.out or REPO / f"benchmarks/results/{name}.json"
    about = machine()  # the load average before our own runs add to it
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        build_dataset(data, vocab_size=512, train_docs=2000, val_docs=200, train_shards=2, seed=1234)  # the tests' set
        # torch: the same custom ops with torch math, the same formulas rounded another way: the noise floor
        runs = {k: run(args.kernel, k, data, Path(tmp) / k, args.steps, args.tiles) for k in ("plain", "triton", "torch")}
    assert all(len(r["train_losses"]) == args.steps for r in runs.values())
    diff, floor = differences(runs["triton"], runs["plain"]), differences(runs["torch"], runs["plain"])
    for r in runs.values():
        del r["state"]
    res = {"name": name, "date": now_iso(), "machine": about, "setting": SETTINGS[args.kernel], "tiles": args.tiles,
           "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "config": "tests/trainer/conftest.py TINY_ENV (4 layers, d 64, hidden 256, vocab 512, 2,048 tokens "
                     "per step in 8 micro-steps), ITERATIONS=" + str(args.steps),
           "max_abs_diff": diff, "noise_floor_torch_math": floor,
           "tolerance": {"train_loss": TOL_TRAIN_LOSS, "val_loss": TOL_VAL_LOSS, "weights_rel": TOL_WEIGHTS},
           "runs": runs}
    res["equivalent"] = (diff["train_loss"] <= TOL_TRAIN_LOSS and diff["val_loss"] <= TOL_VAL_LOSS
                         and diff["weights_rel"] <= TOL_WEIGHTS)
    write_json_atomic(out, res)
    print(f"{out}: equivalent={res['equivalent']} max |d| " + ", ".join(
        f"{k} {diff[k]:.1e} (torch math {floor[k]:.1e})" for k in diff)
        + "; wall " + ", ".join(f"{k} {r['wall_s']} s" for k, r in runs.items()))
    sys.exit(0 if res["equivalent"] else 1)


if __name__ == "__main__":
    main()
