#!/usr/bin/env python3
"""Golden reference bundles from HF transformers for fkv's tests (tests/data/tiny_models/<case>/).

Each case is a random-weight 2-layer model (fixed seed, deterministic) saved the way HF saves real
checkpoints, plus the reference outputs of HF's own fp32 eager forward:

  config.json                     HF config (rewritten to old-style rope keys where a case asks for it)
  model.safetensors               weights (or model-0000k-of-0000n.safetensors + model.safetensors.index.json)
  model.gguf                      (llama_g3_tied_oldrope only) the same weights as a llama.cpp-style GGUF,
                                  F32, Q/K rows permuted like convert_hf_to_gguf.py LlamaModel.permute
  golden.safetensors              ids int64 [T]; logits f32 [T, V]; hidden_states f32 [L+1, T, hidden]
                                  (0 = embeddings, l+1 = residual stream after decoder layer l, before
                                  the final norm); rope_inv_freq f32 [D/2]; greedy_ids int64 [G]
  golden.json                     format_version, case, generator sha256, versions, seed, dtype,
                                  expected config fields, rope_inv_freq, tolerance notes

Weights stored as fp16/bf16 are rounded *before* the reference forward, so the golden logits are HF's
fp32 forward of exactly the values in the file (fkv computing in fp32 from them can match at ~1e-5).
Every bundle is reloaded from disk with from_pretrained (and the GGUF with gguf_file=) and must
reproduce the golden logits, so the files on disk, not the in-memory model, are what is checked.

Regenerate: .venv/bin/python scripts/make_golden.py [--case NAME ...] [--out DIR]
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.metadata
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import gguf
import safetensors
import safetensors.torch
import transformers
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

FORMAT_VERSION = 1
SEED = 1234
T = 24            # prompt length of the golden forward
GREEDY_NEW = 8    # greedy continuation length (full-sequence forward per step, no cache)
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "tiny_models"

CASES: dict[str, dict] = {
    "llama_g1": dict(
        desc="llama, MHA (Hq = Hkv = 3, group 1), head_dim 16, untied lm_head, fp32 weights, "
             "new-style rope_parameters (default rope, theta 10000) as transformers writes them",
        arch="llama", dtype="float32",
        cfg=dict(vocab_size=128, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=3, num_key_value_heads=3, rms_norm_eps=1e-5,
                 max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                 rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
    "llama_g3_tied_oldrope": dict(
        desc="llama, GQA group 3 (Hq 6, Hkv 2), head_dim 8, tied embeddings (no lm_head.weight in the "
             "file), fp16 weights, old-style top-level rope_theta 50000 + rope_scaling null; also model.gguf "
             "(F32, permuted Q/K) that must reproduce the same logits",
        arch="llama", dtype="float16", old_style_rope=True, gguf=True,
        cfg=dict(vocab_size=192, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-5,
                 max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                 rope_parameters=dict(rope_type="default", rope_theta=50000.0))),
    "llama3_rope_sharded": dict(
        desc="llama, GQA group 2 (Hq 4, Hkv 2), head_dim 16, llama3 rope scaling (factor 8, low 1, high 4, "
             "original 64: with theta 10000 and D 16 the 8 frequencies fall 1 high / 2 medium / 5 low, so all "
             "three branches run), bf16 weights, sharded (model.safetensors.index.json + several shards), untied",
        arch="llama", dtype="bfloat16", max_shard_size="40KB",
        cfg=dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                 max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=1, eos_token_id=[2, 3],
                 rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                      high_freq_factor=4.0, original_max_position_embeddings=64))),
    "qwen2_g2_bias": dict(
        desc="qwen2, GQA group 2 (Hq 6, Hkv 3), hidden 84 = 6 x 14 (head_dim 14, not a power of two), "
             "non-zero random q/k/v biases, untied, fp32, theta 1e6",
        arch="qwen2", dtype="float32",
        cfg=dict(vocab_size=128, hidden_size=84, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=6, num_key_value_heads=3, rms_norm_eps=1e-6,
                 max_position_embeddings=1024, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
                 use_sliding_window=False,
                 rope_parameters=dict(rope_type="default", rope_theta=1000000.0))),
    "qwen3_g4_hd16": dict(
        desc="qwen3, GQA group 4 (Hq 8, Hkv 2), hidden 72 with explicit head_dim 16 (Hq*D = 128 != hidden), "
             "q_norm/k_norm with non-trivial weights, tied embeddings, fp32, theta 1e6",
        arch="qwen3", dtype="float32",
        cfg=dict(vocab_size=128, hidden_size=72, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=8, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                 max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1,
                 use_sliding_window=False,
                 rope_parameters=dict(rope_type="default", rope_theta=1000000.0))),
}

ARCH = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}


def script_sha256() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def save_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors file with a byte-stable header (safetensors' own writer orders __metadata__ at random)."""
    codes = {torch.float32: "F32", torch.int64: "I64"}
    header, blobs, off = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        b = t.numpy().tobytes()
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def randomize_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights large enough that attention is far from uniform; norms away from 1; biases non-zero."""
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head is yielded once (as embed_tokens)
            if "norm" in name:                      # input/post-attention/final norms, q_norm/k_norm
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)                   # U(0.5, 1.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:                                   # Linear [out, in]
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def round_to_(model: torch.nn.Module, dtype: torch.dtype) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))


def forward(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [T, V] and residual-stream states [L+1, T, hidden] of one fp32 eager forward."""
    states = []
    hooks = [model.model.embed_tokens.register_forward_hook(lambda m, i, o: states.append(o))]
    for layer in model.model.layers:
        hooks.append(layer.register_forward_hook(
            lambda m, i, o: states.append(o[0] if isinstance(o, tuple) else o)))
    try:
        with torch.no_grad():
            logits = model(ids[None], use_cache=False).logits[0]
    finally:
        for h in hooks:
            h.remove()
    return logits.float().contiguous(), torch.stack([s[0] for s in states]).float().contiguous()


