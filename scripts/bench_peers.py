#!/usr/bin/env python3
"""Decode/prefill throughput of fkv vs HF transformers vs llama.cpp on the same GGUF, same threads.

Each system runs in its own subprocess (so peak RSS is its own), on the same random token ids
(seeded), at each context length: prefill `context` tokens (chunked for fkv and llama.cpp, n_batch
512; one forward for HF), then `decode_tokens` greedy single-token steps through the KV cache.
Reported: prefill tokens/s, decode tokens/s, peak RSS, and fkv's ratio to each peer.

  .venv/bin/python scripts/bench_peers.py [--model data/models/SmolLM2-135M-Instruct.Q4_1.gguf]
      [--contexts 128,1024,4096] [--decode-tokens 32] [--threads 2] [--peers hf,llamacpp]
      [--llamacpp-python .venv-bench/bin/python] [--json-out runs/bench.json]
      [--fkv-q8 | --fkv-runs fkv,fkv_q8_f16kv] [--rounds N]

llama.cpp comes from PyPI `llama-cpp-python` (builds llama.cpp from source, ~5 min), installed in a
separate bench-only venv: python3 -m venv .venv-bench && .venv-bench/bin/pip install llama-cpp-python==0.3.36
It is never needed by fkv itself.
"""
import argparse, json, os, subprocess, sys, textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HF_CODE = textwrap.dedent(r"""
import json, os, resource, sys, time
import numpy as np, torch
from transformers import AutoModelForCausalLM
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
d, name = os.path.split(os.path.abspath(cfg["model"]))
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
rng = np.random.default_rng(cfg["seed"])
out = []
for ctx in cfg["contexts"]:
    ids = torch.tensor([rng.integers(100, 20000, size=ctx).tolist()])
    with torch.inference_mode():
        t0 = time.perf_counter()
        o = m(ids, use_cache=True)
        t1 = time.perf_counter()
        past, nxt = o.past_key_values, o.logits[:, -1].argmax(-1, keepdim=True)
        t2 = time.perf_counter()
        for i in range(cfg["decode_tokens"]):
            o = m(nxt, past_key_values=past, use_cache=True)
            past, nxt = o.past_key_values, o.logits[:, -1].argmax(-1, keepdim=True)
        t3 = time.perf_counter()
    out.append({"context": ctx, "prefill_tokens_per_s": ctx / (t1 - t0),
                "decode_tokens_per_s": cfg["decode_tokens"] / (t3 - t2),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
print(json.dumps({"results": out, "version": __import__("transformers").__version__}))
""")

LLAMACPP_CODE = textwrap.dedent(r"""
import json, resource, sys, time
import numpy as np
from llama_cpp import Llama
import llama_cpp
cfg = json.loads(sys.argv[1])
rng = np.random.default_rng(cfg["seed"])
out = []
for ctx in cfg["contexts"]:
    ids = rng.integers(100, 20000, size=ctx).tolist()
    llm = Llama(model_path=cfg["model"], n_ctx=ctx + cfg["decode_tokens"] + 8, n_threads=cfg["threads"],
                n_threads_batch=cfg["threads"], n_batch=512, verbose=False)
    t0 = time.perf_counter()
    llm.eval(ids)
    t1 = time.perf_counter()
    last = lambda: int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))))
    nxt = last()
    t2 = time.perf_counter()
    for i in range(cfg["decode_tokens"]):
        llm.eval([nxt])
        nxt = last()
    t3 = time.perf_counter()
    out.append({"context": ctx, "prefill_tokens_per_s": ctx / (t1 - t0),
                "decode_tokens_per_s": cfg["decode_tokens"] / (t3 - t2),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
    del llm
print(json.dumps({"results": out, "version": llama_cpp.__version__}))
""")


