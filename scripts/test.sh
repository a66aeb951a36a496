#!/usr/bin/env bash
# The test command: idempotent set-up (deps, venv, default model, build), HF reference generation for
# the real-model parity tests (cached in data/cache), then the whole ctest suite.
#   bash scripts/test.sh            # everything CI runs
#   FKV_CTEST_ARGS="-L unit" bash scripts/test.sh   # a subset
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# HF transformers outputs on the real GGUF (logits, greedy ids); skipped when up to date.
.venv/bin/python scripts/make_hf_refs.py >&2
BUILD="${FKV_BUILD_DIR:-$ROOT/build}"
cd "$BUILD"
ctest --output-on-failure --timeout 1500 ${FKV_CTEST_ARGS:-}
