#!/usr/bin/env bash
# Held-out evaluation of a GRPO judge (docs/results.md 9): the GRPO reward on held-out labelled traces, and the
# fidelity table (low/high-entropy split) on the same traces, for one judge file:
#   bash scripts/grpo_heldout.sh smol|qwen JUDGE NAME
# The reward runs `fkv-train grpo` with lr 0 (rollouts, rewards and logs as in training, no update) over the
# first FKV_HELDOUT_TRACES (16) held-out traces, one trace per step, FKV_HELDOUT_GROUP (8) rollouts each. Every
# judge evaluated this way draws its rollouts from the same random streams (seed, step, trace, rollout), so two
# judges' logs pair per trace: `python3 scripts/grpo_compare.py A/log.jsonl B/log.jsonl`. A judge from a run with
# score_scale has the scale in its weights: it is evaluated at score_scale 1. Outputs: data/results/heldout_NAME/
# (log.jsonl) and data/results/fidelity_NAME.json. FKV_BIN (build/bin), FKV_THREADS (1), FKV_HELDOUT_POLICIES
# (full,foresightkv,foresightkv_topk), FKV_HELDOUT_BUDGET (64): the KV budget B of both (L = 16).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export FKV_ROOT="$ROOT"
BIN="${FKV_BIN:-$ROOT/build/bin}"
[ $# -eq 3 ] || { sed -n 2,11p "$0"; exit 2; }
case "$1" in
  smol) M=smollm2-135m-instruct; TR=data/results/smollm2_gsm8k_traces.safetensors;;
  qwen) M=qwen2.5-coder-0.5b-instruct; TR=data/results/qwen_gsm8k_traces.safetensors;;
  *) echo "model must be smol or qwen" >&2; exit 2;;
esac
J="$2" NAME="$3" N="${FKV_HELDOUT_TRACES:-16}" G="${FKV_HELDOUT_GROUP:-8}" T="${FKV_THREADS:-1}"
B="${FKV_HELDOUT_BUDGET:-64}"
O=data/results/heldout_$NAME
r=""; [ -f "$O/checkpoint.safetensors" ] && r="--resume"
"$BIN/fkv-train" grpo --config "configs/train/grpo_$M.json" --init "$J" --traces "$TR" --limit "$N" \
  --budget "$B" --steps "$N" --sequences-per-step 1 --group-size "$G" --rollout-rows "$(( G < 4 ? G : 4 ))" --lr 0 \
  --score-scale 1 --checkpoint-every "$N" --threads "$T" --output "$O" $r > "$O.out" 2> "$O.err"
P="${FKV_HELDOUT_POLICIES:-full,foresightkv,foresightkv_topk}"
"$BIN/fkv-eval" fidelity --model $M --traces "$TR" --limit "$N" --policies "$P" \
  --budgets "$B" --window 16 --batch 8 --threads "$T" --judge "$J" --output "data/results/fidelity_$NAME.json" \
  > /dev/null 2> "data/results/fidelity_$NAME.err"
echo "$NAME done $(date +%H:%M:%S)"
