#!/usr/bin/env bash
# The test command: idempotent set-up (deps, venv, default model, build), HF reference generation for
# the real-model parity tests (cached in data/cache), then the whole ctest suite.
#   bash scripts/test.sh            # everything CI runs
#   FKV_CTEST_ARGS="-L unit" bash scripts/test.sh   # a subset
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# The second real model (qwen2, GQA 7, Q4_K/Q5_0/Q6_K/Q8_0 blocks), fetched and verified like the default.
bash scripts/fetch_model.sh qwen2.5-coder-0.5b-instruct >&2
# HF transformers outputs on the real GGUFs (logits, greedy ids); skipped when up to date.
.venv/bin/python scripts/make_hf_refs.py >&2
.venv/bin/python scripts/make_hf_refs.py --model data/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
  --tag qwen2.5-coder >&2
BUILD="${FKV_BUILD_DIR:-$ROOT/build}"
cd "$BUILD"
ctest --output-on-failure --timeout 1500 ${FKV_CTEST_ARGS:-}
