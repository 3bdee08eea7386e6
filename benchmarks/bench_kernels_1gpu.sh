#!/usr/bin/env bash
# One device call of the kernel measurements: prepares the machine (carried wheels, the flash-attn-4 parts,
# the dataset) and runs benchmarks/kernel_session.py, which does the most valuable steps that fit before the
# call's end (checks, baseline cold, both kernels with the 100-step loss equivalence, baseline warm, each
# kernel alone, flash-attn-4) and writes at most 8 files to OUT. Its state stays on the machine (STATE): the
# same command again, while the machine is warm (30 s after a call), continues where this one stopped.
#
# usage: benchmarks/bench_kernels_1gpu.sh DATA_DIR NAME
#   env: CALL_S (585: seconds this call may take, under the device's 600 s), OUT, STATE, ITERS, EQUIV_ITERS,
#        WARMUP, FA4_ROOT (/tmp: the .fa4 parts unpack to FA4_ROOT/fa4site), SMOKE=1 (a CPU run of the whole
#        chain at tiny sizes; see kernel_session.py), PACK_CACHE=1 (the session's last call: keep PACK_S, 60 s,
#        to pack the compile cache into OUT for the next session's .kcache; benchmarks/kcache.py)
#        FIRST (steps to run first, in order: kernel_session.py), DATA_LONG (DATA_DIR-long: the FineWeb-length
#        documents of the -long steps, built if missing)
set -uo pipefail
T0=$(date +%s)
DATA_DIR=${1:?usage: bench_kernels_1gpu.sh DATA_DIR NAME}
NAME=${2:?usage: bench_kernels_1gpu.sh DATA_DIR NAME}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
FA4_ROOT=${FA4_ROOT:-/tmp}
export OUT=${OUT:-/tmp/bench} STATE=${STATE:-/tmp/kbench} FA4_SITE=$FA4_ROOT/fa4site PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$STATE"
# One compile cache for the training runs, Triton's kernels inside Inductor's folder, so that one folder
# travels between sessions (benchmarks/kcache.py); carried parts (.kcache) are unpacked once per machine.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/torchinductor_$(whoami)}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$TORCHINDUCTOR_CACHE_DIR/triton}
if [ ! -f "$STATE/kcache-carried" ] && "$PY" "$HERE/kcache.py" unpack .kcache "$(dirname "$TORCHINDUCTOR_CACHE_DIR")" \
    | grep -q unpacked; then
  touch "$STATE/kcache-carried"
fi
# Wheels the image lacks (.whl, for CPython 3.12: the training phase itself needs none of them), installed
# once per machine; a warm machine keeps /tmp/site.
if [ "${SMOKE:-0}" != 1 ] && compgen -G ".whl/*.whl" >/dev/null && [ ! -f /tmp/site/.installed ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.installed
fi
if [ -f /tmp/site/.installed ]; then export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}; fi
# flash-attn-4 travels in parts, one per call (benchmarks/fa4_wheels.sh: .fa4/a, .fa4/b); each is unpacked
# once into FA4_ROOT (the tarballs hold fa4site/...), and the fa4 steps run once all of it is there.
for part in .fa4/*/*.tar.xz; do
  [ -f "$part" ] || continue
  mark="$STATE/unpacked-$(basename "$part")"
  if [ ! -f "$mark" ]; then
    "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$part" "$FA4_ROOT" \
      && touch "$mark"
  fi
done
# The dataset: carried (.bench/data, 8 MB), else built here with the documented command (same bytes).
if [ ! -f "$DATA_DIR/manifest.json" ]; then
  "$PY" -m golfrun.data.synthetic "$DATA_DIR" --vocab-size 8192 --train-docs 30000 --val-docs 600 \
    --train-shards 2 --seed 7 || exit 1
fi
# Documents of FineWeb's length for the -long steps (about 135 a microbatch; the main data's are six times
# shorter): built here, in seconds, unless carried, with the main data's vocabulary (8192; SMOKE's data has 512).
export DATA_LONG=${DATA_LONG:-${DATA_DIR%/}-long}
if [ ! -f "$DATA_LONG/manifest.json" ]; then
  VOCAB=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['synthetic']['vocab_size'])" \
    "$DATA_DIR/manifest.json" 2>/dev/null || echo 8192)
  "$PY" -m golfrun.data.synthetic "$DATA_LONG" --vocab-size "$VOCAB" --train-docs 5000 --val-docs 100 \
    --train-shards 2 --seed 7 --length-scale 6 || echo "no FineWeb-length dataset: the -long steps will be skipped"
fi
PACK_S=$([ "${PACK_CACHE:-0}" = 1 ] && echo "${PACK_S:-60}" || echo 0)
DEADLINE_S=$(( ${CALL_S:-585} - PACK_S - ($(date +%s) - T0) )) "$PY" "$HERE/kernel_session.py" "$DATA_DIR" "$NAME"
if [ "$PACK_S" != 0 ] && [ -d "$TORCHINDUCTOR_CACHE_DIR" ]; then
  timeout "$PACK_S" "$PY" "$HERE/kcache.py" pack "$TORCHINDUCTOR_CACHE_DIR" "$OUT"
fi
