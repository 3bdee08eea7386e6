"""Training phase only of the record-configuration benchmark (the settings of bench_record_1gpu.sh), for a
device call too short for the whole pipeline: runs train_gpt.py, reads its log as it comes, stops it once
training has reported its throughput (before EMA diagnostics, GPTQ and compression) and writes one JSON
summary. Start-up is measured from launch to the end of the first timed training step.
Usage: python benchmarks/bench_train_phase.py DATA_DIR OUT.json   (env: ITERS=24 WARMUP=2, plus any
trainer variable such as MLP_KERNEL or ATTN_BACKEND)"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    data_dir, out_path = sys.argv[1], sys.argv[2]
    iters, warmup = os.environ.get("ITERS", "24"), os.environ.get("WARMUP", "2")
    settings = {"DATA_DIR": data_dir, "ARTIFACT_DIR": "/tmp/bench", "RUN_ID": "bench", "SEED": "0",
                "ITERATIONS": iters, "MAX_WALLCLOCK_SECONDS": "0", "ENABLE_LOOPING_AT": "0.5",
                "WARMUP_STEPS": warmup, "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "1",
                "GPTQ_CALIBRATION_BATCHES": "4", "COMPRESSOR": "lzma", "TTT_ENABLED": "0"}
    cmd = [sys.executable, str(HERE.parent / "train_gpt.py")]
    env = {**os.environ, **settings, "PYTHONUNBUFFERED": "1"}
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", f"/tmp/torchinductor_{os.environ.get('USER', 'root')}")
    res = {"name": Path(out_path).stem, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": " ".join(f"{k}={v}" for k, v in settings.items()) + " python3 train_gpt.py",
           "compile_cache": "warm" if Path(cache).is_dir() and any(Path(cache).iterdir()) else "cold",
           "kernels_env": {k: os.environ.get(k) for k in ("MLP_KERNEL", "ATTN_BACKEND")}, "losses": {}}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, log = Path(out_path), open(Path(out_path).with_suffix(".log"), "w")
    for line in proc.stdout:  # the log and the summary so far are on disk at every line (a killed run keeps them)
        log.write(line)
        log.flush()
        print(line, end="", flush=True)
        out.write_text(json.dumps(res, indent=2))
        if m := re.match(r"(\d+)/\d+ train_loss: ([\d.]+)", line):
            res["losses"][m.group(1)] = float(m.group(2))
            res.setdefault("time_to_first_step_s", time.perf_counter() - t0)
        elif m := re.match(r"(attention_backend|mlp_kernel):(\S+)", line):
            res[m.group(1)] = m.group(2)
        elif m := re.match(r"peak memory allocated: (\d+) MiB reserved: (\d+) MiB", line):
            res["peak_mem_mib"], res["peak_mem_reserved_mib"] = int(m.group(1)), int(m.group(2))
        elif m := re.match(r"throughput tok/s preloop:(\S+) loop:(\S+) priming_s:(\S+)", line):
            pre, loop, priming = (float(x) for x in m.groups())
            res.update(tokens_per_s_preloop=pre, tokens_per_s_loop=loop, priming_s=priming)
            tb = int(os.environ.get("TRAIN_BATCH_TOKENS", "786432"))
            res["step_ms_preloop"], res["step_ms_loop"] = 1000 * tb / pre, 1000 * tb / loop
            # priming = compilation + WARMUP real steps without and with looping (+ 6 cu-bucket passes)
            res["compile_s"] = priming - int(warmup) * (tb / pre + tb / loop)
            proc.send_signal(signal.SIGTERM)  # the rest of the pipeline is not what is measured
            break
    proc.wait(timeout=60)
    res["wall_s"] = time.perf_counter() - t0
    res["complete"] = "tokens_per_s_loop" in res
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
