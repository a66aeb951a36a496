#!/usr/bin/env python3
"""CLI contract tests for `fkv-trace` and `fkv-eval fidelity` on the real default model (SmolLM2-135M; skipped
when it is not fetched): trace generation on GSM8K training problems, the file read back with the `safetensors`
package (the documented Python path), resume without duplicates, inspect + heat map, label on plain JSONL,
fidelity rows (golden first, B >= T exact), and errors (bad input, mismatched model, missing labels).

Run by ctest: python tests/cli/test_fkv_trace.py --bin build/bin/fkv-trace
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import run, run_all  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.environ.get("FKV_DATA_DIR") or os.path.join(ROOT, "..", "shared", "data")
MODEL = os.path.join(ROOT, "data", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
TINY = os.path.join(ROOT, "tests", "data", "tiny_models", "llama_g3_tied_oldrope", "model.gguf")


def have_model():
    return os.path.exists(MODEL) and os.path.exists(os.path.join(DATA, "train", "gsm8k_train.jsonl"))


def eval_bin(bin_):
    return os.path.join(os.path.dirname(bin_), "fkv-eval")


def load(path):
    from safetensors import safe_open
    from safetensors.numpy import load_file
    t = load_file(path)
    meta = json.loads(safe_open(path, "np").metadata()["fkv_trace"])
    return t, meta


def test_generate_resume_inspect_fidelity(bin_, tmp):
    if not have_model():
        print("  (skipped: SmolLM2 GGUF or GSM8K train data absent)")
        return
    out = os.path.join(tmp, "tr.safetensors")
    args = ["generate", "--model", MODEL, "--output", out, "--data-dir", DATA, "--limit", "2",
            "--max-new-tokens", "80", "--budgets", "32,64", "--window", "16", "--seed", "3"]
    r = run(bin_, *args)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["traces"] == 2 and summary["labelled_now"] == 2, summary
    t, meta = load(out)
    assert meta["format"] == "fkv-trace" and meta["version"] == 1
    assert meta["header"]["model"]["n_layer"] == 30
    tr = meta["traces"][0]
    T = tr["length"]
    assert t["trace.0.tokens"].shape == (T,) and t["trace.0.nll"].shape == (T - 1,)
    d = t["trace.0.golden.32x16.drops"]
    assert d.shape[0] == 30 and d.shape[2] == 3 and d.shape[3] == 16, d.shape
    steps = 0
    while T - steps * 16 > 32 + 16:
        steps += 1
    assert d.shape[1] == steps, (d.shape, steps)
    assert (d >= 0).all() and (d < 32).all()
    assert t["trace.0.golden.32x16.scores"].shape == (30, steps, 3, 32)
    # rerun: nothing new, file identical
    before = open(out, "rb").read()
    r = run(bin_, *args)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["labelled_now"] == 0
    assert open(out, "rb").read() == before
    # inspect + heat map
    hm = os.path.join(tmp, "hm.json")
    r = run(bin_, "inspect", "--input", out, "--heatmap", hm, "--budget", "32", "--window", "16", "--bins", "8")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["traces"] == 2 and s["labels"] == {"32x16": 2, "64x16": 2}, s
    h = json.load(open(hm))
    assert h["kind"] == "retention" and h["layers"] == 30 and len(h["retained"][0]) == 8
    # fidelity: golden replays the labels; B >= T reproduces the full cache
    fo = os.path.join(tmp, "fid.json")
    r = run(eval_bin(bin_), "fidelity", "--model", MODEL, "--traces", out, "--policies", "full,golden,streamingllm",
            "--budgets", "32,4096", "--window", "16", "--output", fo)
    assert r.returncode != 0 and "no golden labels for budget 4096" in r.stderr, r.stderr
    r = run(eval_bin(bin_), "fidelity", "--model", MODEL, "--traces", out, "--policies", "full,golden,streamingllm",
            "--budgets", "32", "--window", "16", "--output", fo)
    assert r.returncode == 0, r.stderr
    rows = {(x["policy"], x["budget"]): x for x in json.load(open(fo))["rows"]}
    for x in rows.values():
        for k in ("policy", "budget", "window", "lm_loss_ratio", "mean_delta_nll", "kl", "top1_agreement",
                  "low_entropy_loss_increase", "high_entropy_loss_increase", "tokens"):
            assert k in x, k
    assert rows[("full", 0)]["lm_loss_ratio"] == 1.0
    assert rows[("golden", 32)]["lm_loss_ratio"] < rows[("streamingllm", 32)]["lm_loss_ratio"], rows
    r = run(eval_bin(bin_), "fidelity", "--model", MODEL, "--traces", out, "--policies", "streamingllm",
            "--budgets", "4096", "--window", "16")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)["rows"][0]
    assert row["lm_loss_ratio"] == 1.0 and row["kl"] == 0.0 and row["top1_agreement"] == 1.0, row
    # labels from another model are refused when extending the file
    if os.path.exists(TINY):
        jl = os.path.join(tmp, "small.jsonl")
        with open(jl, "w") as f:
            f.write(json.dumps({"prompt_ids": [1, 2, 3], "response_ids": list(range(4, 60))}) + "\n")
        r = run(bin_, "label", "--model", TINY, "--input", jl, "--budgets", "16", "--window", "8", "--output", out)
        assert r.returncode == 1 and "another model" in r.stderr, r.stderr


def test_label_jsonl_and_errors(bin_, tmp):
    if not os.path.exists(TINY):
        print("  (skipped: tiny model absent)")
        return
    jl = os.path.join(tmp, "t.jsonl")
    with open(jl, "w") as f:
        f.write(json.dumps({"id": "a", "prompt_ids": [1, 2, 3], "response_ids": list(range(4, 60))}) + "\n")
        f.write(json.dumps({"id": "b", "prompt_ids": [5], "response_ids": list(range(10, 40))}) + "\n")
    out = os.path.join(tmp, "t.safetensors")
    r = run(bin_, "label", "--model", TINY, "--input", jl, "--budgets", "16", "--window", "8", "--output", out)
    assert r.returncode == 0, r.stderr
    t, meta = load(out)
    assert [x["id"] for x in meta["traces"]] == ["a", "b"]
    assert t["trace.0.golden.16x8.drops"].shape[1] == 5  # T = 59: 59 - 8s > 24 for s = 0..4
    # bad input: torn JSON line, budget not a multiple of the window, unknown option
    bad = os.path.join(tmp, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"prompt_ids": [1, 2], "response_')
    r = run(bin_, "label", "--model", TINY, "--input", bad, "--budgets", "16", "--window", "8",
            "--output", os.path.join(tmp, "x.safetensors"))
    assert r.returncode == 1 and "invalid JSON" in r.stderr and not os.path.exists(os.path.join(tmp, "x.safetensors"))
    r = run(bin_, "label", "--model", TINY, "--input", jl, "--budgets", "12", "--window", "8",
            "--output", os.path.join(tmp, "y.safetensors"))
    assert r.returncode == 1 and "multiple" in r.stderr, r.stderr
    r = run(bin_, "label", "--model", TINY, "--input", jl, "--budget", "16")
    assert r.returncode == 1, r.stderr
    # a truncated trace file is refused with a clear error
    trunc = os.path.join(tmp, "trunc.safetensors")
    data = open(out, "rb").read()
    open(trunc, "wb").write(data[: len(data) // 2])
    r = run(bin_, "inspect", "--input", trunc)
    assert r.returncode == 1 and trunc in r.stderr, r.stderr


if __name__ == "__main__":
    sys.exit(run_all([test_generate_resume_inspect_fidelity, test_label_jsonl_and_errors]))
