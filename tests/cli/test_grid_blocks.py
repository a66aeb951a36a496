#!/usr/bin/env python3
"""Self-test for scripts/grid_blocks.py: two hand-written runs (one as a JSONL work file with a torn last line,
one as a results_archive.py folder of .jsonl.xz blocks) give exactly the expected per-block rows over the
problems both runs have complete, the greedy line counts the same problems, and a run with nothing complete
exits 1.

Run: python3 tests/cli/test_grid_blocks.py   Prints "test_grid_blocks: N/M passed"; exits non-zero on failure.
"""
import json
import lzma
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import run_script_tests  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "grid_blocks.py")


def rec(p, s, correct, policy="full", budget=1024, extracted="5", strict=None, finish="eos", ev=0):
    return json.dumps({"problem_index": p, "sample_index": s, "policy": policy, "budget": budget, "correct": correct,
                       "strict_correct": correct if strict is None else strict, "extracted": extracted,
                       "finish_reason": finish, "eviction_events": ev})


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def rows_are_exact(tmp):
    # full: problems 0-4 complete (2 samples), problem 5 has one sample -> left out everywhere
    full = [rec(p, s, (p + s) % 2 == 0) for p in range(5) for s in range(2)] + [rec(5, 0, True)]
    with open(os.path.join(tmp, "full.jsonl"), "w") as f:
        f.write("\n".join(full) + "\n" + rec(5, 1, True)[:15])
    # h2o: problems 0-5 complete; correct only on problem 0; problem 1 sample 1 without an answer; problem 2
    # samples hit the cap; strict misses problem 0 sample 0; 3 eviction events each
    d = os.path.join(tmp, "arch", "h2o")
    os.makedirs(d)
    h = {(p, s): rec(p, s, p == 0, "h2o", 64, extracted="" if (p, s) == (1, 1) else "7",
                     strict=False if (p, s) == (0, 0) else None, finish="length" if p == 2 else "eos", ev=3)
         for p in range(6) for s in range(2)}
    for lo in (0, 2, 4):
        with lzma.open(os.path.join(d, f"p{lo:04d}-{lo + 1:04d}.jsonl.xz"), "wt") as f:
            f.write("".join(h[(p, s)] + "\n" for p in (lo, lo + 1) for s in range(2)))
    with open(os.path.join(tmp, "greedy.jsonl"), "w") as f:
        f.write("".join(rec(p, 0, p < 2) + "\n" for p in range(3)))
    r = run("--block", "2", "--samples", "2", "--greedy", os.path.join(tmp, "greedy.jsonl"),
            os.path.join(tmp, "full.jsonl"), d)
    assert r.returncode == 0, r.stderr
    want = [
        "problems: 5 (0-4, every run complete), 2 samples each",
        "| run | 0-1 | 2-3 | 4-5 | total | no answer | strict - official | length cap | eviction events / sample |",
        "|---|---|---|---|---|---|---|---|---|",
        "| full | 2/4 | 2/4 | 1/2 | 5/10 | 0 | +0 | 0 | 0.0 |",
        "| h2o B=64 | 2/4 | 0/4 | 0/2 | 2/10 | 1 | -1 | 2 | 3.0 |",
        "",
        "greedy (full cache): 2/3 on the same problems (2 not in the greedy file)",
    ]
    assert r.stdout.splitlines() == want, r.stdout
    # the same policy and budget twice (two judges): rows named by their files too
    with open(os.path.join(tmp, "h2o_other.jsonl"), "w") as f:
        f.write("".join(h[(p, s)] + "\n" for p in range(6) for s in range(2)))
    r = run("--block", "2", "--samples", "2", os.path.join(tmp, "full.jsonl"), d, os.path.join(tmp, "h2o_other.jsonl"))
    assert r.returncode == 0, r.stderr
    rows = [x.split(" | ")[0] for x in r.stdout.splitlines() if x.startswith("| ") and not x.startswith("| run")]
    assert rows == ["| full", "| h2o B=64 (h2o)", "| h2o B=64 (h2o_other)"], rows