def greedy(model, ids: torch.Tensor, n: int) -> tuple[list[int], float]:
    """Greedy continuation by full re-forward per step; also the smallest top-1/top-2 logit margin."""
    seq, margin = ids.clone(), float("inf")
    with torch.no_grad():
        for _ in range(n):
            last = model(seq[None], use_cache=False).logits[0, -1]
            top = torch.topk(last, 2).values
            margin = min(margin, float(top[0] - top[1]))
            seq = torch.cat([seq, last.argmax().view(1)])
    return seq[len(ids):].tolist(), margin


def rewrite_old_style_rope(cfg_path: Path) -> None:
    """Turn transformers 5's rope_parameters into the pre-v5 top-level rope_theta + rope_scaling keys."""
    j = json.loads(cfg_path.read_text())
    rp = j.pop("rope_parameters", None) or {}
    j["rope_theta"] = rp.get("rope_theta", 10000.0)
    scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
    j["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
    cfg_path.write_text(json.dumps(j, indent=2, sort_keys=True) + "\n")


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: per head, rows [2, D/2] -> [D/2, 2]."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gpt2_byte_symbols() -> list[str]:
    """GPT-2 bytes_to_unicode() symbols in byte order (used as a tiny byte-level vocabulary)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def write_llama_header(w: gguf.GGUFWriter, cfg, name: str, file_type: gguf.LlamaFileType | None = None) -> None:
    """The llama.cpp metadata of an HF llama config, and a minimal byte-level "gpt2" tokenizer block (id i is the
    byte-level symbol of byte i; no merges). Also used by scripts/make_quant_model.py."""
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(gpt2_byte_symbols()[: cfg.vocab_size])
    w.add_token_types([gguf.TokenType.NORMAL] * cfg.vocab_size)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id if isinstance(cfg.eos_token_id, int) else cfg.eos_token_id[0])


def write_gguf(path: Path, model, cfg) -> None:
    """llama.cpp-style F32 GGUF of an HF llama model (names per gguf-py constants, Q/K permuted)."""
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    w = gguf.GGUFWriter(str(path), "llama")
    write_llama_header(w, cfg, "fkv tiny llama", gguf.LlamaFileType.ALL_F32)

    def add(name: str, a: np.ndarray) -> None:
        w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))

    add("token_embd.weight", sd["model.embed_tokens.weight"])
    add("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        add("output.weight", sd["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        add(f"blk.{i}.attn_q.weight", permute_qk(sd[p + "self_attn.q_proj.weight"], hq))
        add(f"blk.{i}.attn_k.weight", permute_qk(sd[p + "self_attn.k_proj.weight"], hkv))
        add(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        add(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        add(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        add(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        add(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make_case(name: str, spec: dict, out_root: Path) -> dict:
    cfg_cls, model_cls = ARCH[spec["arch"]]
    dtype = getattr(torch, spec["dtype"])
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    cfg = cfg_cls(**copy.deepcopy(spec["cfg"]))
    cfg._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = model_cls(cfg).float().eval()
    gen = torch.Generator().manual_seed(SEED)
    randomize_(model, gen)
    if dtype != torch.float32:
        round_to_(model, dtype)  # golden = fp32 forward of exactly the values stored in the file
    rng = np.random.RandomState(SEED)
    ids = torch.from_numpy(rng.randint(0, cfg.vocab_size, size=T).astype(np.int64))

    logits, states = forward(model, ids)
    greedy_ids, greedy_margin = greedy(model, ids, GREEDY_NEW)
    inv_freq, attn_scale = ROPE_INIT_FUNCTIONS[cfg.rope_parameters["rope_type"]](cfg) \
        if cfg.rope_parameters["rope_type"] != "default" else \
        (model.model.rotary_emb.inv_freq.clone(), 1.0)
    assert torch.equal(inv_freq.float(), model.model.rotary_emb.inv_freq.float())
    assert attn_scale == 1.0

    # Weights as HF saves them (dtype, tying, sharding).
    to_save = copy.deepcopy(model).to(dtype)
    kw = {"max_shard_size": spec["max_shard_size"]} if "max_shard_size" in spec else {}
    to_save.save_pretrained(out, **kw)
    for extra in ("generation_config.json",):  # keep the bundle to the files fkv reads
        (out / extra).unlink(missing_ok=True)
    if spec.get("old_style_rope"):
        rewrite_old_style_rope(out / "config.json")
    if spec.get("gguf"):
        write_gguf(out / "model.gguf", model, cfg)

    save_sorted({"ids": ids, "logits": logits, "hidden_states": states,
                 "rope_inv_freq": inv_freq.float().contiguous(),
                 "greedy_ids": torch.tensor(greedy_ids, dtype=torch.int64)},
                out / "golden.safetensors", metadata={"format_version": str(FORMAT_VERSION), "case": name})
    check = safetensors.torch.load_file(str(out / "golden.safetensors"))
    assert torch.equal(check["logits"], logits) and torch.equal(check["ids"], ids)

    # Self-checks: HF reading the files back must give the same logits.
    re = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    re_logits, _ = forward(re, ids)
    assert torch.equal(re_logits, logits), f"{name}: reloaded safetensors model differs: " \
        f"{(re_logits - logits).abs().max().item()}"
    assert torch.equal(re.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq), f"{name}: rope differs"
    gguf_max_diff = None
    if spec.get("gguf"):
        rg = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32,
                                                  attn_implementation="eager").eval()
        rg_logits, _ = forward(rg, ids)
        gguf_max_diff = (rg_logits - logits).abs().max().item()
        assert gguf_max_diff <= 1e-5, f"{name}: HF's GGUF load differs from the safetensors model: {gguf_max_diff}"

    # A few stored weight values (fp32 of the stored dtype) so readers can check bytes, not just shapes.
    sd = model.state_dict()
    sample_names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                    "model.layers.1.mlp.down_proj.weight", "model.norm.weight"]
    sample_names += {"qwen2": ["model.layers.0.self_attn.k_proj.bias"],
                     "qwen3": ["model.layers.1.self_attn.q_norm.weight"]}.get(spec["arch"], [])
    weight_samples = {}
    for n in sample_names:
        flat = sd[n].float().flatten()
        weight_samples[n] = {"shape": list(sd[n].shape), "first": [float(x) for x in flat[:4].tolist()],
                             "last": float(flat[-1])}

    D = cfg.head_dim if getattr(cfg, "head_dim", None) else cfg.hidden_size // cfg.num_attention_heads
    rp = cfg.rope_parameters
    eos = cfg.eos_token_id if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id]
    files = sorted(p.name for p in out.iterdir())
    meta = {
        "format_version": FORMAT_VERSION,
        "case": name,
        "description": spec["desc"],
        "generator": "scripts/make_golden.py",
        "generator_sha256": script_sha256(),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "gguf": importlib.metadata.version("gguf"), "numpy": np.__version__},
        "seed": SEED,
        "weight_dtype": spec["dtype"],
        "attn_implementation": "eager",
        "compute_dtype": "float32",
        "files": files,
        "T": T,
        "ids": ids.tolist(),
        "expected_config": {
            "arch": spec["arch"], "n_vocab": cfg.vocab_size, "hidden": cfg.hidden_size,
            "n_layer": cfg.num_hidden_layers, "n_head_q": cfg.num_attention_heads,
            "n_head_kv": cfg.num_key_value_heads, "head_dim": D, "ffn_hidden": cfg.intermediate_size,
            "rms_eps": cfg.rms_norm_eps, "max_position": cfg.max_position_embeddings,
            "tie_embeddings": bool(cfg.tie_word_embeddings),
            "qkv_bias": spec["arch"] == "qwen2", "qk_norm": spec["arch"] == "qwen3",
            "rope": {k: rp[k] for k in ("rope_type", "rope_theta", "factor", "low_freq_factor",
                                        "high_freq_factor", "original_max_position_embeddings") if k in rp},
            "bos_id": cfg.bos_token_id, "eos_ids": eos,
        },
        "rope_inv_freq": [float(x) for x in inv_freq.float().tolist()],
        "weight_samples": weight_samples,
        "greedy_ids": greedy_ids,
        "greedy_min_margin": greedy_margin,
        "gguf_vs_safetensors_max_abs_diff": gguf_max_diff,
        "tolerance_notes": (
            "logits/hidden_states: HF fp32 eager forward (torch CPU) of the weights exactly as stored "
            "(fp16/bf16 values upcast to fp32). An fp32 implementation should match within max |diff| ~1e-5 "
            "(suggested atol 1e-4, rtol 1e-4; differences come from GEMM/softmax summation order only). "
            "rope_inv_freq is bit-exact HF (head_dim/2 < 16 takes torch's scalar powf path). greedy_ids "
            "must match exactly when greedy_min_margin is well above the logit tolerance."),
    }
    (out / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{name}: {len(files)} files, {size / 1024:.1f} KiB, greedy margin {greedy_margin:.3g}"
          + (f", gguf diff {gguf_max_diff:.2e}" if gguf_max_diff is not None else ""))
    return meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases (repeatable)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output root (default {DEFAULT_OUT})")
    args = ap.parse_args()
    torch.set_num_threads(1)                  # fixed reduction order for reproducible reference values
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    for name in args.case or CASES:
        make_case(name, CASES[name], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
