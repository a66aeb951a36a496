#!/usr/bin/env python3
"""CLI contract tests for `fkv-eval grade`: the JSONL contract (every input field kept, key order and line order
kept, four fields added), the one-line JSON summary on stdout, and the error behaviour (malformed input: exit 1,
a message naming the line, no output file).

Run by ctest: python tests/cli/test_fkv_eval.py --bin build/bin/fkv-eval
Prints "N passed, M failed" and exits non-zero on failure. Standard library only.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import run, run_all  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_EVAL = os.path.join(os.environ.get("FKV_DATA_DIR") or os.path.join(ROOT, "..", "shared", "data"), "eval")
ADDED = ["extracted", "correct", "strict_extracted", "strict_correct"]




def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def grade(bin_, tmp, rows, *extra, name="in"):
    inp, out = os.path.join(tmp, name + ".jsonl"), os.path.join(tmp, name + ".out.jsonl")
    write_lines(inp, rows)
    r = run(bin_, "grade", "--input", inp, "--output", out, *extra)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one summary line on stdout, got {r.stdout!r}"
    return json.loads(lines[0]), read_jsonl(out)


def expect_failure(bin_, args, needle, out=None):
    r = run(bin_, *args)
    assert r.returncode == 1, f"{args}: expected exit 1, got {r.returncode} (stderr {r.stderr!r})"
    assert r.stderr.startswith("fkv-eval grade: "), f"stderr should start with 'fkv-eval grade: ': {r.stderr!r}"
    assert needle in r.stderr, f"{args}: stderr lacks {needle!r}: {r.stderr!r}"
    if out is not None:
        assert not os.path.exists(out), f"{out} was written although grading failed"
        leftovers = [f for f in os.listdir(os.path.dirname(out)) if f.startswith(os.path.basename(out))]
        assert not leftovers, f"temporary files left behind: {leftovers}"


def fields_and_order_are_kept(bin_, tmp):
    rows = [
        {"id": 7, "meta": {"b": 1, "a": [1, 2]}, "response": "so \\boxed{\\dfrac{3}{4}}", "answer": "\\frac{3}{4}",
         "zz": None},
        {"zz": "first key", "answer": "25", "response": "no box, the total is 24"},
        {"response": "truncated \\boxed{12", "answer": "012", "unicode": "π ≈ 3.14 — 题目"},
    ]
    summary, out = grade(bin_, tmp, rows)
    assert len(out) == len(rows), f"{len(out)} output lines for {len(rows)} input lines"
    for src, got in zip(rows, out):
        assert list(got.keys()) == list(src.keys()) + ADDED, f"key order: {list(got.keys())}"
        for k, v in src.items():
            assert got[k] == v, f"field {k} changed: {v!r} -> {got[k]!r}"
        assert isinstance(got["correct"], bool) and isinstance(got["strict_correct"], bool)
        assert isinstance(got["extracted"], str) and isinstance(got["strict_extracted"], str)
    assert [o["correct"] for o in out] == [True, False, True]
    assert [o["strict_correct"] for o in out] == [True, False, False]
    assert [o["extracted"] for o in out] == ["\\frac{3}{4}", "24", "12"]
    assert [o["strict_extracted"] for o in out] == ["\\frac{3}{4}", "", ""]


def summary_line(bin_, tmp):
    rows = [{"response": "\\boxed{5}", "answer": "5"}, {"response": "The answer is 5.", "answer": "5"},
            {"response": "\\boxed{6}", "answer": "5"}, {"response": "\\boxed{5", "answer": "5"}]
    summary, _ = grade(bin_, tmp, rows)
    assert list(summary.keys()) == ["n", "accuracy", "strict_accuracy"], summary
    assert summary["n"] == 4
    assert abs(summary["accuracy"] - 0.75) < 1e-12, summary
    assert abs(summary["strict_accuracy"] - 0.25) < 1e-12, summary


def empty_input_gives_empty_output(bin_, tmp):
    summary, out = grade(bin_, tmp, [], name="empty")
    assert summary == {"n": 0, "accuracy": None, "strict_accuracy": None}, summary
    assert out == []


def blank_lines_and_crlf_are_tolerated(bin_, tmp):
    inp, out = os.path.join(tmp, "blank.jsonl"), os.path.join(tmp, "blank.out.jsonl")
    with open(inp, "wb") as f:
        f.write(b'{"response": "\\\\boxed{1}", "answer": "1"}\r\n\r\n   \n{"response": "\\\\boxed{2}", "answer": "2"}\n\n')
    r = run(bin_, "grade", "--input", inp, "--output", out)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 2
    assert [o["correct"] for o in read_jsonl(out)] == [True, True]


def dataset_and_field_options(bin_, tmp):
    rows = [{"generation": "\\boxed{1,234}", "answer": "She earns 1,000 + 234.\n#### 1,234"},
            {"generation": "she gets 18 dollars", "answer": "#### 18"}]
    summary, out = grade(bin_, tmp, rows, "--dataset", "gsm8k", "--field", "generation", name="gsm")
    assert summary["accuracy"] == 1.0, (summary, out)
    rows = [{"response": "\\boxed{27}", "answer": 27.0}, {"response": "\\boxed{-1}", "answer": -1}]
    summary, out = grade(bin_, tmp, rows, "--dataset", "amc23", name="amc")
    assert summary["accuracy"] == 1.0, (summary, out)
    assert out[0]["answer"] == 27.0
    rows = [{"response": "The correct option is (B).", "answer": "B"}, {"response": "\\boxed{C}", "answer": "D"}]
    summary, out = grade(bin_, tmp, rows, "--dataset", "gpqa", name="gpqa")
    assert [o["extracted"] for o in out] == ["B", "C"], out
    assert [o["correct"] for o in out] == [True, False], out
    rows = [{"response": "\\boxed{25}", "answer": "025"}]
    for ds in ("aime24", "aime25", "math"):
        summary, _ = grade(bin_, tmp, rows, "--dataset", ds, name="aime_" + ds)
        assert summary["accuracy"] == 1.0, (ds, summary)


def shared_gpqa_through_the_cli(bin_, tmp):
    path = os.path.join(SHARED_EVAL, "gpqa.jsonl")
    if not os.path.exists(path):
        print(f"note: {path} missing; shared_gpqa_through_the_cli checks nothing")
        return
    src = read_jsonl(path)
    rows = [dict(r, response="Thinking...\n\\boxed{" + r["output"] + "}", answer=r["output"]) for r in src]
    summary, out = grade(bin_, tmp, rows, "--dataset", "gpqa", name="shared_gpqa")
    assert summary == {"n": len(src), "accuracy": 1.0, "strict_accuracy": 1.0}, summary
    assert [o["input"] for o in out] == [r["input"] for r in src]


def malformed_input_fails_cleanly(bin_, tmp):
    good = {"response": "\\boxed{1}", "answer": "1"}
    out = os.path.join(tmp, "bad.out.jsonl")
    inp = os.path.join(tmp, "bad.jsonl")
    for lines, needle in [
        ([good, good, '{"response": "\\\\boxed{1}", "answer": '], "line 3"),
        ([good, "[1, 2]"], "line 2"),
        ([good, {"answer": "1"}], "line 2"),
        ([{"response": 5, "answer": "1"}], "line 1"),
        ([good, {"response": "x"}], "\"answer\""),
        ([good, {"response": "x", "answer": None}], "line 2"),
        ([good, {"response": "x", "answer": "a #### 1 #### 2"}], "line 2"),
    ]:
        write_lines(inp, lines)
        args = ["grade", "--input", inp, "--output", out]
        if "####" in json.dumps(lines[-1]):
            args += ["--dataset", "gsm8k"]
        expect_failure(bin_, args, needle, out)
    with open(inp, "wb") as f:
        f.write(b'{"response": "\xff\xfe", "answer": "1"}\n')
    expect_failure(bin_, ["grade", "--input", inp, "--output", out], "line 1", out)
    r = run(bin_, "grade", "--input", inp, "--output", out)
    assert "\ufffd" not in r.stderr, f"error message is not valid UTF-8: {r.stderr!r}"
    expect_failure(bin_, ["grade", "--input", os.path.join(tmp, "missing.jsonl"), "--output", out], "cannot open", out)
    write_lines(inp, [good])
    expect_failure(bin_, ["grade", "--input", inp, "--output", out, "--dataset", "aime2024"], "aime24", out)
    expect_failure(bin_, ["grade", "--input", inp], "--output", out)
    expect_failure(bin_, ["grade", "--input", inp, "--output", out, "--bogus", "1"], "unknown option", out)


def failed_run_keeps_previous_output(bin_, tmp):
    out = os.path.join(tmp, "keep.out.jsonl")
    with open(out, "w") as f:
        f.write("previous\n")
    inp = os.path.join(tmp, "keep.jsonl")
    write_lines(inp, [{"response": "\\boxed{1}", "answer": "1"}, "not json"])
    r = run(bin_, "grade", "--input", inp, "--output", out)
    assert r.returncode == 1 and "line 2" in r.stderr, (r.returncode, r.stderr)
    assert open(out).read() == "previous\n", "output file was modified by a failed run"


def help_and_usage(bin_, tmp):
    r = run(bin_, "grade", "--help")
    assert r.returncode == 0, r.stderr
    for opt in ("--input", "--output", "--dataset", "--field", "gsm8k", "gpqa"):
        assert opt in r.stdout, f"grade --help lacks {opt}: {r.stdout}"
    r = run(bin_, "--help")
    assert r.returncode == 0 and "grade" in r.stdout, (r.returncode, r.stdout)
    r = run(bin_, "nosuchcommand")
    assert r.returncode == 2 and "unknown subcommand" in r.stderr, (r.returncode, r.stderr)


SMOLLM2_GGUF = os.path.join(os.environ.get("FKV_MODEL_DIR") or os.path.join(ROOT, "data", "models"),
                            "SmolLM2-135M-Instruct.Q4_1.gguf")
GEN_SAMPLE_FIELDS = ["problem_id", "problem_index", "sample_index", "seed", "stream", "dataset", "policy", "budget",
                     "window", "variant", "prompt_tokens", "response", "prompt_ids", "response_ids", "length",
                     "finish_reason", "extracted", "correct",
                     "strict_extracted", "strict_correct", "answer", "eviction_events", "peak_kv_bytes", "tokens_per_s",
                     "prefill_seconds", "decode_seconds", "eviction_seconds", "batch_first_sample", "batch_size",
                     "config_hash", "batch_first_problem"]
GEN_TIMING_FIELDS = ("tokens_per_s", "prefill_seconds", "decode_seconds", "eviction_seconds", "batch_first_sample",
                     "batch_size", "batch_first_problem")
GEN_SUMMARY_FIELDS = ["config", "model", "config_hash", "seed", "dataset", "dataset_file", "dataset_sha256", "n_problems",
                      "samples", "n_samples", "accuracy", "ci_low", "ci_high", "strict_accuracy", "mean_length",
                      "p90_length", "tokens_per_s", "peak_kv_bytes", "eviction_time_share", "finish_reasons",
                      "generated_now", "rows"]


def generate_args(out, *extra):
    return ["generate", "--model", "smollm2-135m-instruct", "--dataset", "gsm8k", "--limit", "2", "--samples", "2",
            "--max-new-tokens", "24", "--policy", "streamingllm", "--budget", "32", "--window", "8", "--seed", "3",
            "--temperature", "0.6", "--top-p", "0.95", "--top-k", "20", "--output", out, *extra]


def generate_ready():
    gsm = os.path.join(SHARED_EVAL, "gsm8k_test.jsonl")
    for path in (SMOLLM2_GGUF, gsm):
        if not os.path.exists(path):
            print(f"note: {path} missing; generate tests check nothing")
            return False
    return True


def strip_timing(rows):
    return {(r["problem_index"], r["sample_index"]): {k: v for k, v in r.items() if k not in GEN_TIMING_FIELDS}
            for r in rows}


def generate_smollm2_jsonl_summary_and_resume(bin_, tmp):
    if not generate_ready():
        return
    out = os.path.join(tmp, "gen.jsonl")
    r = run(bin_, *generate_args(out))
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    summary = json.loads(r.stdout)
    for k in GEN_SUMMARY_FIELDS:
        assert k in summary, f"summary lacks {k}: {sorted(summary)}"
    with open(os.path.join(tmp, "gen.summary.json"), encoding="utf-8") as f:
        assert json.load(f) == summary, "summary file differs from stdout"
    assert summary["n_problems"] == 2 and summary["samples"] == 2 and summary["n_samples"] == 4, summary
    assert summary["generated_now"] == 4, summary
    assert summary["seed"] == 3 and summary["dataset"] == "gsm8k"
    assert 0.0 <= summary["ci_low"] <= summary["accuracy"] <= summary["ci_high"] <= 1.0, summary
    assert summary["tokens_per_s"] > 0 and summary["peak_kv_bytes"] > 0, summary
    assert 0.0 <= summary["eviction_time_share"] < 1.0, summary
    assert 0 < summary["mean_length"] <= 24 and 0 < summary["p90_length"] <= 24, summary
    assert len(summary["model"]["sha256"]) == 64 and summary["model"]["path"].endswith(".gguf"), summary["model"]
    cfg = summary["config"]
    assert cfg["eviction"]["policy"] == "streamingllm" and cfg["eviction"]["budget"] == 32, cfg
    assert cfg["sampling"] == {"greedy": False, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0}, cfg
    assert summary["rows"] == [dict(summary["rows"][0], policy="streamingllm", budget=32, window=8,
                                    variant="intended", accuracy=summary["accuracy"])], summary["rows"]
    rows = read_jsonl(out)
    assert len(rows) == 4, f"{len(rows)} lines"
    assert sorted((x["problem_index"], x["sample_index"]) for x in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for x in rows:
        assert list(x.keys()) == GEN_SAMPLE_FIELDS, list(x.keys())
        assert x["stream"] == x["problem_index"] * 1000003 + x["sample_index"], x
        assert x["seed"] == 3 and x["policy"] == "streamingllm" and x["budget"] == 32 and x["window"] == 8
        assert isinstance(x["correct"], bool) and isinstance(x["strict_correct"], bool)
        assert isinstance(x["response"], str) and 0 < x["length"] <= 24
        assert x["finish_reason"] in ("eos", "length", "stop_string"), x["finish_reason"]
        assert x["prompt_tokens"] > 32 and x["eviction_events"] > 0, x  # the prompt alone exceeds the budget
        assert x["config_hash"] == summary["config_hash"]
        assert "####" in x["answer"]
    assert sum(x["correct"] for x in rows) / 4 == summary["accuracy"]
    # rerun: nothing to add, file untouched
    before = open(out, "rb").read()
    r = run(bin_, *generate_args(out))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["generated_now"] == 0
    assert open(out, "rb").read() == before, "a complete output was modified by a rerun"
    # a killed run (one line + half a line) resumes to the same samples
    killed = os.path.join(tmp, "killed.jsonl")
    first, second = before.split(b"\n")[0], before.split(b"\n")[1]
    with open(killed, "wb") as f:
        f.write(first + b"\n" + second[: len(second) // 2])
    r = run(bin_, *generate_args(killed))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["generated_now"] == 3
    assert strip_timing(read_jsonl(killed)) == strip_timing(rows), "resumed samples differ from the uninterrupted run"
    # another seed on the same output is refused
    args = generate_args(out)
    args[args.index("--seed") + 1] = "4"
    r = run(bin_, *args)
    assert r.returncode == 1 and r.stderr.startswith("fkv-eval generate: "), (r.returncode, r.stderr)
    assert "different config/model" in r.stderr, r.stderr
    assert open(out, "rb").read() == before


def generate_aten_backend(bin_, tmp):
    # --backend aten: the same run on the ATen forward; the backend joins the config hash (its samples are not
    # the native kernels' bit for bit), so an output of one backend is not resumed by the other
    if not generate_ready():
        return
    nat, ate = os.path.join(tmp, "nat.jsonl"), os.path.join(tmp, "aten.jsonl")
    r = run(bin_, *generate_args(nat, "--limit", "1", "--samples", "1"))
    assert r.returncode == 0, r.stderr
    r = run(bin_, *generate_args(ate, "--limit", "1", "--samples", "1", "--backend", "aten"))
    assert r.returncode == 0, r.stderr
    s_nat, s_aten = json.loads(open(nat[:-6] + ".summary.json").read()), json.loads(r.stdout)
    assert s_aten["model"]["backend"] == "aten" and s_nat["model"]["backend"] == "native", (s_aten["model"], s_nat["model"])
    assert s_aten["config_hash"] != s_nat["config_hash"]
    assert read_jsonl(ate)[0]["response_ids"], "empty response"
    r = run(bin_, *generate_args(nat, "--limit", "1", "--samples", "1", "--backend", "aten"))
    assert r.returncode != 0 and "different config" in r.stderr, r.stderr


def generate_eviction_log(bin_, tmp):
    # --eviction-log records every decision of each generated sample and changes nothing that is generated; the
    # log is checked against the length trigger's semantics: per (layer, KV head) the live set before an event is
    # every position up to "at" minus what earlier events dropped, "n" of them, and each event drops n - B.
    if not generate_ready():
        return
    plain, logged, log = (os.path.join(tmp, f) for f in ("plain.jsonl", "logged.jsonl", "evict.jsonl"))
    with open(log, "wb") as f:  # a torn line left by a killed run is cut, not extended
        f.write(b'{"problem_index": 9, "torn')
    r = run(bin_, *generate_args(plain, "--limit", "1"))
    assert r.returncode == 0, r.stderr
    r = run(bin_, *generate_args(logged, "--limit", "1", "--eviction-log", log))
    assert r.returncode == 0, r.stderr
    assert strip_timing(read_jsonl(plain)) == strip_timing(read_jsonl(logged)), "the log changed the samples"
    samples = {(x["problem_index"], x["sample_index"]): x for x in read_jsonl(logged)}
    entries = read_jsonl(log)
    assert sorted((e["problem_index"], e["sample_index"]) for e in entries) == sorted(samples), entries
    layers, heads, budget, window = 30, 3, 32, 8  # SmolLM2-135M: 30 layers, 3 KV heads
    for e in entries:
        x = samples[(e["problem_index"], e["sample_index"])]
        assert e["stream"] == x["stream"] and e["config_hash"] == x["config_hash"], e
        assert (e["policy"], e["budget"], e["window"], e["prompt_tokens"]) == ("streamingllm", budget, window,
                                                                               x["prompt_tokens"])
        assert len(e["events"]) == layers * x["eviction_events"], (len(e["events"]), x["eviction_events"])
        total = x["prompt_tokens"] + x["length"]
        dropped = {}
        for ev in e["events"]:
            assert len(ev["dropped"]) == heads
            assert ev["at"] < total and ev["n"] >= budget + window, ev
            for h, d in enumerate(ev["dropped"]):
                gone = dropped.setdefault((ev["layer"], h), set())
                live = set(range(ev["at"] + 1)) - gone
                assert len(live) == ev["n"], (ev["layer"], h, ev["event"], len(live), ev["n"])
                assert len(d) == ev["n"] - budget and len(set(d)) == len(d) and set(d) <= live, ev
                gone.update(d)
        # streamingllm keeps the 4 sinks and the newest entries: only positions between them were dropped
        assert all(4 <= p for g in dropped.values() for p in g)
    assert all(len(e["events"]) > 0 for e in entries)


def generate_config_and_usage_errors(bin_, tmp):
    r = run(bin_, "generate", "--help")
    assert r.returncode == 0, r.stderr
    for opt in ("--model", "--output", "--config", "--policy", "--budget", "--window", "--samples", "--seed",
                "--paired-with", "--summary", "--kv-dtype", "--batch", "--threads", "--greedy", "1000003"):
        assert opt in r.stdout, f"generate --help lacks {opt}"
    r = run(bin_, "--help")
    assert "generate" in r.stdout
    cfg = os.path.join(tmp, "bad.json")
    with open(cfg, "w") as f:
        json.dump({"dataset": "gsm8k", "sampels": 4}, f)
    r = run(bin_, "generate", "--model", "x.gguf", "--output", os.path.join(tmp, "o.jsonl"), "--config", cfg)
    assert r.returncode == 1 and "unknown key 'sampels'" in r.stderr, (r.returncode, r.stderr)
    for preset in sorted(os.listdir(os.path.join(ROOT, "configs", "eval"))):
        # every preset parses (the run then stops at the missing model)
        r = run(bin_, "generate", "--model", os.path.join(tmp, "missing.gguf"), "--output",
                os.path.join(tmp, "o.jsonl"), "--config", os.path.join(ROOT, "configs", "eval", preset))
        assert r.returncode == 1 and "missing.gguf" in r.stderr, (preset, r.stderr)
    r = run(bin_, "generate", "--model", "x.gguf")
    assert r.returncode == 1 and "--output" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(tmp, "o.jsonl"))


def main():
    return run_all([fields_and_order_are_kept, summary_line, empty_input_gives_empty_output,
                   blank_lines_and_crlf_are_tolerated, dataset_and_field_options, shared_gpqa_through_the_cli,
                   malformed_input_fails_cleanly, failed_run_keeps_previous_output, help_and_usage,
                    generate_smollm2_jsonl_summary_and_resume, generate_aten_backend, generate_eviction_log,
                    generate_config_and_usage_errors])


if __name__ == "__main__":
    sys.exit(main())
