#!/usr/bin/env bash
# Record configuration (PR #1610, trainer-facts §2) on ONE GPU with gradient accumulation 8, on a
# challenge-format dataset with vocabulary 8192. Step-based schedule so the run is short: looping switches
# on halfway (ENABLE_LOOPING_AT=0.5), giving steady pre-loop and loop phases. Writes
# benchmarks/results/<NAME>.json (tokens_per_s_preloop, tokens_per_s_loop, peak_mem_mib, compile_s, ...).
#
# usage: benchmarks/bench_record_1gpu.sh DATA_DIR [NAME]      (env: ITERS=60 WARMUP=5 OUT=/tmp/bench)
set -euo pipefail
DATA_DIR=${1:?usage: bench_record_1gpu.sh DATA_DIR [NAME]}
NAME=${2:-h100-record-1gpu}
ITERS=${ITERS:-60}
WARMUP=${WARMUP:-5}
OUT=${OUT:-/tmp/bench}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
CMD=(env DATA_DIR="$DATA_DIR" ARTIFACT_DIR="$OUT" RUN_ID=bench SEED=0 ITERATIONS="$ITERS"
     MAX_WALLCLOCK_SECONDS=0 ENABLE_LOOPING_AT=0.5 WARMUP_STEPS="$WARMUP" VAL_LOSS_EVERY=0
     TRAIN_LOG_EVERY=10 GPTQ_CALIBRATION_BATCHES=4 COMPRESSOR=lzma TTT_ENABLED=0
     "$PY" "$HERE/train_gpt.py")
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# start-up is measured cold (no Inductor/Triton cache yet) or warm (a cache left by an earlier run)
CACHE=${TORCHINDUCTOR_CACHE_DIR:-/tmp/torchinductor_$(whoami)}
if [ -n "$(ls -A "$CACHE" 2>/dev/null)" ]; then CACHE_STATE=warm; else CACHE_STATE=cold; fi
T0=$(date +%s.%N)
PYTHONUNBUFFERED=1 "${CMD[@]}" 2>&1 | tee "$OUT/bench.log"
T1=$(date +%s.%N)
"$PY" - "$OUT" "$NAME" "$START" "$T0" "$T1" "$WARMUP" "${CMD[*]}" "$HERE" "$CACHE_STATE" <<'PYEOF'
import json, re, sys
out, name, start, t0, t1, warmup, cmd, here, cache_state = sys.argv[1:]
res = json.load(open(f"{out}/results.json"))
pre, loop = res["tokens_per_s_preloop"], res["tokens_per_s_loop"]
tb = res["hyperparameters"]["TRAIN_BATCH_TOKENS"]
# priming = compilation + 2*WARMUP real steps (+ 24 cu-bucket passes); subtract the steady step times
steps_s = int(warmup) * (tb / pre + tb / loop)
log = open(f"{out}/bench.log").read()
summary = {
    "name": name, "date": start, "device": res["device"], "world_size": res["world_size"],
    "grad_accum_steps": 8 // res["world_size"],
    "command": cmd, "attention": res["versions"]["attention"], "versions": res["versions"],
    "mlp_kernel": res["versions"].get("mlp_kernel"),
    "compile_cache": cache_state, "time_to_first_step_s": res.get("time_to_first_step_s"),
    "tokens_per_s_preloop": pre, "tokens_per_s_loop": loop,
    "step_ms_preloop": 1000 * tb / pre, "step_ms_loop": 1000 * tb / loop,
    "peak_mem_mib": res["peak_mem_mib"],
    "compile_s": res["priming_s"] - steps_s, "priming_s": res["priming_s"],
    "wall_s": float(t1) - float(t0), "steps": res["steps"], "model_params": res["model_params"],
    "final": res["final"], "artifact": res["artifact"],
    "peak_line": next((l for l in log.splitlines() if l.startswith("peak memory")), None),
    "record_per_gpu": {"tokens_per_s_preloop": 1.02e6, "tokens_per_s_loop": 0.70e6, "peak_mem_mib": 40029},
}
summary["ratio_vs_record"] = {"preloop": pre / 1.02e6, "loop": loop / 0.70e6}
path = f"{out}/{name}.json"
json.dump(summary, open(path, "w"), indent=2)
print(json.dumps(summary, indent=2))
PYEOF
