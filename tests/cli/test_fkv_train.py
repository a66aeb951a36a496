#!/usr/bin/env python3
"""CLI contract tests for `fkv-train` on a tiny llama GGUF (tests/data/tiny_models): `fkv-trace label` -> `fkv-train
sft --model M --traces F --steps N --output DIR` -> DIR/final.safetensors read with the `safetensors` package
(official key names, metadata), the judge used by `fkv-eval fidelity` and `fkv-model generate` through --judge,
--resume, config errors, the missing-judge message, `fkv-train import` of an official-style bf16 checkpoint, and
`fkv-train scale` (fc2 x S, the same top-k evictions, a cumulative score_scale, refused inputs).

Run by ctest: python tests/cli/test_fkv_train.py --bin build/bin/fkv-train
"""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import cuda_available, run, run_all  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "tests", "data", "tiny_models", "llama_g3_tied_oldrope", "model.gguf")
LAYERS, KV_HEADS, HEAD_DIM, GROUP = 2, 2, 8, 3
F = 2 * HEAD_DIM + 8 * GROUP


def sibling(bin_, name):
    return os.path.join(os.path.dirname(bin_), name)


def labelled(bin_, tmp, n=6):
    src = os.path.join(tmp, "seqs.jsonl")
    rng = random.Random(5)
    with open(src, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"s{i}", "prompt_ids": [rng.randrange(3, 192) for _ in range(4)],
                                "response_ids": [rng.randrange(3, 192) for _ in range(60 + 7 * i)]}) + "\n")
    out = os.path.join(tmp, "tr.safetensors")
    r = run(sibling(bin_, "fkv-trace"), "label", "--model", TINY, "--input", src, "--budgets", "16", "--window", "8",
            "--output", out)
    assert r.returncode == 0, r.stderr
    return out


def sft(bin_, tmp, traces, out, *extra):
    return run(bin_, "sft", "--model", TINY, "--traces", traces, "--budget", "16", "--window", "8", "--steps", "5",
               "--warmup", "1", "--batch", "2", "--checkpoint-every", "2", "--threads", "1", "--output", out, *extra)


def test_sft_writes_final_judge_used_by_eval_and_generate(bin_, tmp):
    from safetensors import safe_open
    traces = labelled(bin_, tmp)
    out = os.path.join(tmp, "run")
    r = sft(bin_, tmp, traces, out)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps_run"] == 5 and summary["final"].endswith("final.safetensors"), summary
    final = os.path.join(out, "final.safetensors")
    with safe_open(final, "np") as f:
        keys = set(f.keys())
        meta = json.loads(f.metadata()["fkv_judge"])
        w1 = f.get_tensor("model.layers.1.self_attn.judge_model.fc1.weight")
        b2 = f.get_tensor("model.layers.0.self_attn.judge_model.fc2.bias")
    assert len(keys) == 4 * LAYERS, keys
    assert w1.shape == (KV_HEADS, F, 16) and b2.shape == (KV_HEADS, 1), (w1.shape, b2.shape)
    assert meta["step"] == 5 and meta["budget"] == 16 and meta["window"] == 8 and meta["variant"] == "intended", meta
    assert meta["training"]["lr"] == 0.01 and len(meta["data_hash"]) == 64, meta
    log = [json.loads(x) for x in open(os.path.join(out, "log.jsonl"))]
    assert [x["step"] for x in log] == [1, 2, 3, 4, 5], log
    assert all(k in log[0] for k in ("loss", "acc", "acc_layers", "lr", "grad_norm", "rows_per_s")), log[0]
    assert log[0]["lr"] == 0.0 and log[1]["lr"] == 0.01, log
    # checkpoints every 2 steps, kept as judge files
    assert os.path.exists(os.path.join(out, "step_000002.safetensors"))
    assert os.path.exists(os.path.join(out, "step_000004.safetensors"))
    # the judge in fidelity
    r = run(sibling(bin_, "fkv-eval"), "fidelity", "--model", TINY, "--traces", traces, "--policies",
            "full,foresightkv,foresightkv_topk,golden", "--budgets", "16", "--window", "8", "--judge", final)
    assert r.returncode == 0, r.stderr
    rows = {x["policy"]: x for x in json.loads(r.stdout)["rows"]}
    assert rows["foresightkv"]["eviction_events"] > 0 and rows["foresightkv_topk"]["tokens"] > 0, rows
    assert rows["foresightkv"]["config"]["judge"] == final, rows["foresightkv"]["config"]
    # generation with the judge: tests/unit/judge (Generator); here the CLI's judge resolution
    tok = os.path.join(ROOT, "tests", "data", "text", "synthetic_a")
    r = run(sibling(bin_, "fkv-model"), "generate", "--model", TINY, "--tokenizer", tok, "--prompt", "hi",
            "--policy", "foresightkv", "--budget", "16", "--window", "8")
    assert r.returncode == 1 and "fkv-train sft" in r.stderr, r.stderr
    r = run(sibling(bin_, "fkv-model"), "generate", "--model", TINY, "--tokenizer", tok, "--prompt", "hi",
            "--policy", "foresightkv", "--budget", "16", "--window", "8", "--judge", final, "--variant", "parity")
    assert r.returncode == 1 and "variant" in r.stderr, r.stderr


