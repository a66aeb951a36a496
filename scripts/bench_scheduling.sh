#!/bin/bash
# Continuous vs static batching on the same (problem, sample) pairs, same binary, same run:
#   bash scripts/bench_scheduling.sh [MODEL] [PROBLEMS] [SAMPLES] [BATCH] [MAX_NEW] [THREADS]
# Runs `fkv-eval generate` twice from scratch (GSM8K test, protocol sampling T 0.6 / top-p 0.95 / top-k 20,
# full cache) into a temporary directory and prints wall time, generated tokens and tokens per wall second of
# each schedule and their ratio. Both runs draw the same sampler streams, so they generate the same samples
# (up to fp32 summation order) and the ratio is the scheduler's alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${FKV_BUILD_DIR:-$ROOT/build}/bin"
DATA="${FKV_DATA_DIR:-$ROOT/../shared/data}"
M="${1:-smollm2-135m-instruct}" P="${2:-8}" K="${3:-4}" B="${4:-8}" N="${5:-256}" T="${6:-2}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
declare -A WALL TOK
for sched in static continuous; do
  t0=$(date +%s.%N)
  "$BIN/fkv-eval" generate --model "$M" --data-dir "$DATA" --dataset gsm8k --limit "$P" --samples "$K" --batch "$B" \
    --scheduling $sched --max-new-tokens "$N" --temperature 0.6 --top-p 0.95 --top-k 20 --threads "$T" \
    --log-level warn --output "$TMP/$sched.jsonl" > /dev/null
  t1=$(date +%s.%N)
  WALL[$sched]=$(echo "$t1 - $t0" | bc -l)
  TOK[$sched]=$(python3 -c "import json,sys; print(sum(json.loads(l)['length'] for l in open(sys.argv[1])))" "$TMP/$sched.jsonl")
done
python3 - "$M" "$P" "$K" "$B" "$N" "$T" "${WALL[static]}" "${TOK[static]}" "${WALL[continuous]}" "${TOK[continuous]}" <<'PY'
import json, sys
m, p, k, b, n, t = sys.argv[1:7]
ws, ts, wc, tc = float(sys.argv[7]), int(sys.argv[8]), float(sys.argv[9]), int(sys.argv[10])
print(f"model {m}, {p} problems x {k} samples, batch {b}, max_new_tokens {n}, {t} threads (wall = whole fkv-eval run incl. load)")
print("| schedule | wall s | generated tokens | tokens / wall s |")
print("|---|---|---|---|")
print(f"| static | {ws:.1f} | {ts} | {ts / ws:.2f} |")
print(f"| continuous | {wc:.1f} | {tc} | {tc / wc:.2f} |")
print(f"continuous / static throughput: {(tc / wc) / (ts / ws):.2f}x")
print(json.dumps({"model": m, "problems": int(p), "samples": int(k), "batch": int(b), "max_new_tokens": int(n),
                  "threads": int(t), "static": {"wall_s": ws, "tokens": ts}, "continuous": {"wall_s": wc, "tokens": tc},
                  "ratio": (tc / wc) / (ts / ws)}))
PY
