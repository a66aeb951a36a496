#!/usr/bin/env python3
"""Self-test for scripts/grpo_compare.py on hand-built lr-0 GRPO logs: per-trace paired differences, their mean,
the better/worse counts (reward: higher is better; low-entropy dNLL: lower is better), the --json output, and
clear errors for a log that is not a GRPO log or that shares too few steps.

Run: python3 tests/cli/test_grpo_compare.py
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import run_script_tests  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "grpo_compare.py")


def write_log(path, rewards, deltas, lr=0.0):
    with open(path, "w") as f:
        for k, (r, d) in enumerate(zip(rewards, deltas), 1):
            f.write(json.dumps({"step": k, "reward_mean": r, "mean_delta_nll_low": d, "lr": lr}) + "\n")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def paired_numbers(tmp):
    a, b, out = (os.path.join(tmp, n) for n in ("a.jsonl", "b.jsonl", "out.json"))
    write_log(a, [-0.4, -0.2, -0.1, -0.3], [0.30, 0.10, 0.05, 0.20])
    write_log(b, [-0.3, -0.25, -0.1, -0.1], [0.20, 0.12, 0.05, 0.10])
    p = run(a, b, "--names", "sft", "grpo", "--json", out)
    assert p.returncode == 0, p.stderr
    j = json.load(open(out))
    assert j["traces"] == 4
    r = j["reward_mean"]
    assert abs(r["sft"] - (-0.25)) < 1e-12 and abs(r["grpo"] - (-0.1875)) < 1e-12, r
    assert abs(r["diff"] - 0.0625) < 1e-12, r  # (0.1 - 0.05 + 0 + 0.2) / 4
    assert r["b_better"] == 2 and r["b_worse"] == 1, r
    lo, hi = r["ci95"]
    assert -0.05 - 1e-12 <= lo <= 0.0625 <= hi <= 0.2 + 1e-12, r  # inside the range of the paired differences
    d = j["mean_delta_nll_low"]
    assert abs(d["diff"] - (-0.045)) < 1e-12, d  # (-0.1 + 0.02 + 0 - 0.1) / 4
    assert d["b_better"] == 2 and d["b_worse"] == 1, d
    assert "grpo better on 2 / worse on 1 of 4" in p.stdout, p.stdout


def bad_inputs(tmp):
    a, b, c = (os.path.join(tmp, n) for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    write_log(a, [-0.4, -0.2], [0.3, 0.1])
    with open(b, "w") as f:
        f.write('{"step": 1, "reward": -0.1}\n')
    p = run(a, b)
    assert p.returncode != 0 and "no 'reward_mean'" in p.stderr, p.stderr
    write_log(c, [-0.4], [0.3], lr=1e-3)
    p = run(a, c)
    assert p.returncode != 0 and "need >= 2" in p.stderr, p.stderr
    assert "lr != 0" in p.stderr, p.stderr


if __name__ == "__main__":
    sys.exit(run_script_tests("grpo_compare", [paired_numbers, bad_inputs]))
