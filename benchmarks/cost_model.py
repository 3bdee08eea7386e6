"""The seed campaign's cost (gate-a, three eval-only corrector variants, gate-b with two new seeds,
8×H100 at 21.5 USD/h) by hand and with golfrun, from the record's timeline (trainer-facts §9) and the
compile-cache ratios measured on one H200 by the gpu1 campaign (benchmarks/results/h200-gpu1-ledger.json).

    python3 benchmarks/cost_model.py benchmarks/results/h200-gpu1-ledger.json   # prints the markdown table

Model: a job's GPU-seconds = its wall phases × 8 GPUs. A warm job pays its cold compile × the ratio
measured on the H200 (warm job's compile seconds / the cold job's), separately for the training graphs
and the TTT warm-up; nothing else changes with the cache.
"""

from __future__ import annotations

import json
import sys

GPUS = 8
USD_PER_HOUR = 21.5  # one 8×H100 pod
# Seed 0 of the record, seconds of wall (trainer-facts §9.4 timeline): launch to priming start,
# compile + priming, training with its validations and the pre-quantization diagnostic,
# serialization (Hessians, GPTQ, brotli), quantized diagnostic, TTT warm-up, TTT eval.
TRAIN_JOB = {"startup": 14.8, "compile_train": 326.4, "train": 667.5, "serialize": 87.5, "eval": 59.2,
             "compile_eval": 153.4, "ttt": 500.1}
# An eval-only corrector run on the quantized checkpoint (§9.4, ABL-*): start-up is not logged (20 s
# assumed: interpreter, data, deserialization), quantized diagnostic 12.0 s, warm-up 177.0–182.9 s,
# eval 462.8–472.4 s.
EVAL_JOB = {"startup": 20.0, "compile_train": 0.0, "train": 0.0, "serialize": 0.0, "eval": 12.0,
            "compile_eval": 180.0, "ttt": 467.6}


# gate-a's first attempt on the H200: 247.6 s of wall − 6.8 s start-up − 27.2 s training − 9.6 s launcher.
COLD_TRAIN_COMPILE_S = 204.0


def ratios(ledger: dict) -> tuple[float, float]:
    """(training-graph warm/cold, TTT warm-up warm/cold) from the gpu1 campaign on the H200.

    Warm: every job whose compile cache held the graph (`timings_s` compile_train / compile_eval > 0).
    Cold TTT warm-up: gate-a's (the campaign's first TTT compile). Cold training graphs: the first
    gate-a attempt, which compiled them and then failed before writing results.json, so its compile
    is its wall time minus start-up, training and launcher time as the rerun measured them
    (COLD_TRAIN_COMPILE_S, benchmarks/README.md)."""
    jobs = [j for s in ledger["stages"] for j in s["jobs"] if j.get("timings_s") and not j.get("cached")]
    warm_train = [j["timings_s"]["compile_train"] for j in jobs if j["timings_s"]["compile_train"] > 0]
    evals = [j["timings_s"]["compile_eval"] for j in jobs if j["timings_s"]["compile_eval"] > 0]
    cold_eval, warm_eval = evals[0], evals[1:]
    return (sum(warm_train) / len(warm_train)) / COLD_TRAIN_COMPILE_S, (sum(warm_eval) / len(warm_eval)) / cold_eval


def gpu_minutes(job: dict, r_train: float = 1.0, r_eval: float = 1.0) -> float:
    seconds = sum(job.values()) - job["compile_train"] * (1 - r_train) - job["compile_eval"] * (1 - r_eval)
    return seconds * GPUS / 60.0


def usd(minutes: float) -> float:
    return minutes / 60.0 / GPUS * USD_PER_HOUR


def main() -> None:
    r_train, r_eval = ratios(json.loads(open(sys.argv[1]).read())) if len(sys.argv) > 1 else (1.0, 1.0)
    train, ev = gpu_minutes(TRAIN_JOB), gpu_minutes(EVAL_JOB)
    train_w, ev_w = gpu_minutes(TRAIN_JOB, r_train, r_eval), gpu_minutes(EVAL_JOB, 1.0, r_eval)
    rows = [
        ("by hand: gate-a + 3 eval-only variants + 2 gate-b seeds", train + 3 * ev + 2 * train),
        ("golfrun, cache off (+ ablation's baseline re-evaluation)", train + 4 * ev + 2 * train),
        ("golfrun, one compile cache (every job after gate-a warm)", train + 4 * ev_w + 2 * train_w),
    ]
    print(f"warm/cold compile on the H200: training graphs {r_train:.3f}, TTT warm-up {r_eval:.3f}\n")
    print("| campaign | GPU-minutes | USD (21.5 USD/h per 8×H100) |\n|---|---|---|")
    for name, minutes in rows:
        print(f"| {name} | {minutes:,.0f} | {usd(minutes):.2f} |")
    print(f"\nper job: train+eval {train:.1f} GPU-min cold, {train_w:.1f} warm; eval-only {ev:.1f} cold, {ev_w:.1f} warm")


if __name__ == "__main__":
    main()
