"""Training phase only of the record-configuration benchmark (the settings of bench_record_1gpu.sh), for a
device call too short for the whole pipeline: runs train_gpt.py, reads its log as it comes, stops it once
training has reported its throughput (before EMA diagnostics, GPTQ and compression) and writes one JSON
summary. Start-up is measured from launch to the end of the first timed training step.
Usage: python benchmarks/bench_train_phase.py DATA_DIR OUT.json   (env: ITERS=24 WARMUP=2, plus any
trainer variable such as MLP_KERNEL or ATTN_BACKEND); benchmarks/kernel_session.py calls train_phase()."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from golfrun.trainer.progress import parse_progress_line  # noqa: E402  (stdlib only: no install needed)


def gpu_name() -> str:
    """The GPU as nvidia-smi names it (no CUDA context in this process: the trainer gets the whole GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "cpu (no nvidia-smi)"
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "cpu (no GPU)"


# The settings a summary's command names, when set: every one that kernel_session.py varies between configurations,
# so that each result's command runs it again (the -1mb steps' step size among them)
RECORDED = ("MLP_KERNEL", "MLP_TILE_UP", "MLP_TILE_GRAD", "MLP_SAVE_SIGNS", "LOSS_KERNEL", "LOSS_TILE_FWD",
            "LOSS_TILE_BWD", "QK_KERNEL", "XSA_KERNEL", "ATTN_BACKEND", "ATTN_CU_TRIM", "GRAD_ACCUM",
            "TRAIN_BATCH_TOKENS", "TRITON_INTERPRET", "TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE",
            "TORCHINDUCTOR_MAX_AUTOTUNE_GEMM")


def recorded_settings(env: dict) -> dict:
    """The RECORDED settings `env` sets, in RECORDED's order."""
    return {k: env[k] for k in RECORDED if env.get(k)}


def train_phase(data_dir: str, out_path: str, extra: dict | None = None, timeout_s: float | None = None,
                cache_state: str | None = None, echo: bool = True) -> dict:
    """Run the training phase with os.environ + `extra` (ITERS, WARMUP, MLP_KERNEL, ATTN_BACKEND, ...), write
    OUT.json (the summary, rewritten at every log line) and OUT.log; return the summary (run_logged).
    `cache_state` overrides the cold/warm guess. `echo`: the trainer's lines also go to stdout."""
    penv = {**os.environ, **(extra or {})}
    iters, warmup = penv.get("ITERS", "24"), penv.get("WARMUP", "2")
    settings = {"DATA_DIR": data_dir, "ARTIFACT_DIR": "/tmp/bench-train", "RUN_ID": "bench", "SEED": "0",
                "ITERATIONS": iters, "MAX_WALLCLOCK_SECONDS": "0", "ENABLE_LOOPING_AT": "0.5",
                "WARMUP_STEPS": warmup, "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "1",
                "GPTQ_CALIBRATION_BATCHES": "4", "COMPRESSOR": "lzma", "TTT_ENABLED": "0"}
    kernels = recorded_settings(penv)
    cmd = [sys.executable, str(HERE.parent / "train_gpt.py")]
    env = {**penv, **settings, "PYTHONUNBUFFERED": "1"}
    cache = penv.get("TORCHINDUCTOR_CACHE_DIR", f"/tmp/torchinductor_{penv.get('USER', 'root')}")
    guess = "warm" if Path(cache).is_dir() and any(Path(cache).iterdir()) else "cold"
    tb = int(penv.get("TRAIN_BATCH_TOKENS", "786432"))
    res = {"name": Path(out_path).stem, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "device": gpu_name(), "iterations": int(iters), "warmup_steps": int(warmup),
           "command": " ".join(f"{k}={v}" for k, v in {**settings, **kernels}.items()) + " python3 train_gpt.py",
           "compile_cache": cache_state or guess, "kernels_env": kernels, "losses": {}}
    return run_logged(cmd, env, res, out_path, lambda line, res, t_s: read_line(line, res, int(warmup), tb, t_s),
                      timeout_s, echo)


def run_logged(cmd: list[str], env: dict, res: dict, out_path: str, read, timeout_s: float | None,
               echo: bool) -> dict:
    """Run a trainer, folding each log line into `res` with read(line, res, seconds since launch), which says True
    once what is measured is in: the rest (EMA diagnostics, GPTQ, compression) is stopped. OUT.json (`res`) and
    OUT.log are on disk at every line, so a killed run keeps them. `timeout_s`: the whole process group is killed
    then (`complete` stays false)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    # the deadline: kill the trainer's whole process group (Inductor's compile workers included)
    timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL)) if timeout_s else None
    if timer:
        timer.start()
    out, log = Path(out_path), open(Path(out_path).with_suffix(".log"), "w")
    try:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if echo:
                print(line, end="", flush=True)
            done = read(line, res, time.perf_counter() - t0)
            out.write_text(json.dumps(res, indent=2))  # with this line in it: a harness killed now keeps it
            if done:
                proc.send_signal(signal.SIGTERM)
                break
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if timer:
            timer.cancel()
        log.close()
        try:  # what the trainer left (compile workers): the next configuration gets a quiet GPU and CPU
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    res["wall_s"] = time.perf_counter() - t0
    res["complete"] = "tokens_per_s_loop" in res
    res["timed_out"] = bool(timeout_s) and not res["complete"] and res["wall_s"] >= timeout_s
    out.write_text(json.dumps(res, indent=2))
    return res


def read_line(line: str, res: dict, warmup: int, tb: int, t_s: float) -> bool:
    """Fold one log line of our trainer into `res` (`t_s`: seconds since launch); True once training has reported
    its throughput."""
    if read_step_line(line, res, tb, t_s):
        return False
    if m := re.match(r"(attention_backend|attn_cu_trim|mlp_kernel|mlp_save_signs|loss_kernel|qk_kernel|xsa_kernel):(\S+)",
                       line):
        res[m.group(1)] = m.group(2)
    elif m := re.match(r"peak memory allocated: (\d+) MiB reserved: (\d+) MiB", line):
        res["peak_mem_mib"], res["peak_mem_reserved_mib"] = int(m.group(1)), int(m.group(2))
    elif m := re.match(r"throughput tok/s preloop:(\S+) loop:(\S+) priming_s:(\S+)(?: all:(\S+))?", line):
        pre, loop, priming = (float(x) for x in m.groups()[:3])
        res.update(tokens_per_s_preloop=pre, tokens_per_s_loop=loop, priming_s=priming)
        if m.group(4):  # the whole run's rate (since the fourteenth session): what compares two training loops
            res["tokens_per_s_all"] = float(m.group(4))
        res["step_ms_preloop"], res["step_ms_loop"] = 1000 * tb / pre, 1000 * tb / loop
        res["steady"] = steady_rates(res, tb)
        # priming = compilation + WARMUP real steps without and with looping (+ 8 cu-bucket passes)
        res["compile_s"] = priming - warmup * (tb / pre + tb / loop)
        return True
    return False


def read_step_line(line: str, res: dict, tb: int, t_s: float) -> bool:
    """The lines our trainer and the record's write alike: a step's loss and the rate over the training time so far
    (`{step}/{iterations} train_loss: … tok/s: …`), and the step at which looping came on. Returns whether the
    line was one of them. From each rate, the training time at that step (`elapsed_s`, for steady_rates)."""
    p = parse_progress_line(line)
    if p is not None and p.train_loss is not None and p.tok_s is not None:
        if not math.isfinite(p.train_loss) or not p.tok_s > 0:  # a diverged step: no NaN in the summary
            return True
        res["losses"][str(p.step)] = p.train_loss
        res.setdefault("time_to_first_step_s", t_s)
        res["tokens_per_s_running"] = p.tok_s  # a run that fails after its steps keeps the last one
        res.setdefault("elapsed_s", {})[str(p.step)] = p.step * tb / p.tok_s
        return True
    if m := re.match(r"layer_loop:enabled step:(\d+)", line):
        res["loop_from_step"] = int(m.group(1))  # steps 1..S ran without looping
        return True
    return False


def steady_rates(res: dict, tb: int) -> dict | None:
    """Tokens/s before and with looping from the training time at each step (`elapsed_s`), leaving out step 1 and
    the step after looping came on: the record's script takes its time on the host before reading the loss back,
    so the interval that ends at step k holds the end of step k-1's GPU work and the launch of step k, and only
    intervals inside one phase are of that phase. None without a step line for every step."""
    elapsed, s = res.get("elapsed_s", {}), res.get("loop_from_step")
    n = max((int(k) for k in elapsed), default=0)
    if s is None or not all(str(k) in elapsed for k in range(1, n + 1)) or not 2 < s < n - 1:
        return None
    e = {int(k): v for k, v in elapsed.items()}
    return {"tokens_per_s_preloop": tb * (s - 1) / (e[s] - e[1]),
            "tokens_per_s_loop": tb * (n - s - 1) / (e[n] - e[s + 1]),
            "steps_preloop": s - 1, "steps_loop": n - s - 1}


def main() -> None:
    res = train_phase(sys.argv[1], sys.argv[2])
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
