#!/usr/bin/env python3
"""Self-test for scripts/accuracy_table.py: two hand-written fkv-eval generate summaries (one full-cache, one
evicted with a paired block) give exactly the expected markdown rows; a missing file or a JSON without the
summary fields exits 1 naming the file and prints no table.

Run: python3 tests/cli/test_accuracy_table.py   Prints "test_accuracy_table: N/M passed"; exits non-zero on failure.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import run_script_tests  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "accuracy_table.py")


def summary(policy, budget, window, acc, paired=None):
    s = {"config": {"eviction": {"policy": policy, "budget": budget, "window": window}}, "n_problems": 300,
         "samples": 4, "accuracy": acc, "ci_low": acc - 0.05, "ci_high": acc + 0.05, "strict_accuracy": acc - 0.01,
         "mean_length": 281.25, "p90_length": 412.0, "finish_reasons": {"length": 3, "eos": 1197},
         "tokens_per_s": 31.04, "peak_kv_bytes": 3 * 2**20, "eviction_time_share": 0.0123}
    if paired:
        s["paired"] = paired
    return s


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def rows_are_exact(tmp):
    f = os.path.join(tmp, "full.summary.json")
    h = os.path.join(tmp, "h2o.summary.json")
    json.dump(summary("full", 1024, 256, 0.25), open(f, "w"))
    json.dump(summary("h2o", 64, 16, 0.125, {"diff": -0.125, "ci_low": -0.2, "ci_high": -0.05, "n_pairs": 1200}),
              open(h, "w"))
    r = run(f, h)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4, lines
    assert lines[2] == ("| full | — | — | 300 x 4 | 0.250 [0.200, 0.300] | 0.240 | — | 281.2 | 412 | eos 1197, length 3 "
                        "| 31.0 | 3.00 | 1.2 % |"), lines[2]
    assert lines[3] == ("| h2o | 64 | 16 | 300 x 4 | 0.125 [0.075, 0.175] | 0.115 | -0.125 [-0.200, -0.050] (1200 pairs) "
                        "| 281.2 | 412 | eos 1197, length 3 | 31.0 | 3.00 | 1.2 % |"), lines[3]
    # --no-speed drops the tok/s column from the header, the rule and every row
    r = run("--no-speed", f, h)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "tok/s" not in lines[0] and lines[0].count("|") == lines[1].count("|") == lines[3].count("|") == 13, lines
    assert lines[3] == ("| h2o | 64 | 16 | 300 x 4 | 0.125 [0.075, 0.175] | 0.115 | -0.125 [-0.200, -0.050] (1200 pairs) "
                        "| 281.2 | 412 | eos 1197, length 3 | 3.00 | 1.2 % |"), lines[3]


def bad_inputs_fail(tmp):
    good = os.path.join(tmp, "good.json")
    json.dump(summary("full", 0, 0, 0.5), open(good, "w"))
    bad = os.path.join(tmp, "bad.json")
    json.dump({"rows": []}, open(bad, "w"))
    for args, name in (([good, os.path.join(tmp, "missing.json")], "missing.json"), ([good, bad], "bad.json")):
        r = run(*args)
        assert r.returncode == 1, (args, r.returncode)
        assert name in r.stderr, r.stderr
        assert r.stdout == "", f"a table was printed despite the error: {r.stdout}"


def main():
    return run_script_tests("test_accuracy_table", [rows_are_exact, bad_inputs_fail])


if __name__ == "__main__":
    sys.exit(main())
