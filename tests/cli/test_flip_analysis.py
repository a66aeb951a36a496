#!/usr/bin/env python3
"""Self-test for scripts/flip_analysis.py on hand-built records: one problem, two paired samples (one lost at a
changed question quantity, one token-identical), a vocabulary in a tiny GGUF, and an eviction log whose held
shares are computed by hand; a replay that drew another sample is left out; --lost-problems lists the problem.

Run: python3 tests/cli/test_flip_analysis.py   (needs the dev venv's `gguf`, as the script's --gguf does)
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import run_script_tests  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "flip_analysis.py")

# byte-level BPE strings: "Ġ" is a space, "Ċ" a newline
VOCAB = ["<|im_start|>", "user", "Ċ", "A", "Ġcosts", "Ġ", "8", "0", "<|im_end|>", "The", "Ġanswer", "Ġis", "6", "."]
T = {t: i for i, t in enumerate(VOCAB)}
PROMPT = [T[t] for t in ["<|im_start|>", "user", "Ċ", "A", "Ġcosts", "Ġ", "8", "0", "<|im_end|>"]]  # 9 tokens


def write_gguf(path):
    import gguf
    w = gguf.GGUFWriter(path, "llama")
    w.add_token_list(VOCAB)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def rec(s, policy, response_tokens, text, correct):
    return {"problem_index": 0, "sample_index": s, "stream": s, "policy": policy, "budget": None if policy == "full"
            else 4, "window": 2, "correct": correct, "extracted": text.split()[-1].rstrip("."), "answer": "#### 80",
            "prompt_ids": PROMPT, "prompt_tokens": len(PROMPT), "response": text, "config_hash": policy,
            "response_ids": [T[t] for t in response_tokens], "eviction_events": 1}


RIGHT = (["The", "Ġanswer", "Ġis", "Ġ", "8", "0", "."], "The answer is 80.")
WRONG = (["The", "Ġanswer", "Ġis", "Ġ", "6", "0", "."], "The answer is 60.")


def setup(tmp, replay_matches=True):
    full = [rec(0, "full", *RIGHT, True), rec(1, "full", *RIGHT, True)]
    pol = [rec(0, "h2o", *WRONG, False), rec(1, "h2o", *RIGHT, True)]
    paths = {n: os.path.join(tmp, n + ".jsonl") for n in ("full", "h2o", "replay")}
    for name, rows in (("full", full), ("h2o", pol)):
        with open(paths[name], "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
    replay = [dict(pol[0]) if replay_matches else dict(pol[0], response_ids=pol[1]["response_ids"])]
    with open(paths["replay"], "w") as f:
        f.write(json.dumps(replay[0]) + "\n")
    # one layer, 2 KV heads; the event at position 10 (< 12 = prompt 9 + divergence 4 - 1) drops the quantity's
    # "8" (6) in head 0 and its "0" (7) in head 1, and the template's "user" (1) in head 0; a later event (at 20)
    # would drop the question's "A" (3) but comes after the divergence
    log = {"problem_index": 0, "sample_index": 0, "stream": 0, "policy": "h2o", "budget": 4, "window": 2,
           "config_hash": "h2o", "prompt_tokens": 9,
           "events": [{"event": 0, "layer": 0, "at": 10, "n": 6, "dropped": [[6, 1], [7]]},
                      {"event": 1, "layer": 0, "at": 20, "n": 6, "dropped": [[3], [3]]}]}
    with open(os.path.join(tmp, "replay.evict.jsonl"), "w") as f:
        f.write(json.dumps(log) + "\n" + '{"problem_index": 0, "torn')  # a torn last line is ignored
    gg = os.path.join(tmp, "vocab.gguf")
    write_gguf(gg)
    return paths, gg


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def pairs_and_held_shares(tmp):
    paths, gg = setup(tmp)
    r = run(paths["full"], paths["h2o"], "--samples", "2", "--gguf", gg, "--eviction-log",
            os.path.join(tmp, "replay.evict.jsonl"), "--show", "1")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "- pairs: both right 1, lost 1, gained 0, both wrong 0; token-identical to full 1 (50 %)" in out, out
    assert "first divergence at response token median 4" in out, out
    assert "the diverging tokens carry a digit in 1 (100 %)" in out, out
    assert "a quantity of the question (the full answer quotes it) in 1 (100 %)" in out, out
    # held: question digits {6, 7}: 2 of 4 (layer, head, position) gone -> 50 %; other question tokens {3, 4, 5}:
    # none gone before the divergence -> 100 %; the quantity 80 = {6, 7} -> 50 %; template {0, 1, 2, 8}: 1 of 8 gone
    # -> 88 %; response so far {9..12}: 100 %
    want = ("lost pairs with a replayed log (1, at response token median 4): question digits 50 %, other question "
            "tokens 100 %, the first differing quantity's digits 50 %, template / instruction tokens 88 %, response "
            "so far 100 %")
    assert want in out, out
    assert "lost, at the first differing number pairs with a replayed log (1, at response token median 4)" in out, out
    assert "problem 0 sample 0 (answer 80: full 80, h2o B=4 60)" in out and "first differing number: #0 full 80 vs 60" \
        in out, out


def mismatched_replay_is_left_out(tmp):
    paths, gg = setup(tmp, replay_matches=False)
    r = run(paths["full"], paths["h2o"], "--samples", "2", "--gguf", gg, "--eviction-log",
            os.path.join(tmp, "replay.evict.jsonl"))
    assert r.returncode == 0, r.stderr
    assert "1 replayed sample(s) differ" in r.stdout and "held in the cache" not in r.stdout, r.stdout


def lost_problems_and_errors(tmp):
    paths, _ = setup(tmp)
    r = run(paths["full"], paths["h2o"], "--samples", "2", "--lost-problems")
    assert r.returncode == 0 and r.stdout == "0\n", (r.stdout, r.stderr)
    r = run(paths["full"], os.path.join(tmp, "missing.jsonl"))
    assert r.returncode == 1 and "missing.jsonl" in r.stderr, r.stderr
    r = run(paths["full"], paths["h2o"], "--samples", "3")
    assert r.returncode == 1 and "no problem is complete" in r.stderr, r.stderr


def main():
    return run_script_tests("test_flip_analysis", [pairs_and_held_shares, mismatched_replay_is_left_out,
                                                   lost_problems_and_errors])


if __name__ == "__main__":
    sys.exit(main())
