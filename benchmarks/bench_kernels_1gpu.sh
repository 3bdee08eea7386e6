#!/usr/bin/env bash
# One device call: the kernel checks (benchmarks/kernel_checks.py: fused MLP, GQA attention, the FA3 branch
# through its stand-in), then the training phase of the record-configuration benchmark
# (bench_train_phase.py: bench_record_1gpu.sh's settings, stopped after training) with the kernels that
# passed their checks and were faster, then flash-attn-4 if FA4_TAR is given. Writes the checks' JSON,
# <NAME>.json and <NAME>.log to $OUT.
#
# usage: benchmarks/bench_kernels_1gpu.sh DATA_DIR NAME   (env: ITERS WARMUP OUT BENCH_TIMEOUT FA4_TAR)
set -uo pipefail
DATA_DIR=${1:?usage: bench_kernels_1gpu.sh DATA_DIR NAME}
NAME=${2:?usage: bench_kernels_1gpu.sh DATA_DIR NAME}
OUT=${OUT:-/tmp/bench}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
FA4_TAR=${FA4_TAR:-}
if [ -n "$FA4_TAR" ] && [ -f "$FA4_TAR" ]; then  # unpacked while the benchmark runs
  (python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall('/tmp')" "$FA4_TAR" \
     && touch /tmp/fa4site.ready) &
fi
timeout "${CHECK_TIMEOUT:-120}" python3 "$HERE/kernel_checks.py" "$OUT/kernel_checks.json" mlp,gqa,fa3
MLP=plain ATTN=varlen
read -r MLP ATTN < <(python3 - "$OUT/kernel_checks.json" <<'PYEOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    r = {}
def pick(key, new, old, fast, slow):
    c = r.get(key, {})
    ms = c.get("ms_fwd_bwd", {})
    return new if c.get("ok") and ms.get(fast, 1e9) < ms.get(slow, 0) else old
print(pick("mlp", "triton", "plain", "fused_triton", "plain_inductor"),
      pick("gqa", "varlen_gqa", "varlen", "flash_varlen_gqa", "varlen_repeat_kv"))
PYEOF
)
echo "chosen: MLP_KERNEL=$MLP ATTN_BACKEND=$ATTN"
MLP_KERNEL=$MLP ATTN_BACKEND=$ATTN timeout "${BENCH_TIMEOUT:-420}" \
  python3 "$HERE/bench_train_phase.py" "$DATA_DIR" "$OUT/$NAME.json"
wait
if [ -f /tmp/fa4site.ready ]; then
  PYTHONPATH=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH} \
    timeout "${FA4_TIMEOUT:-60}" python3 "$HERE/kernel_checks.py" "$OUT/kernel_checks_fa4.json" fa4
fi
exit 0