def test_resume_and_errors(bin_, tmp):
    traces = labelled(bin_, tmp, n=3)
    out = os.path.join(tmp, "run")
    assert sft(bin_, tmp, traces, out).returncode == 0
    r = sft(bin_, tmp, traces, out)
    assert r.returncode == 1 and "--resume" in r.stderr, r.stderr
    r = sft(bin_, tmp, traces, out, "--resume")
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["steps_run"] == 0, r.stdout + r.stderr
    cfg = os.path.join(tmp, "bad.json")
    with open(cfg, "w") as f:
        json.dump({"stepz": 3}, f)
    r = run(bin_, "sft", "--config", cfg, "--output", os.path.join(tmp, "x"))
    assert r.returncode == 1 and "unknown key 'stepz'" in r.stderr, r.stderr
    r = sft(bin_, tmp, traces, os.path.join(tmp, "y"), "--budget", "12")
    assert r.returncode == 1 and "multiple" in r.stderr, r.stderr
    r = sft(bin_, tmp, os.path.join(tmp, "missing.safetensors"), os.path.join(tmp, "z"))
    assert r.returncode == 1 and not os.path.exists(os.path.join(tmp, "z", "final.safetensors")), r.stderr
    # --device cuda (config key `device`) on a machine without a GPU: a clear error, no judge written; the same
    # option on fkv-eval
    if not cuda_available():
        r = sft(bin_, tmp, traces, os.path.join(tmp, "dev"), "--device", "cuda")
        assert r.returncode == 1 and "no CUDA device is visible" in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(tmp, "dev", "final.safetensors"))
        r = run(sibling(bin_, "fkv-eval"), "fidelity", "--model", TINY, "--traces", traces, "--policies", "full",
                "--budgets", "16", "--window", "8", "--device", "cuda", "--output", os.path.join(tmp, "f.json"))
        assert r.returncode == 1 and "no CUDA device is visible" in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(tmp, "f.json"))
    # the learned policy without a judge: says how to train one
    r = run(sibling(bin_, "fkv-eval"), "fidelity", "--model", TINY, "--traces", traces, "--policies", "foresightkv",
            "--budgets", "16", "--window", "8")
    assert r.returncode == 1 and "fkv-train sft" in r.stderr, r.stderr


def test_grpo_one_process_equals_torchrun_two_processes(bin_, tmp):
    """The contract: `torchrun --nproc_per_node=2 --no-python fkv-train grpo ...` writes the same judge (within 1e-5)
    as one process, and two steps from the SFT judge change it."""
    import numpy as np
    from safetensors.numpy import load_file
    traces = labelled(bin_, tmp, n=4)
    sft_out = os.path.join(tmp, "sft")
    assert sft(bin_, tmp, traces, sft_out).returncode == 0
    init = os.path.join(sft_out, "final.safetensors")
    args = ["grpo", "--model", TINY, "--traces", traces, "--init", init, "--budget", "16", "--window", "8",
            "--steps", "2", "--sequences-per-step", "2", "--group-size", "4", "--rollout-rows", "4", "--threads", "1",
            "--eta", "0", "--checkpoint-every", "1"]  # rows 4: one forward of 4 in one process, 2 per rank on 2
    one, two = os.path.join(tmp, "one"), os.path.join(tmp, "two")
    r = run(bin_, *args, "--output", one)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps_run"] == 2 and summary["last"]["world_size"] == 1, summary
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    r = run(torchrun, "--standalone", "--nproc_per_node=2", "--no-python", bin_, *args, "--output", two)
    assert r.returncode == 0, r.stderr
    assert len([x for x in r.stdout.splitlines() if x.startswith("{")]) == 1, r.stdout  # rank 0 reports
    a, b, s = (load_file(os.path.join(d, "final.safetensors")) for d in (one, two, sft_out))
    assert set(a) == set(b) == set(s)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-5  # the contract (the sums are in one order: 0.0)
    assert "2 rows per forward" in r.stderr, r.stderr
    assert max(float(np.abs(a[k] - s[k]).max()) for k in a) > 1e-7  # the steps moved the judge
    logs = [[json.loads(x) for x in open(os.path.join(d, "log.jsonl"))] for d in (one, two)]
    assert [x["reward_mean"] for x in logs[0]] == [x["reward_mean"] for x in logs[1]]
    assert logs[1][0]["world_size"] == 2 and logs[1][0]["bytes_sent"] > 0
    # an existing run is not overwritten (the C++ tests cover kill + --resume)
    r = run(bin_, *args, "--output", one)
    assert r.returncode != 0 and "--resume" in r.stderr
    # bad config: a clear error, no output
    r = run(bin_, *args, "--reward", "mean", "--output", os.path.join(tmp, "bad"))
    assert r.returncode != 0 and "low_entropy_loss" in r.stderr
    r = run(bin_, *[x if x != init else os.path.join(tmp, "missing.safetensors") for x in args],
            "--output", os.path.join(tmp, "bad2"))
    assert r.returncode != 0 and "missing.safetensors" in r.stderr


