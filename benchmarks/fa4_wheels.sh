#!/usr/bin/env bash
# Packs flash-attn-4 (the CuTe-DSL FlashAttention, `flash_attn.cute`) for the device machine, which has no
# network: CPython 3.12, manylinux x86_64, torch 2.11 + CUDA 13 already on its image. Run it here (PyPI
# reachable). It downloads the exact wheel set that imports together, unpacks it as `pip install --no-deps
# --target` would (a wheel install is an unzip: none of these wheels has a .data directory), drops what never
# loads on that machine (list below), and packs the rest into two xz tarballs, one per device call:
#
#   DEST/a/fa4-ir.tar.xz    the CuTe DSL compiler extension _cutlass_ir.cu13.*.so alone (193 MB unpacked)
#   DEST/b/fa4-rest.tar.xz  everything else (flash_attn, quack, cutlass Python, MLIR bindings, runtime, tvm_ffi)
#
# Each part is under 60 MiB, so each fits one call's 64 MiB carry beside the tracked tree. Both unpack into
# one folder; benchmarks/README.md ("flash-attn-4") gives the device commands. DEST (default .fa4) must be
# git-ignored (.gitignore has /.fa4/). Prints the sizes; writes DEST/manifest.txt (files, bytes, sha256).
#
# usage: benchmarks/fa4_wheels.sh [DEST]     (env: PYTHON, default .venv/bin/python or python3)
set -euo pipefail
DEST=${1:-.fa4}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
LIMIT=$((60 * 1024 * 1024))
WHEELS=(
  flash-attn-4==4.0.0b40             # pure Python; needs the four below (+ einops, typing_extensions: on the image)
  apache-tvm-ffi==0.1.15.post2       # flash-attn-4 pins <0.2
  quack-kernels==0.6.5
  nvidia-cutlass-dsl-libs-core==4.8.1  # the `cutlass` Python package (cutlass.cute); a dependency of libs-base,
  nvidia-cutlass-dsl-libs-base==4.8.1  # which --no-deps does not follow. nvidia-cutlass-dsl itself is an empty
  nvidia-cutlass-dsl-libs-cu13==4.8.1  # meta-package whose only file is the .pth that --target does not read
)
# Not packed, and why:
#  - torch-c-dlpack-ext 0.1.5: prebuilt addons for torch 2.4-2.9 only; tvm_ffi skips it when torch has
#    __dlpack_c_exchange_api__ (torch >= 2.10), and on 2.11 it would find no matching addon anyway.
#  - cu13/lib/stubs: libcute_dsl_runtime stubs for aarch64 Linux and QNX (other platforms).
#  - cu13/lib/*.a and cu13/include: the static runtime and its header, for linking ahead-of-time exported
#    kernels into C programs; JIT use (flash-attn-4) loads libcute_dsl_runtime.so.
#  - dsl_packages/iket: the host side of IKET (in-kernel event tracing: trace decoder, profiler injection
#    library, CLI). Nothing in cutlass, quack or flash_attn imports it (instrumented kernels use the iket MLIR
#    dialect inside _cutlass_ir); `import flash_attn.cute` and its sm90 kernels' modules import without it.
#  - tvm_ffi/3rdparty/libbacktrace: C sources (already built into libtvm_ffi.so).
# Kept although nothing in Python loads it: tvm_ffi/lib/libtvm_ffi_testing.so, which tvm_ffi's core.*.so names as
# NEEDED (pruned once, `import tvm_ffi` failed on the GPU: benchmarks/README.md, sixth session). The check below
# refuses a prune that removes a library any kept ELF file needs.
PRUNE=(
  nvidia_cutlass_dsl/cu13/lib/stubs
  nvidia_cutlass_dsl/cu13/lib/libcuda_dialect_runtime_static.a
  nvidia_cutlass_dsl/cu13/include
  nvidia_cutlass_dsl/dsl_packages/iket
  tvm_ffi/3rdparty/libbacktrace
)
IR=nvidia_cutlass_dsl/dsl_packages/cutlass/_mlir/_mlir_libs/_cutlass_ir.cu13.cpython-312-x86_64-linux-gnu.so

mkdir -p "$DEST/wheels" "$DEST/a" "$DEST/b"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DEST/wheels" "${WHEELS[@]}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
site=$stage/fa4site
for w in "$DEST"/wheels/*.whl; do
  case $(basename "$w") in torch_c_dlpack_ext-*|nvidia_cutlass_dsl-[0-9]*) continue ;; esac
  "$PY" -m zipfile -e "$w" "$site"
done
shared_libs() { find "$site" -type f -name '*.so*' -printf '%f\n' | sort -u; }
before=$(shared_libs)
for p in "${PRUNE[@]}"; do rm -rf "${site:?}/$p"; done
after=$(shared_libs)
needed=$(find "$site" -type f -name '*.so*' -exec readelf -d {} + 2>/dev/null \
  | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
if lost=$(comm -12 <(comm -23 <(echo "$before") <(echo "$after")) <(echo "$needed")) && [ -n "$lost" ]; then
  echo "fa4_wheels: PRUNE removes shared libraries that kept ones need: $lost" >&2; exit 1
fi
[ -f "$site/$IR" ] || { echo "fa4_wheels: $IR missing from the unpacked wheels" >&2; exit 1; }
# x86 BCJ filter: the two big shared libraries are x86-64 code, which it makes more compressible
XZ=(xz -T1 --x86 --lzma2=preset=9e,dict=256MiB)
tar -C "$stage" -cf - "fa4site/$IR" | "${XZ[@]}" > "$DEST/a/fa4-ir.tar.xz"
tar -C "$stage" --exclude="fa4site/$IR" -cf - fa4site | "${XZ[@]}" > "$DEST/b/fa4-rest.tar.xz"
(cd "$DEST" && for f in a/fa4-ir.tar.xz b/fa4-rest.tar.xz; do
   echo "$f $(stat -c %s "$f") $(sha256sum "$f" | cut -d' ' -f1)"; done) > "$DEST/manifest.txt"
echo "kept (file bytes): $(find "$site" -type f -printf '%s\n' | awk '{s += $1} END {print s}')"
cat "$DEST/manifest.txt"
while read -r f size _; do
  [ "$size" -lt "$LIMIT" ] || { echo "fa4_wheels: $f is $size bytes, over 60 MiB" >&2; exit 1; }
done < "$DEST/manifest.txt"
