#!/usr/bin/env python3
"""Reference outputs of HF transformers on a real GGUF model, for fkv's parity tests.

Loads the GGUF with `AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)` (weights dequantized
to fp32) and its tokenizer, renders fixed chat prompts with the model's chat template, and writes to
data/cache/hf_refs/<tag>/:
  refs.json         {"format_version", "model_file", "model_sha256", "transformers", "torch", "prompts": [
                      {"name", "messages", "text", "ids", "greedy_ids"} ...]}
  logits_<i>.npy    float32 [T, V] logits of prompt i (full-sequence forward)
Used by tests/unit/model (logits) and tests/unit/runtime (greedy generation). Not committed: the
files are large and derived; .ci/run regenerates them (about a minute). Deterministic (fp32, greedy).
Usage: .venv/bin/python scripts/make_hf_refs.py [--model PATH.gguf] [--tag NAME] [--new-tokens 64]
  e.g. --model data/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --tag qwen2.5-coder
"""
import argparse, hashlib, json, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMAT_VERSION = 1

PROMPTS = [
    ("gsm8k", [{"role": "user", "content": "Natalia sold clips to 48 of her friends in April, and then she sold half "
                "as many clips in May. How many clips did Natalia sell altogether in April and May? Please reason "
                "step by step, and put your final answer within \\boxed{}."}]),
    ("capital", [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]),
    ("system_code", [{"role": "system", "content": "You are a concise assistant."},
                     {"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number."}]),
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for c in iter(lambda: f.read(1 << 20), b""):
            h.update(c)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "data/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--tag", default="smollm2")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = a.out or os.path.join(ROOT, "data/cache/hf_refs", a.tag)
    stamp = os.path.join(out, "refs.json")
    digest = sha256(a.model)
    script_hash = sha256(os.path.abspath(__file__))
    if os.path.exists(stamp):
        with open(stamp) as f:
            old = json.load(f)
        if (old.get("model_sha256") == digest and old.get("script_sha256") == script_hash
                and old.get("new_tokens") == a.new_tokens):
            print(f"make_hf_refs: {stamp} is up to date")
            return 0

    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    d, name = os.path.split(os.path.abspath(a.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    os.makedirs(out, exist_ok=True)
    prompts = []
    for i, (pname, messages) in enumerate(PROMPTS):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=a.new_tokens, do_sample=False, top_k=None, top_p=None,
                                 temperature=None, pad_token_id=tok.pad_token_id)
        greedy = gen[0, len(ids):].tolist()
        tmp = os.path.join(out, f".logits_{i}.npy")
        np.save(tmp, logits.astype(np.float32))
        os.replace(tmp, os.path.join(out, f"logits_{i}.npy"))
        prompts.append({"name": pname, "messages": messages, "text": text, "ids": ids, "greedy_ids": greedy})
        print(f"make_hf_refs: {pname}: {len(ids)} prompt tokens, {len(greedy)} greedy tokens", file=sys.stderr)
    meta = {"format_version": FORMAT_VERSION, "model_file": name, "model_sha256": digest, "script_sha256": script_hash,
            "transformers": transformers.__version__, "torch": torch.__version__, "new_tokens": a.new_tokens,
            "prompts": prompts}
    with open(stamp + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(stamp + ".tmp", stamp)
    print(stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
