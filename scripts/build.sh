#!/usr/bin/env bash
# Configure (once) and build fkv into build/ (or $FKV_BUILD_DIR) with LibTorch from .venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${FKV_BUILD_DIR:-$ROOT/build}"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || { echo "build.sh: $PY missing; run scripts/setup.sh first" >&2; exit 1; }
TORCH_PREFIX="$("$PY" -c 'import torch;print(torch.utils.cmake_prefix_path)')"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE="${FKV_BUILD_TYPE:-Release}" \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DFKV_WITH_CUDA="${FKV_WITH_CUDA:-AUTO}" ${FKV_CMAKE_ARGS:-} >&2
fi
cmake --build "$BUILD" -j"${FKV_JOBS:-2}" ${FKV_BUILD_TARGET:+--target $FKV_BUILD_TARGET} >&2
