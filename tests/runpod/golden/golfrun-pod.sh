#!/usr/bin/env bash
# golfrun's commands on this pod, written by golfrun (docs/runpod.md). Usage: golfrun-pod.sh prepare|verify|run
#   prepare  install golfrun's dependencies unless they are importable
#   verify   the verify-pod stage, on this pod
#   run      golfrun run-all; its exit code is written to /workspace/my golfrun/.golfrun/exit_code
set -u
cd '/workspace/my golfrun' || exit 70
# --- [backend.runpod] setup
source /opt/venv/bin/activate
export HF_HOME=/workspace/hf
# ---
export PYTHONPATH='/workspace/my golfrun/code'"${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
case "${1:-}" in
  prepare)
    python3 -c 'import golfrun.cli, click, rich, numpy, scipy, sentencepiece, brotli, paramiko, jinja2' 2>/dev/null && { echo "golfrun: dependencies present"; exit 0; }
    echo "golfrun: installing golfrun and its dependencies"
    python3 -m pip install --quiet --disable-pip-version-check -e '/workspace/my golfrun/code'
    python3 -c 'import golfrun.cli, click, rich, numpy, scipy, sentencepiece, brotli, paramiko, jinja2'
    ;;
  verify)
    python3 -m golfrun.cli verify-pod --campaign '/workspace/my golfrun/campaign.toml' --runs-dir '/workspace/my golfrun/runs' --backend local --force
    ;;
  run)
    rm -f '/workspace/my golfrun/.golfrun/exit_code'
    python3 -m golfrun.cli run-all --campaign '/workspace/my golfrun/campaign.toml' --runs-dir '/workspace/my golfrun/runs' --backend local --force gate-b
    code=$?
    echo "$code" > '/workspace/my golfrun/.golfrun/exit_code.tmp' && mv '/workspace/my golfrun/.golfrun/exit_code.tmp' '/workspace/my golfrun/.golfrun/exit_code'
    exit "$code"
    ;;
  *)
    echo "usage: $0 prepare|verify|run" >&2
    exit 64
    ;;
esac
