#!/usr/bin/env python3
"""CLI contract tests for fkv-model (info, logits, bench, bench-kernels) and its error behaviour on bad input.

Run by ctest: python tests/cli/test_fkv_model.py --bin build/bin/fkv-model
Prints "N passed, M failed" and exits non-zero on failure.
"""
import json, os, shutil, sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import cuda_available, run, run_all  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "tests", "data", "tiny_models")
SMOL = os.path.join(ROOT, "data", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")




def golden(name):
    from safetensors.numpy import load_file
    g = load_file(os.path.join(TINY, name, "golden.safetensors"))
    return g["ids"], g["logits"]


def info_json_contract(bin_, tmp):
    for path in [os.path.join(TINY, "qwen2_g2_bias"), os.path.join(TINY, "llama_g3_tied_oldrope", "model.gguf")]:
        r = run(bin_, "info", "--model", path, "--json")
        assert r.returncode == 0, r.stderr
        j = json.loads(r.stdout)
        for k in ("architecture", "n_params", "matrix_types", "kv_bytes_per_token", "config"):
            assert k in j, f"info --json lacks {k}"
        c = j["config"]
        assert j["kv_bytes_per_token"]["f32"] == 2 * c["n_layer"] * c["n_head_kv"] * c["head_dim"] * 4


def logits_match_golden_for_every_chunking(bin_, tmp):
    for name in ("qwen3_g4_hd16", "llama3_rope_sharded"):
        ids, want = golden(name)
        outs = []
        for chunk in ("1", "7", str(len(ids))):
            out = os.path.join(tmp, f"{name}_{chunk}.npy")
            r = run(bin_, "logits", "--model", os.path.join(TINY, name), "--ids", ",".join(map(str, ids)),
                    "--chunk", chunk, "--out", out)
            assert r.returncode == 0, r.stderr
            got = np.load(out)
            assert got.dtype == np.float32 and got.shape == want.shape, (got.dtype, got.shape)
            d = float(np.abs(got - want).max())
            assert d <= 1e-4, f"{name} chunk {chunk}: max |dlogit| {d}"
            outs.append(got)
        assert float(np.abs(outs[0] - outs[2]).max()) <= 1e-4


def logits_aten_backend_match_golden(bin_, tmp):
    # `fkv-model logits --backend aten` (fp32 ATen ops on the CPU) against HF transformers: 1e-3 full and chunked
    for name in ("qwen3_g4_hd16", "llama3_rope_sharded", "qwen2_g2_bias"):
        ids, want = golden(name)
        for chunk in ("1", "7", str(len(ids))):
            out = os.path.join(tmp, f"aten_{name}_{chunk}.npy")
            r = run(bin_, "logits", "--model", os.path.join(TINY, name), "--ids", ",".join(map(str, ids)),
                    "--chunk", chunk, "--backend", "aten", "--out", out)
            assert r.returncode == 0, r.stderr
            d = float(np.abs(np.load(out) - want).max())
            assert d <= 1e-3, f"aten {name} chunk {chunk}: max |dlogit| {d}"
    out = os.path.join(tmp, "bad_backend.npy")
    expect_failure(bin_, ["logits", "--model", os.path.join(TINY, "llama_g1"), "--ids", "1,2", "--backend", "tpu",
                          "--out", out], "native, aten or auto", out)
    if os.path.exists(SMOL):  # SmolLM2: aten vs native (both vs HF in the C++ real-model tests)
        ids = "1,9690,198,2683,359,253,5356,5646,11173,3365,3511,308,34519,28,7018,411,407,19712,8182,2,198"
        got = []
        for backend in ("native", "aten"):
            out = os.path.join(tmp, f"smol_{backend}.npy")
            r = run(bin_, "logits", "--model", SMOL, "--ids", ids, "--backend", backend, "--out", out)
            assert r.returncode == 0, r.stderr
            got.append(np.load(out))
        assert float(np.abs(got[0] - got[1]).max()) <= 2e-2 and (got[0].argmax(-1) == got[1].argmax(-1)).all()


def device_option(bin_, tmp):
    # --device cpu is the default (same logits); --dtype bf16 runs the CUDA compute dtype on the CPU (close to
    # HF fp32, not equal); --device cuda without a GPU exits 1 with a message that says so, writing nothing.
    name = "qwen2_g2_bias"
    ids, want = golden(name)
    model = os.path.join(TINY, name)
    a, b = os.path.join(tmp, "dev_default.npy"), os.path.join(tmp, "dev_cpu.npy")
    assert run(bin_, "logits", "--model", model, "--ids", ",".join(map(str, ids)), "--out", a).returncode == 0
    r = run(bin_, "logits", "--model", model, "--ids", ",".join(map(str, ids)), "--device", "cpu", "--out", b)
    assert r.returncode == 0, r.stderr
    assert (np.load(a) == np.load(b)).all()
    c = os.path.join(tmp, "dev_bf16.npy")
    r = run(bin_, "logits", "--model", model, "--ids", ",".join(map(str, ids)), "--backend", "aten", "--dtype", "bf16",
            "--out", c)
    assert r.returncode == 0, r.stderr
    d = float(np.abs(np.load(c) - want).max())
    assert 0 < d <= 0.05 * float(np.abs(want).max()) + 0.02, f"bf16 vs HF fp32: {d}"
    out = os.path.join(tmp, "dev_cuda.npy")
    if not cuda_available():
        expect_failure(bin_, ["logits", "--model", model, "--ids", "1,2", "--device", "cuda", "--out", out],
                       "no CUDA device is visible", out)
    expect_failure(bin_, ["logits", "--model", model, "--ids", "1,2", "--device", "cpu", "--dtype", "bf16",
                          "--out", out], "native kernels compute in fp32", out)
    expect_failure(bin_, ["logits", "--model", model, "--ids", "1,2", "--device", "gpu", "--out", out],
                   "expected cpu, cuda or cuda:N", out)


def smollm2_logits_chunk_independent(bin_, tmp):
    if not os.path.exists(SMOL):
        return
    ids = "1,9690,198,2683,359,253,5356,5646,11173,3365,3511,308,34519,28,7018,411,407,19712,8182,2,198"
    got = []
    for chunk in ("1", "5", "64"):
        out = os.path.join(tmp, f"smol_{chunk}.npy")
        r = run(bin_, "logits", "--model", SMOL, "--ids", ids, "--chunk", chunk, "--out", out)
        assert r.returncode == 0, r.stderr
        got.append(np.load(out))
    assert got[0].shape == (21, 49152)
    for g in got[1:]:
        d = float(np.abs(g - got[0]).max())
        assert d <= 1e-3, f"chunking changed logits by {d}"
        assert (g.argmax(-1) == got[0].argmax(-1)).all()


def bench_json_contract(bin_, tmp):
    r = run(bin_, "bench", "--model", os.path.join(TINY, "llama_g1"), "--contexts", "8,16", "--decode-tokens", "4",
            "--threads", "2", "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert [x["context"] for x in j["results"]] == [8, 16]
    for x in j["results"]:
        for k in ("prefill_tokens_per_s", "decode_tokens_per_s", "peak_rss_bytes"):
            assert k in x and x[k] > 0, k
    assert j["threads"] == 2 and "dtype_path" in j and "model" in j


def bench_kernels_json_contract(bin_, tmp):
    r = run(bin_, "bench-kernels", "--model", SMOL, "--n-tok", "1,9", "--contexts", "64,100", "--min-seconds", "0.01",
            "--threads", "2", "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    mm = j["matmul"]
    # SmolLM2 Q4_1: one Q4_1 shape per projection kind plus the Q8_0 head, each at both n_tok
    kinds = {(x["kind"], x["type"], x["rows"], x["cols"]) for x in mm}
    assert ("output", "Q8_0", 49152, 576) in kinds, kinds
    assert ("ffn_down", "Q4_1", 576, 1536) in kinds, kinds
    assert len(mm) == 2 * len(kinds), (len(mm), len(kinds))
    for x in mm:
        assert x["n_tok"] in (1, 9)
        assert x["q8_applies"] == (x["n_tok"] == 1), x
        for act in ("f32", "q8"):
            assert x[act]["ms"] > 0 and x[act]["weight_gb_per_s"] > 0 and x[act]["gmac_per_s"] > 0, x
    assert [a["context"] for a in j["attention"]] == [64, 100]
    for a in j["attention"]:
        assert (a["n_head_q"], a["n_head_kv"], a["head_dim"]) == (9, 3, 64), a
        assert a["f32_kv"]["us"] > 0 and a["f16_kv"]["us"] > 0
    assert j["threads"] == 2 and j["kernel"] in ("avx2", "avx512", "portable")
    r = run(bin_, "bench-kernels", "--model", SMOL, "--n-tok", "1", "--contexts", "32", "--min-seconds", "0.01")
    assert r.returncode == 0 and "f16 KV us" in r.stdout and "output" in r.stdout, r.stdout + r.stderr
    expect_failure(bin_, ["bench-kernels", "--model", SMOL, "--n-tok", "0"], "n-tok")
    expect_failure(bin_, ["bench-kernels", "--model", SMOL, "--contexts", "-5"], "contexts")


def expect_failure(bin_, args, must_mention, out=None):
    r = run(bin_, *args)
    assert r.returncode == 1, f"{args}: exit {r.returncode} (expected 1), stderr: {r.stderr[-400:]}"
    assert must_mention.lower() in r.stderr.lower(), f"{args}: message lacks '{must_mention}': {r.stderr[-400:]}"
    if out:
        assert not os.path.exists(out), f"{out} written despite the error"


def bad_input_gives_clear_errors(bin_, tmp):
    gg = os.path.join(TINY, "llama_g3_tied_oldrope", "model.gguf")
    data = open(gg, "rb").read()
    trunc = os.path.join(tmp, "trunc.gguf")
    open(trunc, "wb").write(data[: len(data) // 2])
    out = os.path.join(tmp, "never.npy")
    expect_failure(bin_, ["logits", "--model", trunc, "--ids", "1,2", "--out", out], "trunc", out)
    bad = os.path.join(tmp, "badmagic.gguf")
    open(bad, "wb").write(b"GGUX" + data[4:])
    expect_failure(bin_, ["info", "--model", bad], "magic")
    # corrupt safetensors header in a copy of a model directory
    d = os.path.join(tmp, "corrupt_st")
    shutil.copytree(os.path.join(TINY, "llama_g1"), d)
    st = os.path.join(d, "model.safetensors")
    b = bytearray(open(st, "rb").read())
    b[8:20] = b"{not json..."
    open(st, "wb").write(b)
    expect_failure(bin_, ["info", "--model", d], "json")
    # config/weight mismatch
    d2 = os.path.join(tmp, "mismatch")
    shutil.copytree(os.path.join(TINY, "llama_g1"), d2)
    cfg = json.load(open(os.path.join(d2, "config.json")))
    cfg["intermediate_size"] += 2
    json.dump(cfg, open(os.path.join(d2, "config.json"), "w"))
    expect_failure(bin_, ["info", "--model", d2], "shape")
    ids, _ = golden("llama_g1")
    expect_failure(bin_, ["logits", "--model", os.path.join(TINY, "llama_g1"), "--ids", "1,999999", "--out", out],
                   "vocabulary", out)
    expect_failure(bin_, ["logits", "--model", os.path.join(tmp, "nope.gguf"), "--ids", "1", "--out", out],
                   "not found", out)
    expect_failure(bin_, ["info", "--model", gg, "--bogus"], "unknown option")
    expect_failure(bin_, ["logits", "--model", gg, "--ids", "1,x", "--out", out], "not an integer", out)


def tokenize_detokenize_jsonl_contract(bin_, tmp):
    tok = os.path.join(ROOT, "..", "shared", "data", "tokenizers", "qwen3")
    if not os.path.isdir(tok):
        tok = SMOL
    if not os.path.exists(tok):
        return
    texts = ["Hello world", "<|im_start|>user\n2+2=?<|im_end|>", "  spaces\n\nand 12345 digits", "emoji 😀 ok"]
    inp, ids_out, txt_out = (os.path.join(tmp, n) for n in ("in.jsonl", "ids.jsonl", "texts.jsonl"))
    with open(inp, "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    r = run(bin_, "tokenize", "--tokenizer", tok, "--input", inp, "--output", ids_out)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in open(ids_out)]
    assert len(rows) == len(texts) and all(isinstance(x["ids"], list) and x["ids"] for x in rows)
    r = run(bin_, "tokenize", "--tokenizer", tok, "--text", texts[0])
    assert r.returncode == 0 and [int(x) for x in r.stdout.strip().split(",")] == rows[0]["ids"], r.stdout
    with open(os.path.join(tmp, "ids_in.jsonl"), "w") as f:
        for x in rows:
            f.write(json.dumps({"ids": x["ids"]}) + "\n")
    r = run(bin_, "detokenize", "--tokenizer", tok, "--input", os.path.join(tmp, "ids_in.jsonl"), "--output", txt_out)
    assert r.returncode == 0, r.stderr
    back = [json.loads(l)["text"] for l in open(txt_out)]
    assert back == texts, back
    # bad input: a line that is not JSON -> exit 1, no output file
    bad = os.path.join(tmp, "bad.jsonl")
    open(bad, "w").write('{"text": "ok"}\nnot json\n')
    out = os.path.join(tmp, "never.jsonl")
    expect_failure(bin_, ["tokenize", "--tokenizer", tok, "--input", bad, "--output", out], "line 2", out)


def generate_json_contract(bin_, tmp):
    if not os.path.exists(SMOL):
        return
    r = run(bin_, "generate", "--model", SMOL, "--chat", "What is the capital of France? Answer in one sentence.",
            "--greedy", "--max-new-tokens", "16", "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout.strip().splitlines()[-1])
    for k in ("prompt_ids", "ids", "text", "finish_reason", "tokens_per_s"):
        assert k in j, f"generate --json lacks {k}"
    assert j["finish_reason"] in ("eos", "length", "stop_string") and j["ids"]
    assert "Paris" in j["text"], j["text"]
    r = run(bin_, "generate", "--model", SMOL, "--prompt", "Once upon a time", "--temperature", "0.7", "--top-k", "20",
            "--top-p", "0.9", "--seed", "3", "--max-new-tokens", "8", "--num-sequences", "2", "--json")
    assert r.returncode == 0, r.stderr
    seqs = [json.loads(l) for l in r.stdout.strip().splitlines()]
    assert len(seqs) == 2 and all(len(x["ids"]) <= 8 for x in seqs)
    r2 = run(bin_, "generate", "--model", SMOL, "--prompt", "Once upon a time", "--temperature", "0.7", "--top-k", "20",
             "--top-p", "0.9", "--seed", "3", "--max-new-tokens", "8", "--json")
    assert json.loads(r2.stdout.strip().splitlines()[0])["ids"] == seqs[0]["ids"], "seeded sampling not reproducible"
    expect_failure(bin_, ["generate", "--model", SMOL, "--prompt", "a", "--chat", "b"], "exactly one")


def subcommand_dispatch(bin_, tmp):
    r = run(bin_, "--help")
    assert r.returncode == 0, r.stderr
    for sub in ("info", "logits", "tokenize", "detokenize", "generate", "bench", "bench-kernels"):
        assert f"  {sub}  " in r.stdout, f"--help does not list '{sub}' with its summary: {r.stdout}"
    r = run(bin_)
    assert r.returncode == 2 and "subcommands:" in r.stderr, (r.returncode, r.stderr)
    r = run(bin_, "nosuch")
    assert r.returncode == 2 and "unknown subcommand 'nosuch'" in r.stderr, (r.returncode, r.stderr)
    r = run(bin_, "info", "--help")
    assert r.returncode == 0 and "--model" in r.stdout, r.stdout
    expect_failure(bin_, ["info", "--model", SMOL, "--no-such-option"], "no-such-option")
    expect_failure(bin_, ["info", "--model", SMOL, "stray"], "unexpected argument")
    r = run(bin_, "info", "--model", os.path.join(tmp, "missing.gguf"))
    assert r.returncode == 1 and r.stderr.startswith("fkv-model info: "), r.stderr


def main():
    return run_all([subcommand_dispatch, info_json_contract, logits_match_golden_for_every_chunking,
                    logits_aten_backend_match_golden, device_option, smollm2_logits_chunk_independent,
                   bench_json_contract, bench_kernels_json_contract, bad_input_gives_clear_errors, tokenize_detokenize_jsonl_contract,
                   generate_json_contract])


if __name__ == "__main__":
    sys.exit(main())
