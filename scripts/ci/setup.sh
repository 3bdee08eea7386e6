#!/usr/bin/env bash
# setup.sh - create .venv and install golfrun with its trainer and test extras:
#   pip install TORCH_SPEC, then pip install -e '.[train,test]'
# TORCH_SPEC defaults to the CPU build the tiny campaign and the tests use (torch==2.13.0, a local
# wheel through pip's configured find-links); without the pin pip would pick the newest torch of
# the index, a multi-GB CUDA build. Set TORCH_SPEC to install another one.
# TRITON_SPEC (Linux x86-64 only) is the Triton that the CUDA build of that torch pins (torch 2.13.0:
# triton==3.7.1, a 198 MB wheel, 0.7 GB installed, a few seconds to install): the tests run train_gpt.py's
# fused MLP kernels under Triton's CPU interpreter. The CPU torch wheel pins no Triton, so without this pip
# would take the newest. Set TRITON_SPEC= (empty) to skip it.
# Idempotent and quick when already done: a stamp records the sha256 of pyproject.toml and the
# interpreter; nothing is reinstalled while both are unchanged.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TRITON_SPEC="${TRITON_SPEC-triton==3.7.1}"
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then TRITON_SPEC=""; fi
STAMP="$VENV/.golfrun-setup"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: $PYTHON not found; install Python 3.10 or newer (3.11 is what CI uses)" >&2
  exit 1
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
  echo "setup: $("$PYTHON" --version 2>&1) is too old; golfrun needs Python >= 3.10" >&2
  exit 1
}

want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])') $TORCH_SPEC $TRITON_SPEC"
if [ -x "$VENV/bin/golfrun" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian ships venv's pip bootstrap separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      rm -rf "$VENV"
      apt-get update -qq
      apt-get install -y -qq python3-venv
      "$PYTHON" -m venv "$VENV"
    else
      echo "setup: '$PYTHON -m venv' failed; install python3-venv (Debian) and retry" >&2
      exit 1
    fi
  fi
fi

"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC" $TRITON_SPEC
"$VENV/bin/python" -m pip install --quiet -e '.[train,test]'
echo "$want" > "$STAMP"
echo "setup: installed golfrun into $VENV ($("$VENV/bin/golfrun" --version))"
