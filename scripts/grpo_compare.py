#!/usr/bin/env python3
"""Paired comparison of two judges' held-out GRPO rewards (scripts/grpo_heldout.sh logs).

Both logs come from `fkv-train grpo --lr 0` over the same traces with one trace per step and the same seed, so
step k of A and step k of B are the same trace, rolled out from the same random streams: the per-step reward
means pair. Prints, for each log and for B - A: the mean reward, the mean low-entropy NLL increase, and the
paired difference with a 95 % bootstrap CI over traces (seeded), plus how many traces improved.

  python3 scripts/grpo_compare.py A/log.jsonl B/log.jsonl [--names A B] [--json OUT]
"""
import argparse
import json
import random
import sys


def read_log(path):
    rows = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                j = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON ({e}); expected a fkv-train grpo log.jsonl")
            for k in ("step", "reward_mean", "mean_delta_nll_low", "lr"):
                if k not in j:
                    sys.exit(f"{path}:{n}: no '{k}'; expected a fkv-train grpo log.jsonl")
            rows[j["step"]] = j
    if not rows:
        sys.exit(f"{path}: empty log")
    return rows


def bootstrap_ci(d, reps=10000, seed=0):
    rng = random.Random(seed)
    n = len(d)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--names", nargs=2, default=["A", "B"])
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    A, B = read_log(args.a), read_log(args.b)
    for name, L in ((args.names[0], A), (args.names[1], B)):
        if any(r["lr"] != 0 for r in L.values()):
            print(f"warning: {name}'s log has lr != 0 steps: its judge changed during the evaluation", file=sys.stderr)
    steps = sorted(set(A) & set(B))
    if len(steps) < 2:
        sys.exit(f"the logs share {len(steps)} step(s); need >= 2 (same traces, same seed, one trace per step)")
    out = {"traces": len(steps)}
    for key, label in (("reward_mean", "reward"), ("mean_delta_nll_low", "low-entropy dNLL")):
        a = [A[k][key] for k in steps]
        b = [B[k][key] for k in steps]
        d = [y - x for x, y in zip(a, b)]
        lo, hi = bootstrap_ci(d)
        m = sum(d) / len(d)
        out[key] = {args.names[0]: sum(a) / len(a), args.names[1]: sum(b) / len(b), "diff": m, "ci95": [lo, hi],
                    "b_better": sum(1 for x in d if (x > 0 if key == "reward_mean" else x < 0)),
                    "b_worse": sum(1 for x in d if (x < 0 if key == "reward_mean" else x > 0))}
        print(f"{label:18s} {args.names[0]} {sum(a) / len(a):+.4f}  {args.names[1]} {sum(b) / len(b):+.4f}  "
              f"diff {m:+.4f} [{lo:+.4f}, {hi:+.4f}]  {args.names[1]} better on {out[key]['b_better']} / "
              f"worse on {out[key]['b_worse']} of {len(steps)} traces")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        import os
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
