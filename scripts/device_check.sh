#!/usr/bin/env bash
# GPU device check (issue "The CUDA path"): build fkv with CUDA on a GPU machine, run every GPU test and benchmark,
# write one JSON report. Two steps:
#
#   bash scripts/device_check.sh pack        # HERE (a machine with Debian's registry): download the build
#                                             # dependencies the GPU image lacks (nlohmann-json, fmt, spdlog, Catch2,
#                                             # PCRE2, ICU) as .deb files into .devdeps/ (git-ignored, ~25 MB)
#   bash scripts/device_check.sh run [OUT]   # ON THE GPU MACHINE (repository root, .devdeps carried): unpack the
#                                             # .debs into a private prefix, configure with the machine's PyTorch
#                                             # (its LibTorch) and nvcc, build, run, write OUT/device_check.json
#
# With the workplace's device tool: run(command="bash scripts/device_check.sh run $OUT", carry=[".devdeps"],
# timeout_s=540). It fits in about 8 minutes on an H100/H200 (16 cores): ~4-5 min build (only the targets it runs),
# then the tests and benchmarks. Every stage's log lands in OUT/, and the JSON report says which stages passed, so a
# partial run still reports what it measured.
#
# What it runs:
#   - nvidia-smi, nvcc, torch versions;
#   - fkv_test_cuda: the fused kernels' parity tests against their ATen / CPU references (attention + statistics,
#     compaction, judge scoring + drop sampling, golden block scores + future scores); on a CPU-only machine they
#     skip, here they must pass;
#   - fkv_test_model: the model tests, with a visible GPU including tests/unit/model/device_test.cpp (CUDA logits vs
#     HF / the CPU runtime in fp32 and bf16, 64 greedy tokens equal to the native CPU kernels) and the device options;
#   - logits parity of the CUDA path (aten backend, fp32 and bf16, KV fp32/bf16) with the CPU runtime on the tiny HF
#     models of tests/data (and on FKV_DEVICE_MODELS/*.gguf when such a folder was carried);
#   - fkv-bench-cuda: copy bandwidth, attention / compaction bandwidth, eviction + judge share of decode time at
#     batch 32, B = 1024, L = 128 on a Qwen3-4B-shaped model with random weights;
#   - the whole chain on CUDA, scripts/paper_qwen3_gpu.sh (fkv-trace generate -> fkv-train sft -> fkv-train grpo
#     -> fkv-eval generate on AIME24 / AIME25, full and foresightkv paired) on the tiny random-weight model with
#     SmolLM2's tokenizer that `pack` writes (scripts/make_device_model.py), OUT/pipeline.json.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
DEBS=(nlohmann-json3-dev libfmt-dev libfmt9 libspdlog-dev libspdlog1.10 catch2 libpcre2-dev libpcre2-8-0
      libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libicu-dev libicu72 icu-devtools)

pack() {
  mkdir -p .devdeps
  grep -qx "/.devdeps/" .git/info/exclude 2>/dev/null || echo "/.devdeps/" >> .git/info/exclude
  (cd .devdeps && apt-get download "${DEBS[@]}")
  # the pipeline stage's inputs: a tiny random model with SmolLM2's tokenizer and chat template (the real GGUF is
  # over the 64 MiB the working tree may carry), AIME24/25 and 40 GSM8K-train problems
  local data="${FKV_DATA_DIR:-$ROOT/../shared/data}"
  mkdir -p .devdeps/models .devdeps/data/eval .devdeps/data/train
  .venv/bin/python scripts/make_device_model.py data/models/SmolLM2-135M-Instruct.Q4_1.gguf \
    .devdeps/models/smollm2-tiny.gguf
  cp "$data/eval/aime24.jsonl" "$data/eval/aime25.jsonl" .devdeps/data/eval/
  head -n 40 "$data/train/gsm8k_train.jsonl" > .devdeps/data/train/gsm8k_train.jsonl
  du -sh .devdeps
}

