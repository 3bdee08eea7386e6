#!/bin/bash
# The gpu1 preset end to end through `golfrun run-all` on a lent GPU machine, across several device
# calls of at most ten minutes: the first call starts run-all in a session of its own (it outlives
# the call while the machine stays warm), every call waits for it up to WAIT_S seconds and then
# writes what is there to OUT: status (`golfrun status --json`), the ledger per stage and job, logs.
# A call that finds run-all finished but the campaign incomplete starts it again (it resumes).
#   WAIT_S=560 OUT=$OUT bash benchmarks/gpu1_campaign.sh
# verify-pod's preflight is off here (SETS): `PREFLIGHT=1` runs `golfrun preflight` once run-all is done.
set -u
WAIT_S=${WAIT_S:-560}
OUT=${OUT:-/tmp/gpu1-out}
RUNS=${RUNS:-runs}
SETS=${SETS:---set verify_pod.preflight=off}
mkdir -p "$OUT" "$RUNS"
if [ -d .whl ] && [ ! -d /tmp/site/paramiko ]; then  # once per machine: a warm machine keeps /tmp/site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
PID_FILE=$RUNS/gpu1-run-all.pid
RC_FILE=$RUNS/gpu1-run-all.rc
start=$(date +%s)
running() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }
if ! running && [ "$(cat "$RC_FILE" 2>/dev/null)" != "0" ]; then
  rm -f "$RC_FILE"
  echo "$(date -u +%FT%TZ) starting run-all" >> "$RUNS/gpu1-run-all.log"
  # SETS expands inside the child, unquoted: split into words, any quotes in it kept for TOML
  export RUNS SETS RC_FILE
  setsid bash -c 'python3 -m golfrun.cli run-all --campaign gpu1 --runs-dir "$RUNS" $SETS >> "$RUNS/gpu1-run-all.log" 2>&1; echo $? > "$RC_FILE"' &
  echo $! > "$PID_FILE"
fi
while running && [ $(( $(date +%s) - start )) -lt "$WAIT_S" ]; do sleep 5; done
python3 -m golfrun.cli status --campaign gpu1 --runs-dir "$RUNS" $SETS --json > "$OUT/status.json" 2>&1
python3 -m golfrun.cli status --campaign gpu1 --runs-dir "$RUNS" $SETS > "$OUT/status.txt" 2>&1
python3 benchmarks/gpu1_ledger.py "$RUNS/gpu1" > "$OUT/ledger.json"
cp "$RUNS/gpu1-run-all.log" "$OUT/run-all.log"
if [ "${PREFLIGHT:-0}" = 1 ] && ! running; then
  timeout 300 python3 -m golfrun.cli preflight --campaign gpu1 --runs-dir "$RUNS" --json > "$OUT/preflight.json" 2> "$OUT/preflight.err"
fi
echo "run-all: $(running && echo running || echo "finished rc=$(cat "$RC_FILE" 2>/dev/null)") after $(( $(date +%s) - start ))s"
tail -n 25 "$OUT/run-all.log"
cat "$OUT/status.txt"
