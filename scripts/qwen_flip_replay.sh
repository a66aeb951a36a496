#!/usr/bin/env bash
# Replay problems of the Qwen2.5-Coder-0.5B GSM8K grid (docs/results.md 7.2 / 7.4 protocol) one at a time with
# the eviction decisions logged, for scripts/flip_analysis.py --eviction-log:
#   bash scripts/qwen_flip_replay.sh POLICY B [JUDGE] -- P1 P2 ...
# A problem replayed alone (--offset P --limit 1, its 4 samples in one batch) draws the grid's samples token for
# token (same sampler streams and config hash; checked by the analysis against the archived records).
# Writes data/results/replay/qwen_gsm8k_sampled_<policy>_b<B>.{jsonl,evict.jsonl}; resumable (problems already
# in the output are skipped by fkv-eval). FKV_BIN, FKV_THREADS (1) as in qwen_learned_grid.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export FKV_ROOT="$ROOT"
BIN="${FKV_BIN:-$ROOT/build/bin}"
DATA="${FKV_DATA_DIR:-$ROOT/../shared/data}"
[ $# -ge 3 ] || { sed -n 2,9p "$0"; exit 2; }
P="$1" B="$2"; shift 2
J=""
if [ "$1" != "--" ]; then J="$1"; shift; fi
[ "$1" = "--" ] || { echo "expected -- before the problem list" >&2; exit 2; }
shift
OUT="$ROOT/data/results/replay/qwen_gsm8k_sampled_${P}_b$B"
mkdir -p "$(dirname "$OUT")"
for p in "$@"; do
  "$BIN/fkv-eval" generate --config configs/eval/gsm8k_qwen_sampled.json --model qwen2.5-coder-0.5b-instruct \
    --data-dir "$DATA" --offset "$p" --limit 1 --batch 4 --threads "${FKV_THREADS:-1}" --log-level warn \
    --policy "$P" --budget "$B" --window 16 ${J:+--judge "$J"} --output "$OUT.jsonl" \
    --eviction-log "$OUT.evict.jsonl" > /dev/null
  echo "$P B=$B: problem $p replayed $(date +%H:%M:%S)"
done