def stats_are_exact(tmp):
    # 3 problems x 2 samples. full: per-problem accuracy 1, 0.5, 0; h2o: 0.5 everywhere; lengths 10..60
    # (p90 by nearest rank: 60), peak KV 2 MiB, eviction 1 s per 1 + 3 s of prefill + decode (a 25 % share)
    def r(p, s, ok, policy, budget, length):
        return json.dumps({"problem_index": p, "sample_index": s, "policy": policy, "budget": budget, "correct": ok,
                           "strict_correct": ok, "extracted": "1", "finish_reason": "eos", "eviction_events": 0,
                           "length": length, "peak_kv_bytes": 2 * 2**20, "prefill_seconds": 1.0,
                           "decode_seconds": 3.0, "eviction_seconds": 1.0 if policy != "full" else 0.0})
    full = [r(p, s, [[1, 1], [1, 0], [0, 0]][p][s] == 1, "full", 0, 10 * (2 * p + s + 1))
            for p in range(3) for s in range(2)]
    h2o = [r(p, s, s == 0, "h2o", 64, 10 * (2 * p + s + 1)) for p in range(3) for s in range(2)]
    for name, lines in (("full", full), ("h2o", h2o)):
        with open(os.path.join(tmp, name + ".jsonl"), "w") as f:
            f.write("\n".join(lines) + "\n")
    out = os.path.join(tmp, "stats.json")
    res = run("--samples", "2", "--stats", "--json", out, os.path.join(tmp, "full.jsonl"),
              os.path.join(tmp, "h2o.jsonl"))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    i = lines.index("| run | avg@2 (95 % CI) | paired diff vs full (95 % CI) | mean len | p90 len | length cap | "
                    "peak KV MiB | eviction share |")
    full_row = [c.strip() for c in lines[i + 2].strip("|").split("|")]
    h2o_row = [c.strip() for c in lines[i + 3].strip("|").split("|")]
    assert full_row[0] == "full" and full_row[1].startswith("0.500 [") and full_row[2] == "+0.000 [+0.000, +0.000]"
    assert full_row[3:] == ["35.0", "60", "0", "2.00", "0.0 %"], full_row
    assert h2o_row[0] == "h2o B=64" and h2o_row[1] == "0.500 [0.500, 0.500]", h2o_row  # constant per problem
    lo, hi = (float(x) for x in h2o_row[2].split("[")[1].rstrip("]").split(","))
    assert h2o_row[2].startswith("+0.000") and -0.5 <= lo < 0 < hi <= 0.5, h2o_row  # diffs -0.5, 0, +0.5
    assert h2o_row[7] == "25.0 %", h2o_row
    with open(out) as f:
        doc = json.load(f)
    assert [(x["policy"], x["budget"], x["accuracy"], x["paired_diff"], x["length_capped"]) for x in doc["rows"]] == [
        ("full", None, 0.5, 0.0, 0), ("h2o", 64, 0.5, 0.0, 0)], doc
    assert doc["rows"][1]["eviction_share"] == 0.25 and doc["rows"][1]["ci_low"] == 0.5, doc
    assert "series" not in doc["rows"][0] and "series" not in doc["rows"][1], doc
    # a run tagged as qwen_learned_grid.sh names it (<prefix>_<policy>_<tag>_b<B>): its own line in the plots
    tagged = os.path.join(tmp, "grid_h2o_judge2_b64.jsonl")
    with open(tagged, "w") as f:
        f.write("\n".join(h2o) + "\n")
    res = run("--samples", "2", "--stats", "--json", out, os.path.join(tmp, "full.jsonl"),
              os.path.join(tmp, "h2o.jsonl"), tagged)
    assert res.returncode == 0, res.stderr
    with open(out) as f:
        doc = json.load(f)
    assert [x.get("series") for x in doc["rows"]] == [None, None, "h2o judge2"], doc
    assert "| h2o judge2 B=64 | 0.500" in res.stdout, res.stdout  # the tag names the run in the tables too


def nothing_complete_is_error(tmp):
    with open(os.path.join(tmp, "a.jsonl"), "w") as f:
        f.write(rec(0, 0, True) + "\n")
    r = run("--samples", "2", os.path.join(tmp, "a.jsonl"))
    assert r.returncode == 1 and "no problem is complete" in r.stderr and r.stdout == "", r.stdout + r.stderr
    r = run(os.path.join(tmp, "missing.jsonl"))
    assert r.returncode == 1 and "missing.jsonl" in r.stderr, r.stderr


def main():
    return run_script_tests("test_grid_blocks", [rows_are_exact, stats_are_exact, nothing_complete_is_error])


if __name__ == "__main__":
    sys.exit(main())