run() {
  local OUT="${1:-$ROOT/device_check_out}"
  mkdir -p "$OUT"
  local REPORT="$OUT/device_check.json" PREFIX=/tmp/fkvdeps BUILD="$ROOT/build-cuda"
  local t0=$SECONDS
  declare -A stage
  log() { echo "[device_check $((SECONDS - t0))s] $*"; }
  # ---- environment
  {
    nvidia-smi || true
    nvcc --version || true
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" || true
    nproc; free -g
  } > "$OUT/env.txt" 2>&1
  log "$(head -n 20 "$OUT/env.txt" | grep -E 'H100|H200|A100|release|torch' | head -3 | tr '\n' ' ')"
  # ---- dependencies: the carried .debs into a private prefix (never into /)
  mkdir -p "$PREFIX"
  for f in .devdeps/*.deb; do dpkg -x "$f" "$PREFIX"; done
  local MA=x86_64-linux-gnu
  export CPATH="$PREFIX/usr/include:$PREFIX/usr/include/$MA${CPATH:+:$CPATH}"
  export LIBRARY_PATH="$PREFIX/usr/lib/$MA${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$PREFIX/usr/lib/$MA${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PKG_CONFIG_PATH="$PREFIX/usr/lib/$MA/pkgconfig:$PREFIX/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$PREFIX"
  # ---- configure + build (the machine's python3 holds PyTorch; its LibTorch and NVIDIA libraries are used)
  local TORCH_PREFIX
  TORCH_PREFIX="$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
  log "configure"
  if cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFKV_WITH_CUDA=ON -DFKV_VENV_PYTHON=python3 \
      -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX/usr;$PREFIX/usr/lib/$MA/cmake" -DICU_ROOT="$PREFIX/usr" \
      > "$OUT/configure.log" 2>&1; then stage[configure]=ok; else stage[configure]=failed; fi
  log "build"
  if [ "${stage[configure]}" = ok ] && cmake --build "$BUILD" -j "$(nproc)" --target fkv-model fkv-bench-cuda \
      fkv_test_cuda fkv_test_model > "$OUT/build.log" 2>&1; then stage[build]=ok; else stage[build]=failed; fi
  local BIN="$BUILD/bin" TESTS="$BUILD/tests"
  # ---- tests
  if [ "${stage[build]}" = ok ]; then
    log "fkv_test_cuda"
    "$TESTS/fkv_test_cuda" -r junit -o "$OUT/test_cuda.xml" > /dev/null 2> "$OUT/test_cuda.err"
    stage[test_cuda]=$([ $? -eq 0 ] && echo ok || echo failed)
    "$TESTS/fkv_test_cuda" > "$OUT/test_cuda.txt" 2>&1
    log "fkv_test_model"
    "$TESTS/fkv_test_model" "~[real]" > "$OUT/test_model.txt" 2>&1  # includes [gpu]: CUDA logits + greedy tokens
    stage[test_model]=$([ $? -eq 0 ] && echo ok || echo failed)
    # ---- logits parity: CUDA (aten fp32 / bf16) vs the CPU runtime on the tiny HF models
    log "logits parity"
    python3 - "$BIN/fkv-model" "$OUT" > "$OUT/parity.json" 2> "$OUT/parity.err" <<'PY'
import json, os, subprocess, sys
import numpy as np
bin_, out = sys.argv[1], sys.argv[2]
tiny = "tests/data/tiny_models"
models = [os.path.join(tiny, d) for d in sorted(os.listdir(tiny)) if os.path.exists(os.path.join(tiny, d, "config.json"))]
extra = os.environ.get("FKV_DEVICE_MODELS", "")
if extra and os.path.isdir(extra):
    models += [os.path.join(extra, f) for f in sorted(os.listdir(extra)) if f.endswith(".gguf")]
ids = "1,9690,198,2683,359,253,5356,5646,11173,3365,3511,308,34519,28,7018,411,407,19712,8182,2,198"
rows = []
def logits(model, *extra_args):
    f = os.path.join(out, "tmp_logits.npy")
    r = subprocess.run([bin_, "logits", "--model", model, "--ids", ids_for(model), "--out", f, *extra_args],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr[-300:]
    return np.load(f), ""
def ids_for(model):
    cfg = os.path.join(model, "config.json")
    if os.path.exists(cfg):
        v = json.load(open(cfg))["vocab_size"]
        return ",".join(str(int(x) % v) for x in ids.split(","))
    return ids
for m in models:
    cpu, err = logits(m)
    row = {"model": m, "cpu_error": err}
    for name, args in [("cuda_f32", ["--device", "cuda", "--dtype", "f32"]),
                       ("cuda_f32_chunk3", ["--device", "cuda", "--dtype", "f32", "--chunk", "3"]),
                       ("cuda_bf16", ["--device", "cuda"]),
                       ("cuda_bf16_kv_bf16", ["--device", "cuda", "--kv-dtype", "bf16"])]:
        got, e = logits(m, *args)
        if cpu is None or got is None:
            row[name] = {"error": e}
        else:
            row[name] = {"max_abs_diff": float(np.abs(got - cpu).max()), "scale": float(np.abs(cpu).max()),
                         "argmax_agree": float((got.argmax(-1) == cpu.argmax(-1)).mean())}
    rows.append(row)
ok = all("max_abs_diff" in r["cuda_f32"] and r["cuda_f32"]["max_abs_diff"] <= 1e-3 * max(1.0, r["cuda_f32"]["scale"])
         for r in rows)
print(json.dumps({"ok": ok, "rows": rows}, indent=1))
PY
    stage[parity]=$(python3 -c "import json,sys; print('ok' if json.load(open('$OUT/parity.json'))['ok'] else 'failed')" 2>/dev/null || echo failed)
    # ---- benchmarks
    log "fkv-bench-cuda"
    timeout 180 "$BIN/fkv-bench-cuda" > "$OUT/bench.json" 2> "$OUT/bench.err"
    stage[bench]=$([ $? -eq 0 ] && echo ok || echo failed)
    # ---- the whole chain on CUDA (issue 27's AIME run on the CUDA path): traces -> SFT -> GRPO -> AIME24/25
    # paired eval, scripts/paper_qwen3_gpu.sh with the carried tiny model at B = 64 / 128, W = 16
    if [ -f .devdeps/models/smollm2-tiny.gguf ]; then
      log "build the CLIs"
      if timeout 240 cmake --build "$BUILD" -j "$(nproc)" --target fkv-trace fkv-train fkv-eval \
          > "$OUT/build_cli.log" 2>&1; then
        log "pipeline on cuda"
        rm -rf /tmp/fkv_pipe
        timeout 150 env FKV_BIN="$BIN" FKV_DATA_DIR=.devdeps/data FKV_DEVICE=cuda \
          FKV_MODEL=.devdeps/models/smollm2-tiny.gguf FKV_B=64 FKV_W=16 FKV_TRACE_LIMIT=8 FKV_TRACE_TOKENS=256 \
          FKV_MIN_LENGTH=0 FKV_REQUIRE_CORRECT=0 FKV_BUDGETS="64 128" FKV_RUN_DIR=/tmp/fkv_pipe \
          FKV_TRACES=/tmp/fkv_pipe/traces.safetensors FKV_SFT_ARGS="--steps 40 --batch 2" \
          FKV_GRPO_ARGS="--steps 2 --sequences-per-step 2 --group-size 4 --rollout-rows 4" \
          FKV_EVAL_ARGS="--limit 2 --samples 4 --batch 8 --max-new-tokens 256" \
          bash scripts/paper_qwen3_gpu.sh all > "$OUT/pipeline.log" 2>&1
        stage[pipeline_cuda]=$([ $? -eq 0 ] && echo ok || echo failed)
        python3 - /tmp/fkv_pipe > "$OUT/pipeline.json" 2>> "$OUT/pipeline.log" <<'PY'
import glob, json, os, sys
run = sys.argv[1]
def last(path):
    try:
        return json.loads(open(path).read().strip().split("\n")[-1])
    except Exception:
        return None
evals = {}
for f in sorted(glob.glob(os.path.join(run, "eval", "*.summary.json"))):
    j = json.load(open(f))
    evals[os.path.basename(f)] = {k: j.get(k) for k in ("accuracy", "n_samples", "n_problems", "tokens_per_s",
                                  "peak_kv_bytes", "eviction_time_share", "paired", "mean_length", "finish_reasons")}
print(json.dumps({"sft_last": last(os.path.join(run, "sft", "log.jsonl")),
                  "grpo_last": last(os.path.join(run, "grpo", "log.jsonl")), "eval": evals}, indent=1))
PY
      else
        stage[pipeline_cuda]=build_failed
      fi
    fi
  fi
  # ---- report
  python3 - "$OUT" "$REPORT" "$((SECONDS - t0))" "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
      "configure=${stage[configure]:-skipped}" "build=${stage[build]:-skipped}" \
      "test_cuda=${stage[test_cuda]:-skipped}" "test_model=${stage[test_model]:-skipped}" \
      "parity=${stage[parity]:-skipped}" "bench=${stage[bench]:-skipped}" \
      "pipeline_cuda=${stage[pipeline_cuda]:-skipped}" <<'PY'
import json, os, sys
out, report, secs, commit = sys.argv[1:5]
stages = dict(s.split("=", 1) for s in sys.argv[5:])
def load(name):
    p = os.path.join(out, name)
    try:
        return json.load(open(p))
    except Exception:
        return None
env = open(os.path.join(out, "env.txt")).read() if os.path.exists(os.path.join(out, "env.txt")) else ""
rep = {"commit": commit, "seconds": int(secs), "stages": stages, "env": env[-3000:],
       "parity": load("parity.json"), "bench": load("bench.json"), "pipeline": load("pipeline.json")}
tmp = report + ".tmp"
with open(tmp, "w") as f:
    json.dump(rep, f, indent=1)
os.replace(tmp, report)
print(json.dumps({"stages": stages, "seconds": int(secs)}))
PY
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) sed -n 2,30p "$0"; exit 2 ;;
esac
