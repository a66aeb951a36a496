#!/usr/bin/env python3
"""Write tests/data/tiny_models/llama_quant_gguf: a tiny llama GGUF whose matrices are block-quantized in the
formats no real test model here uses (Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS), and HF transformers' logits for it.

  model.gguf          2 layers, hidden 256, 4 query / 2 KV heads of 64, FFN 256, vocab 256, untied output;
                      every matrix is random blocks of one of the five types (llama.cpp layout, Q/K rows
                      permuted like convert_hf_to_gguf.py), norms F32.
  golden.safetensors  ids [T] (I64) and logits [T, 256] (F32): HF LlamaForCausalLM, fp32 eager, on the weights
                      gguf-py's dequantizer (gguf.quants.dequantize) gives for those blocks.
  golden.json         what the fixture is, the type of each matrix, versions, and the self-check below.

gguf-py cannot quantize these types, so the blocks are random bytes with their f16 scale fields patched to
positive values; the scales are set so each matrix's dequantized std is about 0.05 (the formats are linear
in d and dmin). Self-check: HF loading model.gguf itself (from_pretrained(gguf_file=...)), which dequantizes
with gguf-py, must give the same logits.

fkv's test (tests/unit/model/transformer_test.cpp) loads model.gguf through the runtime: the quantized
products run on the stored blocks, so this covers the loader and the kernels of these types against an
independent dequantizer and forward.

Run: .venv/bin/python scripts/make_quant_model.py   (transformers, torch, gguf 0.19, numpy)
"""
from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import forward, permute_qk, save_sorted, write_llama_header  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "tiny_models" / "llama_quant_gguf"
SEED = 20261129
T = 24
TARGET_STD = 0.05

# GGUF tensor -> (type, HF parameter); each type appears in both layers and in a different role.
TYPES = {
    "token_embd.weight": (Q.Q5_K, "model.embed_tokens.weight"),
    "output.weight": (Q.IQ4_XS, "lm_head.weight"),
}
LAYER_TYPES = [
    {"attn_q": Q.Q2_K, "attn_k": Q.Q3_K, "attn_v": Q.Q5_K, "attn_output": Q.IQ4_XS,
     "ffn_gate": Q.Q2_K, "ffn_up": Q.Q3_K, "ffn_down": Q.IQ4_NL},
    {"attn_q": Q.IQ4_NL, "attn_k": Q.IQ4_XS, "attn_v": Q.Q3_K, "attn_output": Q.Q5_K,
     "ffn_gate": Q.IQ4_XS, "ffn_up": Q.Q5_K, "ffn_down": Q.Q2_K},
]
HF_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj"}
for i, layer in enumerate(LAYER_TYPES):
    for g, qt in layer.items():
        TYPES[f"blk.{i}.{g}.weight"] = (qt, f"model.layers.{i}.{HF_NAMES[g]}.weight")
# byte offsets of the f16 scale fields (d, and dmin where the format has one) in a block
SCALE_OFFSETS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q5_K: (0, 2), Q.IQ4_NL: (0,), Q.IQ4_XS: (0,)}


def quantized_matrix(rng: np.random.Generator, qtype: Q, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Random blocks [rows, row_bytes] scaled to TARGET_STD, and their gguf-py dequantization [rows, cols]."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // block
    raw = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)
    u = rng.uniform(0.5, 1.0, size=(nb, len(SCALE_OFFSETS[qtype])))

    def patched(base: float) -> np.ndarray:
        r = raw.copy()
        for j, off in enumerate(SCALE_OFFSETS[qtype]):
            r[:, off:off + 2] = (u[:, j:j + 1] * base).astype(np.float16).view(np.uint8)
        return r.reshape(rows, cols // block * size)

    probe = gguf.quants.dequantize(patched(1e-3), qtype)
    base = 1e-3 * TARGET_STD / float(probe.std())
    r = patched(base)
    return r, gguf.quants.dequantize(r, qtype).astype(np.float32).reshape(rows, cols)


def main() -> int:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    cfg = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=128,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=2)
    cfg._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(cfg).float().eval()
    rng = np.random.default_rng(SEED)
    sd = model.state_dict()
    hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    w = gguf.GGUFWriter(str(OUT / "model.gguf"), "llama")
    write_llama_header(w, cfg, "fkv tiny llama, Q2_K/Q3_K/Q5_K/IQ4_NL/IQ4_XS")

    new_sd = {}
    for name, (qtype, hf) in TYPES.items():
        rows, cols = sd[hf].shape
        raw, values = quantized_matrix(rng, qtype, rows, cols)
        new_sd[hf] = torch.from_numpy(values)  # HF row order
        if ".attn_q." in name or ".attn_k." in name:
            # GGUF rows are llama.cpp's permutation of HF's (whole rows of blocks move)
            raw = permute_qk(raw, hq if ".attn_q." in name else hkv)
        w.add_tensor(name, raw, raw_dtype=qtype)
    norms = {"output_norm.weight": "model.norm.weight"}
    for i in range(cfg.num_hidden_layers):
        norms[f"blk.{i}.attn_norm.weight"] = f"model.layers.{i}.input_layernorm.weight"
        norms[f"blk.{i}.ffn_norm.weight"] = f"model.layers.{i}.post_attention_layernorm.weight"
    for name, hf in norms.items():
        v = rng.uniform(0.8, 1.2, size=sd[hf].shape).astype(np.float32)
        new_sd[hf] = torch.from_numpy(v)
        w.add_tensor(name, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    missing, unexpected = model.load_state_dict(new_sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    ids = torch.from_numpy(np.random.RandomState(SEED).randint(0, cfg.vocab_size, size=T).astype(np.int64))
    logits, _ = forward(model, ids)
    save_sorted({"ids": ids, "logits": logits}, OUT / "golden.safetensors",
                metadata={"case": "llama_quant_gguf"})

    # Self-check: HF's own GGUF loader (gguf-py dequantization, its Q/K un-permutation) agrees.
    rg = AutoModelForCausalLM.from_pretrained(OUT, gguf_file="model.gguf", dtype=torch.float32,
                                              attn_implementation="eager").eval()
    rg_logits, _ = forward(rg, ids)
    gguf_diff = (rg_logits - logits).abs().max().item()
    assert gguf_diff <= 1e-5, f"HF's GGUF load differs from the dequantized model: {gguf_diff}"

    meta = {
        "case": "llama_quant_gguf",
        "generator": "scripts/make_quant_model.py",
        "seed": SEED,
        "T": T,
        "types": {name: qt.name for name, (qt, _) in TYPES.items()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "gguf": importlib.metadata.version("gguf"), "numpy": np.__version__},
        "logits_max_abs": float(logits.abs().max()),
        "hf_gguf_load_vs_dequantized_max_abs_diff": gguf_diff,
        "tolerance_notes": "fkv computes d * (levels . x) (+ m * sum x) per block in fp32, HF fp32 GEMMs on the "
                           "dequantized weights: summation order only (suggested atol 1e-4 at logits of O(1)).",
    }
    (OUT / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({size / 1024:.1f} KiB), max |logit| {meta['logits_max_abs']:.3f}, "
          f"HF GGUF load diff {gguf_diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
