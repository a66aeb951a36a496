#!/usr/bin/env bash
# The main job on the default model (SmolLM2-135M-Instruct Q4_1 GGUF): set-up, model info, then the
# model answers a GSM8K test question with its chat template (greedy, full KV cache). Grows with the
# project (eviction policies, golden traces, training, evaluation).
#   FKV_DATA_DIR=/path/to/data bash scripts/run_demo.sh   # data dir with eval/gsm8k_test.jsonl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
BIN="${FKV_BUILD_DIR:-$ROOT/build}/bin"
export FKV_ROOT="$ROOT"
MODEL=smollm2-135m-instruct
DATA="${FKV_DATA_DIR:-$ROOT/../shared/data}"
"$BIN/fkv-model" info --model "$MODEL"
QUESTION="Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
if [ -f "$DATA/eval/gsm8k_test.jsonl" ]; then
  QUESTION="$("$ROOT/.venv/bin/python" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["question"])' "$DATA/eval/gsm8k_test.jsonl")"
fi
SUFFIX="$("$ROOT/.venv/bin/python" -c 'import json; print(json.load(open("configs/prompts.json"))["reasoning_suffix"])')"
echo "--- question: $QUESTION"
echo "--- SmolLM2-135M-Instruct (greedy, full KV cache):"
"$BIN/fkv-model" generate --model "$MODEL" --chat "$QUESTION
$SUFFIX" --greedy --max-new-tokens 256
echo
echo "--- the same question under H2O eviction (B = 64 entries per layer and KV head, evict every 16 tokens):"
"$BIN/fkv-model" generate --model "$MODEL" --chat "$QUESTION
$SUFFIX" --greedy --max-new-tokens 256 --policy h2o --budget 64 --window 16
# Small trace -> golden labels -> SFT of the judge -> fidelity -> GRPO -> fidelity pipeline (resumable; outputs
# under runs/demo/).
if [ -f "$DATA/train/gsm8k_train.jsonl" ]; then
  mkdir -p runs/demo
  echo "--- golden traces: 4 GSM8K training problems (held out), labels for B = 64, W = 16"
  "$BIN/fkv-trace" generate --model "$MODEL" --output runs/demo/traces.safetensors --data-dir "$DATA" \
    --limit 4 --max-new-tokens 192 --budgets 64 --window 16 --log-level warn
  echo "--- training traces for the judge: 12 other GSM8K training problems"
  "$BIN/fkv-trace" generate --model "$MODEL" --output runs/demo/train.safetensors --data-dir "$DATA" \
    --offset 4 --limit 12 --max-new-tokens 192 --budgets 64 --window 16 --log-level warn > /dev/null
  echo "--- fkv-train sft: 150 steps of the pairwise ranking loss on the golden trajectories"
  RESUME=""; [ -f runs/demo/sft/checkpoint.safetensors ] && RESUME="--resume"
  "$BIN/fkv-train" sft --model "$MODEL" --traces runs/demo/train.safetensors --eval-traces runs/demo/traces.safetensors \
    --budget 64 --window 16 --steps 150 --checkpoint-every 50 --output runs/demo/sft $RESUME --log-level warn > /dev/null
  echo "--- trace fidelity on the held-out traces (LM-loss ratio evicted/full; golden is the oracle,"
  echo "    foresightkv/foresightkv_topk use the judge just trained):"
  "$BIN/fkv-eval" fidelity --model "$MODEL" --traces runs/demo/traces.safetensors \
    --policies golden,foresightkv,foresightkv_topk,h2o,snapkv,rkv,tova,streamingllm,knorm,random --budgets 64 \
    --window 16 --judge runs/demo/sft/final.safetensors --output runs/demo/fidelity.json > /dev/null
  echo "--- fkv-train grpo: 4 RL steps from that judge (2 traces x 4 sampled rollouts per step; reward = minus the"
  echo "    mean squared loss rise on low-entropy tokens, eta 0 for this tiny run); then its fidelity:"
  RESUME=""; [ -f runs/demo/grpo/checkpoint.safetensors ] && RESUME="--resume"
  "$BIN/fkv-train" grpo --model "$MODEL" --traces runs/demo/train.safetensors --init runs/demo/sft/final.safetensors \
    --budget 64 --window 16 --steps 4 --sequences-per-step 2 --group-size 4 --eta 0 --output runs/demo/grpo \
    $RESUME --log-level warn > /dev/null
  "$BIN/fkv-eval" fidelity --model "$MODEL" --traces runs/demo/traces.safetensors --policies foresightkv \
    --budgets 64 --window 16 --judge runs/demo/grpo/final.safetensors --output runs/demo/fidelity_grpo.json > /dev/null
fi
