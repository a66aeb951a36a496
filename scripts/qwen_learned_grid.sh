#!/usr/bin/env bash
# The learned side of the Qwen2.5-Coder-0.5B GSM8K accuracy grid (docs/results.md 7.2 protocol: first 300 test
# problems, k = 4, T 0.6 / top-p 0.95 / top-k 20, L = 16, intended variant, paired with the archived full-cache
# run through the same sampler streams), one (policy, budget) run per invocation, in blocks of 20 problems:
#   bash scripts/qwen_learned_grid.sh foresightkv 128 [JUDGE]
# JUDGE defaults to the committed judge nearest the budget (judges/); give a file for the GRPO judge, with
# FKV_GRID_TAG naming the run (qwen_gsm8k_sampled_<policy>[_<tag>]_b<B>). Every finished block is archived in
# results/qwen_gsm8k_sampled/<run>/ (scripts/results_archive.py); an interrupted run resumes in place, and
# FKV_GRID_PARTIAL=1 also saves the unfinished block as .partial. FKV_THREADS (1): threads of the process.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export FKV_ROOT="$ROOT"
BIN="${FKV_BIN:-$ROOT/build/bin}"
PY="$ROOT/.venv/bin/python"
OUT="$ROOT/data/results"
DATA="${FKV_DATA_DIR:-$ROOT/../shared/data}"
[ $# -ge 2 ] || { sed -n 2,10p "$0"; exit 2; }
P="$1" B="$2" J="${3:-}"
LIM="${FKV_GRID_LIMIT:-300}" BLK=20 T="${FKV_THREADS:-1}"
RUN="qwen_gsm8k_sampled_${P}${FKV_GRID_TAG:+_$FKV_GRID_TAG}_b$B"
FULL=qwen_gsm8k_sampled_full
ARCH=(--work "$OUT" --archive results/qwen_gsm8k_sampled --block "$BLK" --samples 4)
mkdir -p "$OUT"
"$PY" scripts/results_archive.py restore "${ARCH[@]}" "$FULL" "$RUN"
n=0
while [ "$n" -lt "$LIM" ]; do
  n=$(( n + BLK < LIM ? n + BLK : LIM ))
  "$BIN/fkv-eval" generate --config configs/eval/gsm8k_qwen_sampled.json --model qwen2.5-coder-0.5b-instruct \
    --data-dir "$DATA" --limit "$n" --batch "${FKV_QWEN_BATCH:-16}" --threads "$T" --log-level warn \
    --policy "$P" --budget "$B" --window 16 ${J:+--judge "$J"} --output "$OUT/$RUN.jsonl" \
    --paired-with "$OUT/$FULL.jsonl" > /dev/null
  "$PY" scripts/results_archive.py save "${ARCH[@]}" ${FKV_GRID_PARTIAL:+--partial} "$RUN"
  echo "$RUN: problems 0-$((n - 1)) done $(date +%H:%M:%S)"
done