def run_json(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"bench_peers: {' '.join(cmd[:3])} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "data/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--contexts", default="128,1024,4096")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peers", default="hf,llamacpp")
    ap.add_argument("--fkv-bin", default=os.path.join(ROOT, "build/bin/fkv-model"))
    ap.add_argument("--fkv-repeats", type=int, default=1)
    ap.add_argument("--llamacpp-python", default=os.path.join(ROOT, ".venv-bench/bin/python"))
    ap.add_argument("--hf-python", default=os.path.join(ROOT, ".venv/bin/python"))
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--fkv-q8", action="store_true",
                    help="also run fkv with --activations q8 (int8 activations in decode products, like llama.cpp)")
    ap.add_argument("--fkv-runs", default=None,
                    help="comma list of fkv configurations to run, among fkv, fkv_f16kv, fkv_q8, fkv_q8_f16kv "
                         "(default: fkv,fkv_f16kv, plus the two q8 ones with --fkv-q8)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every system this many times, alternating, and report each one's best")
    a = ap.parse_args()
    if a.rounds < 1:
        sys.exit("bench_peers: --rounds must be >= 1")
    contexts = [int(x) for x in a.contexts.split(",")]
    cfg = {"model": a.model, "contexts": contexts, "decode_tokens": a.decode_tokens, "threads": a.threads,
           "seed": a.seed}
    res = {}
    configs = {"fkv": ("f32", "f32"), "fkv_f16kv": ("f32", "f16"), "fkv_q8": ("q8", "f32"), "fkv_q8_f16kv": ("q8", "f16")}
    runs = a.fkv_runs.split(",") if a.fkv_runs else ["fkv", "fkv_f16kv"] + (["fkv_q8", "fkv_q8_f16kv"] if a.fkv_q8 else [])
    for name in runs:
        if name not in configs:
            sys.exit(f"bench_peers: unknown --fkv-runs entry {name!r}; expected some of {', '.join(configs)}")
    peers = [p for p in a.peers.split(",") if p]

    def keep_best(name, out):
        # per context: the best prefill and decode rate and the largest peak RSS over the rounds
        if name not in res:
            res[name] = out
            return
        for old, new in zip(res[name]["results"], out["results"]):
            for k in ("prefill_tokens_per_s", "decode_tokens_per_s", "peak_rss_bytes"):
                old[k] = max(old[k], new[k])

    for _ in range(a.rounds):  # alternate the systems so that slow drifts of the machine hit all of them
        for name in runs:
            act, kv = configs[name]
            keep_best(name, run_json(
                [a.fkv_bin, "bench", "--model", a.model, "--contexts", a.contexts, "--decode-tokens",
                 str(a.decode_tokens), "--threads", str(a.threads), "--repeats", str(a.fkv_repeats), "--kv-dtype", kv,
                 "--activations", act, "--json", "--log-level", "warn"]))
        if "hf" in peers:
            keep_best("hf", run_json([a.hf_python, "-c", HF_CODE, json.dumps(cfg)]))
        if "llamacpp" in peers:
            keep_best("llamacpp", run_json([a.llamacpp_python, "-c", LLAMACPP_CODE, json.dumps(cfg)]))
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    res["meta"] = {"model": os.path.basename(a.model), "threads": a.threads, "decode_tokens": a.decode_tokens,
                   "fkv_commit": commit, "nproc": os.cpu_count(), "rounds": a.rounds}
    names = [n for n in ("fkv", "fkv_f16kv", "fkv_q8", "fkv_q8_f16kv", "hf", "llamacpp") if n in res]
    label = {"fkv": "fkv (fp32 KV)", "fkv_f16kv": "fkv (fp16 KV)", "fkv_q8": "fkv q8 act (fp32 KV)",
             "fkv_q8_f16kv": "fkv q8 act (fp16 KV)", "hf": "HF transformers", "llamacpp": "llama.cpp (fp16 KV)"}
    # one decode-ratio column per fkv configuration that ran: fkv's decode tok/s over the peer's
    ratio_cols = [n for n in ("fkv", "fkv_q8_f16kv", "fkv_f16kv", "fkv_q8") if n in res]
    head = "| context | system | prefill tok/s | decode tok/s | peak RSS MiB |" + "".join(
        f" {label[n]} decode ratio |" for n in ratio_cols)
    lines = [f"model {res['meta']['model']}, {a.threads} threads, {a.decode_tokens} decode tokens, fkv {commit}, "
             f"best of {a.rounds} alternating round(s)", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for i, ctx in enumerate(contexts):
        for n in names:
            r = res[n]["results"][i]
            line = (f"| {ctx} | {label[n]} | {r['prefill_tokens_per_s']:.1f} | {r['decode_tokens_per_s']:.1f} | "
                    f"{r['peak_rss_bytes'] / 1048576:.0f} |")
            for c in ratio_cols:
                ratio = res[c]["results"][i]["decode_tokens_per_s"] / r["decode_tokens_per_s"]
                line += " |" if n.startswith("fkv") else f" {ratio:.2f}x |"
            lines.append(line)
    print("\n".join(lines))
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
