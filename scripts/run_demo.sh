#!/usr/bin/env bash
# The main job on the default model (SmolLM2-135M-Instruct Q4_1 GGUF): set-up, model info, and a
# logits run through the KV cache. Grows with the project (generation, eviction, training, eval).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
BIN="${FKV_BUILD_DIR:-$ROOT/build}/bin"
MODEL=smollm2-135m-instruct
export FKV_ROOT="$ROOT"
"$BIN/fkv-model" info --model "$MODEL"
mkdir -p runs
# SmolLM2's chat template applied to "What is the capital of France? Answer in one sentence.", as
# token ids (HF tokenizer output, also in data/cache/hf_refs/smollm2/refs.json).
IDS="1,9690,198,2683,359,253,5356,5646,11173,3365,3511,308,34519,28,7018,411,407,19712,8182,2,198,1,4093,198,1780,314,260,3575,282,4649,47,19842,281,582,6330,30,2,198,1,520,9531,198"
"$BIN/fkv-model" logits --model "$MODEL" --ids "$IDS" --chunk 1 --out runs/demo_logits.npy
"$ROOT/.venv/bin/python" - <<'PY'
import numpy as np
l = np.load("runs/demo_logits.npy")
print(f"logits {l.shape}, next-token argmax after the prompt: {int(l[-1].argmax())}")
PY
