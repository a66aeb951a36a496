#!/usr/bin/env python3
"""Decode/prefill throughput of fkv vs HF transformers vs llama.cpp on the same GGUF, same threads.

Each system runs in its own subprocess (so peak RSS is its own), on the same random token ids
(seeded), at each context length: prefill `context` tokens (chunked for fkv and llama.cpp, n_batch
512; one forward for HF), then `decode_tokens` greedy single-token steps through the KV cache.
Reported: prefill tokens/s, decode tokens/s, peak RSS, and fkv's ratio to each peer.

  .venv/bin/python scripts/bench_peers.py [--model data/models/SmolLM2-135M-Instruct.Q4_1.gguf]
      [--contexts 128,1024,4096] [--decode-tokens 32] [--threads 2] [--peers hf,llamacpp]
      [--llamacpp-python .venv-bench/bin/python] [--json-out runs/bench.json]

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
    a = ap.parse_args()
    contexts = [int(x) for x in a.contexts.split(",")]
    cfg = {"model": a.model, "contexts": contexts, "decode_tokens": a.decode_tokens, "threads": a.threads,
           "seed": a.seed}
    res = {}
    for act in ("f32", "q8") if a.fkv_q8 else ("f32",):
        for kv in ("f32", "f16"):
            name = ("fkv" if kv == "f32" else "fkv_f16kv") if act == "f32" else ("fkv_q8" if kv == "f32" else "fkv_q8_f16kv")
            res[name] = run_json(
                [a.fkv_bin, "bench", "--model", a.model, "--contexts", a.contexts, "--decode-tokens",
                 str(a.decode_tokens), "--threads", str(a.threads), "--repeats", str(a.fkv_repeats), "--kv-dtype", kv,
                 "--activations", act, "--json", "--log-level", "warn"])
    peers = [p for p in a.peers.split(",") if p]
    if "hf" in peers:
        res["hf"] = run_json([a.hf_python, "-c", HF_CODE, json.dumps(cfg)])
    if "llamacpp" in peers:
        res["llamacpp"] = run_json([a.llamacpp_python, "-c", LLAMACPP_CODE, json.dumps(cfg)])
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    res["meta"] = {"model": os.path.basename(a.model), "threads": a.threads, "decode_tokens": a.decode_tokens,
                   "fkv_commit": commit, "nproc": os.cpu_count()}
    names = [n for n in ("fkv", "fkv_f16kv", "fkv_q8", "fkv_q8_f16kv", "hf", "llamacpp") if n in res]
    label = {"fkv": "fkv (fp32 KV)", "fkv_f16kv": "fkv (fp16 KV)", "fkv_q8": "fkv q8 act (fp32 KV)",
             "fkv_q8_f16kv": "fkv q8 act (fp16 KV)", "hf": "HF transformers", "llamacpp": "llama.cpp (fp16 KV)"}
    head = "| context | system | prefill tok/s | decode tok/s | peak RSS MiB | fkv (fp32 KV) decode ratio |"
    if a.fkv_q8:
        head += " fkv q8 act (fp16 KV) decode ratio |"
    lines = [f"model {res['meta']['model']}, {a.threads} threads, {a.decode_tokens} decode tokens, fkv {commit}", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for i, ctx in enumerate(contexts):
        fkv_dec = res["fkv"]["results"][i]["decode_tokens_per_s"]
        for n in names:
            r = res[n]["results"][i]
            ratio = "" if n.startswith("fkv") else f"{fkv_dec / r['decode_tokens_per_s']:.2f}x"
            line = (f"| {ctx} | {label[n]} | {r['prefill_tokens_per_s']:.1f} | {r['decode_tokens_per_s']:.1f} | "
                    f"{r['peak_rss_bytes'] / 1048576:.0f} | {ratio} |")
            if a.fkv_q8:
                q8_dec = res["fkv_q8_f16kv"]["results"][i]["decode_tokens_per_s"]
                line += "" if n.startswith("fkv") else f" {q8_dec / r['decode_tokens_per_s']:.2f}x"
                line += " |"
            lines.append(line)
    print("\n".join(lines))
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
