"""The training phase of a published record's own train_gpt.py (PR #1610's; any script that logs as it does), run
and read the way bench_train_phase.py runs and reads ours: the issue's yardstick, the record's tokens/s on the same
GPU. FlashAttention-3 is replaced by record_fa3/ (torch's flash-2 varlen kernel, K/V repeated for GQA: the
attention of our `baseline`), since no FA3 wheel reaches the lent GPUs.

The record logs the rate over the training time so far; with TRAIN_LOG_EVERY=1 that is every step, and
bench_train_phase.steady_rates turns the rates into tokens/s before and with looping. Reading the loss back each
step is what the scored run does anyway (its wall-clock check is an all-reduce read back every step), and on the
record's kernels a loop that reads back a step later ran at the same rate (sixteenth session). The run stops at the
line of its last step: the validation the script runs next compiles the evaluation, which is not what is timed, so
no peak memory is read.

Usage: python benchmarks/record_phase.py SCRIPT DATA_DIR OUT.json   (env: ITERS=24 WARMUP=2, TRAIN_BATCH_TOKENS)
kernel_session.py calls record_phase() for its `record` steps."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_train_phase import gpu_name, read_step_line, run_logged, steady_rates  # noqa: E402

STANDIN = HERE / "record_fa3"  # flash_attn_interface, routed to torch's varlen kernel
ATTENTION = "torch flash varlen, K/V repeated for GQA (record_fa3 in place of FA3)"


def record_settings(data_dir: str, iters: str, warmup: str) -> dict:
    """The record's own variables for bench_train_phase's schedule: ITERS steps, looping from the halfway step,
    WARMUP priming steps each way, no validation before the end, no TTT."""
    return {"DATA_DIR": data_dir, "ARTIFACT_DIR": "/tmp/bench-record", "RUN_ID": "bench", "SEED": "0",
            "ITERATIONS": iters, "MAX_WALLCLOCK_SECONDS": "0", "ENABLE_LOOPING_AT": "0.5", "WARMUP_STEPS": warmup,
            "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "1", "COMPRESSOR": "lzma", "TTT_ENABLED": "0"}


def record_phase(script: str, data_dir: str, out_path: str, extra: dict | None = None,
                 timeout_s: float | None = None, cache_state: str | None = None, echo: bool = True,
                 profile_to: str | None = None) -> dict:
    """Run the record's SCRIPT with os.environ + `extra` (ITERS, WARMUP, TRAIN_BATCH_TOKENS) and the stand-in
    first on PYTHONPATH; write OUT.json and OUT.log as train_phase does; return the summary. `profile_to`: run it
    under record_profile.py, which writes a step's profile before looping and one with it there (the rates of
    such a run are the profiler's, not the record's)."""
    penv = {**os.environ, **(extra or {})}
    iters, warmup = penv.get("ITERS", "24"), penv.get("WARMUP", "2")
    tb = int(penv.get("TRAIN_BATCH_TOKENS", "786432"))
    settings = record_settings(data_dir, iters, warmup)
    path = os.pathsep.join(p for p in (str(STANDIN), penv.get("PYTHONPATH", "")) if p)
    env = {**penv, **settings, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    res = {"name": Path(out_path).stem, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "device": gpu_name(), "trainer": str(script), "iterations": int(iters), "warmup_steps": int(warmup),
           "command": " ".join(f"{k}={v}" for k, v in settings.items()) + f" PYTHONPATH={STANDIN.name} python3 "
                      + ("record_profile.py OUT.json " if profile_to else "") + Path(script).name,
           "compile_cache": cache_state or "unknown", "attention_backend": ATTENTION, "losses": {}}
    cmd = [sys.executable, *([str(HERE / "record_profile.py"), profile_to] if profile_to else []), str(script)]
    return run_logged(cmd, env, res, out_path,
                      lambda line, res, t_s: read_record_line(line, res, tb, t_s), timeout_s, echo)


def read_record_line(line: str, res: dict, tb: int, t_s: float) -> bool:
    """Fold one line of the record's log into `res` (`t_s`: seconds since launch); True at its last step's line,
    once the rates are in (`tokens_per_s_all` is the log's own, the whole run's)."""
    if not read_step_line(line, res, tb, t_s):
        return False
    last = str(res["iterations"])
    if last not in res.get("elapsed_s", {}):
        return False
    res["tokens_per_s_all"] = res["tokens_per_s_running"]
    if rates := steady_rates(res, tb):
        res.update(tokens_per_s_preloop=rates["tokens_per_s_preloop"], tokens_per_s_loop=rates["tokens_per_s_loop"],
                   steady=rates)
        res["step_ms_preloop"], res["step_ms_loop"] = (1000 * tb / res[k] for k in
                                                        ("tokens_per_s_preloop", "tokens_per_s_loop"))
    return True


def main() -> None:
    res = record_phase(sys.argv[1], sys.argv[2], sys.argv[3])
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
