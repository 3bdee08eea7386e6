#!/usr/bin/env bash
# setup.sh - create .venv and install golfrun with its trainer and test extras:
#   pip install TORCH_SPEC, then pip install -e '.[train,test]'
# TORCH_SPEC defaults to the CPU build the tiny campaign and the tests use (torch==2.13.0, a local
# wheel through pip's configured find-links); without the pin pip would pick the newest torch of
# the index, a multi-GB CUDA build. Set TORCH_SPEC to install another one.
# Idempotent and quick when already done: a stamp records the sha256 of pyproject.toml and the
# interpreter; nothing is reinstalled while both are unchanged.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.golfrun-setup"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: $PYTHON not found; install Python 3.10 or newer (3.11 is what CI uses)" >&2
  exit 1
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
  echo "setup: $("$PYTHON" --version 2>&1) is too old; golfrun needs Python >= 3.10" >&2
  exit 1
}

want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])') $TORCH_SPEC"
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
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet -e '.[train,test]'
echo "$want" > "$STAMP"
echo "setup: installed golfrun into $VENV ($("$VENV/bin/golfrun" --version))"
