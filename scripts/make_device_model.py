#!/usr/bin/env python3
"""Write a tiny random-weight GGUF that keeps a real model's tokenizer and chat template, for end-to-end runs
where the real model cannot travel: the GPU device check's working tree is limited to 64 MiB, and
SmolLM2-135M-Instruct's GGUF alone is 94 MiB. The tiny model (2 layers, hidden 64, 4 query / 2 KV heads of 16,
FFN 128, tied F16 embedding: ~6.5 MiB for SmolLM2's 49,152 tokens) is a valid model of the same architecture:
prompts are templated and tokenized exactly as for the real model, and generation, eviction, the judge and
grading run their real code paths; its text is noise.

  make_device_model.py IN.gguf OUT.gguf [--layers 2 --hidden 64 --heads 4 --kv-heads 2 --ffn 128 --seed 0]

Copied from IN: every general.* and tokenizer.* key (vocabulary, merges, special tokens, chat template) and the
rope base / norm epsilon / context length; replaced: the shape keys. Weights: embeddings N(0, 1), matrices
N(0, 1 / fan_in), norms 1, all F16 (norms F32). Deterministic for a seed; written atomically. Needs gguf-py and
numpy (the .venv's).
"""
import argparse
import os
import sys
import tempfile

import gguf
import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.hidden % a.heads or a.heads % a.kv_heads or min(a.layers, a.hidden, a.heads, a.kv_heads, a.ffn) <= 0:
        sys.exit("need positive sizes, hidden divisible by heads and heads by kv-heads")
    reader = gguf.GGUFReader(a.input)
    f = reader.fields
    if gguf.Keys.General.ARCHITECTURE not in f:
        sys.exit(f"{a.input}: no general.architecture key; not a model GGUF")
    arch = f[gguf.Keys.General.ARCHITECTURE].contents()
    if arch not in ("llama", "qwen2", "qwen3"):
        sys.exit(f"{a.input}: architecture {arch}; expected llama, qwen2 or qwen3")
    vocab = len(f["tokenizer.ggml.tokens"].data)
    hd = a.hidden // a.heads
    shape_keys = {
        f"{arch}.block_count": a.layers, f"{arch}.embedding_length": a.hidden,
        f"{arch}.feed_forward_length": a.ffn, f"{arch}.attention.head_count": a.heads,
        f"{arch}.attention.head_count_kv": a.kv_heads, f"{arch}.rope.dimension_count": hd,
        f"{arch}.vocab_size": vocab, f"{arch}.attention.key_length": hd, f"{arch}.attention.value_length": hd,
    }
    keep_prefixes = ("general.", "tokenizer.")
    keep_keys = (f"{arch}.context_length", f"{arch}.rope.freq_base", f"{arch}.attention.layer_norm_rms_epsilon")
    rng = np.random.default_rng(a.seed)

    def mat(rows, cols):  # numpy [out, in] = GGUF ne [in, out]
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float16)

    tensors = [("token_embd.weight", rng.standard_normal((vocab, a.hidden)).astype(np.float16)),
               ("output_norm.weight", np.ones(a.hidden, np.float32))]
    for i in range(a.layers):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", np.ones(a.hidden, np.float32)),
                    (p + "attn_q.weight", mat(a.heads * hd, a.hidden)),
                    (p + "attn_k.weight", mat(a.kv_heads * hd, a.hidden)),
                    (p + "attn_v.weight", mat(a.kv_heads * hd, a.hidden)),
                    (p + "attn_output.weight", mat(a.hidden, a.heads * hd)),
                    (p + "ffn_norm.weight", np.ones(a.hidden, np.float32)),
                    (p + "ffn_gate.weight", mat(a.ffn, a.hidden)),
                    (p + "ffn_up.weight", mat(a.ffn, a.hidden)),
                    (p + "ffn_down.weight", mat(a.hidden, a.ffn))]
        if arch == "qwen2":
            tensors += [(p + n, (0.5 * rng.standard_normal(d)).astype(np.float32))
                        for n, d in (("attn_q.bias", a.heads * hd), ("attn_k.bias", a.kv_heads * hd),
                                     ("attn_v.bias", a.kv_heads * hd))]
        if arch == "qwen3":
            tensors += [(p + "attn_q_norm.weight", np.ones(hd, np.float32)),
                        (p + "attn_k_norm.weight", np.ones(hd, np.float32))]
    out_dir = os.path.dirname(os.path.abspath(a.output))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp_", suffix=".gguf")
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
        for field in f.values():
            name = field.name
            if name == gguf.Keys.General.ARCHITECTURE or name.startswith("GGUF.") or name == "general.file_type":
                continue
            if not (name.startswith(keep_prefixes) or name in keep_keys):
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(name, field.contents(), vtype, sub_type=sub)
        for k, v in shape_keys.items():
            w.add_uint32(k, int(v))
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        for name, t in tensors:
            w.add_tensor(name, t)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, a.output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"{a.output}: {arch}, {a.layers} layers, hidden {a.hidden}, {a.heads}/{a.kv_heads} heads, vocab {vocab}, "
          f"{os.path.getsize(a.output) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