def test_import_official_checkpoint(bin_, tmp):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(0)
    t = {"model.embed_tokens.weight": torch.randn(4, 4, generator=g).to(torch.bfloat16)}
    for l in range(LAYERS):
        p = f"model.layers.{l}.self_attn."
        for name, shape in (("fc1.weight", (KV_HEADS, F, 16)), ("fc1.bias", (KV_HEADS, 16)),
                            ("fc2.weight", (KV_HEADS, 16, 1)), ("fc2.bias", (KV_HEADS, 1))):
            t[p + "judge_model." + name] = torch.randn(*shape, generator=g).to(torch.bfloat16)
            t[p + "reference." + name] = torch.zeros(*shape, dtype=torch.bfloat16)
        t[p + "judge_model.feature_norm.weight"] = torch.ones(F, dtype=torch.bfloat16)
    hf = os.path.join(tmp, "hf")
    os.makedirs(hf)
    save_file(t, os.path.join(hf, "model.safetensors"))
    out = os.path.join(tmp, "imported.safetensors")
    r = run(bin_, "import", "--hf", hf, "--model", TINY, "--output", out, "--budget", "16", "--window", "8")
    assert r.returncode == 0, r.stderr
    with safe_open(out, "pt") as f:
        w = f.get_tensor("model.layers.1.self_attn.judge_model.fc1.weight")
        meta = json.loads(f.metadata()["fkv_judge"])
    assert torch.equal(w, t["model.layers.1.self_attn.judge_model.fc1.weight"].float())
    assert meta["variant"] == "parity" and meta["head_dim"] == HEAD_DIM and meta["group"] == GROUP, meta
    # a judge of the wrong shape for the model is refused
    bad = {k: v for k, v in t.items() if "layers.1." not in k}
    save_file(bad, os.path.join(hf, "model.safetensors"))
    r = run(bin_, "import", "--hf", hf, "--model", TINY, "--output", os.path.join(tmp, "bad.safetensors"))
    assert r.returncode == 1 and "trained for 1 layers" in r.stderr, r.stderr


def test_scale_judge(bin_, tmp):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    traces = labelled(bin_, tmp, n=3)
    src = os.path.join(tmp, "judge.safetensors")
    r = sft(bin_, tmp, traces, os.path.join(tmp, "run"), "--steps", "2")
    assert r.returncode == 0, r.stderr
    os.replace(os.path.join(tmp, "run", "final.safetensors"), src)
    s3, s6 = os.path.join(tmp, "s3.safetensors"), os.path.join(tmp, "s6.safetensors")
    r = run(bin_, "scale", "--judge", src, "--scale", "3", "--output", s3)
    assert r.returncode == 0, r.stderr
    r = run(bin_, "scale", "--judge", s3, "--scale", "2", "--output", s6)
    assert r.returncode == 0 and json.loads(r.stdout)["score_scale"] == 6.0, r.stdout + r.stderr

    def read(path):
        with safe_open(path, "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["fkv_judge"])
    (a, ma), (b, mb) = read(src), read(s6)
    assert sorted(a) == sorted(b)
    for k in a:
        want = a[k] * 6 if ".fc2." in k else a[k]
        assert torch.allclose(b[k], want, rtol=1e-6, atol=0), k
    assert mb["score_scale"] == 6.0 and mb["budget"] == ma["budget"] and mb["variant"] == ma["variant"], mb
    # the same order: foresightkv_topk evicts the same entries (identical fidelity)
    rows = []
    for j in (src, s6):
        r = run(sibling(bin_, "fkv-eval"), "fidelity", "--model", TINY, "--traces", traces, "--policies",
                "foresightkv_topk", "--budgets", "16", "--window", "8", "--judge", j)
        assert r.returncode == 0, r.stderr
        rows.append(json.loads(r.stdout)["rows"][0])
    assert rows[0]["mean_nll"] == rows[1]["mean_nll"] and rows[0]["kl"] == rows[1]["kl"], rows
    # refused: no --scale, a non-positive scale, a training checkpoint (optimizer state, kind "sft")
    r = run(bin_, "scale", "--judge", src, "--output", os.path.join(tmp, "x.safetensors"))
    assert r.returncode == 1 and "--scale" in r.stderr, r.stderr
    r = run(bin_, "scale", "--judge", src, "--scale", "0", "--output", os.path.join(tmp, "x.safetensors"))
    assert r.returncode == 1 and "> 0" in r.stderr, r.stderr
    r = run(bin_, "scale", "--judge", os.path.join(tmp, "run", "checkpoint.safetensors"), "--scale", "2", "--output",
            os.path.join(tmp, "x.safetensors"))
    assert r.returncode == 1 and "training checkpoint" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(tmp, "x.safetensors"))


if __name__ == "__main__":
    sys.exit(run_all([test_sft_writes_final_judge_used_by_eval_and_generate, test_resume_and_errors,
                      test_grpo_one_process_equals_torchrun_two_processes, test_import_official_checkpoint,
                      test_scale_judge]))
