#!/usr/bin/env python3
"""Merge fkv-eval fidelity summaries computed on the same traces (e.g. policies split across processes) into
one summary, and print the rows as a Markdown table. Refuses inputs from different models, traces or windows."""
import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    docs = [json.load(open(p)) for p in a.inputs]
    base = docs[0]
    for p, d in zip(a.inputs, docs):
        for k in ("model", "tokens", "window", "variant"):
            if d.get(k) != base.get(k) or d["traces"]["count"] != base["traces"]["count"]:
                sys.exit(f"merge_fidelity: {p} differs from {a.inputs[0]} in {k!r} or trace count")
    out = dict(base)
    out["rows"] = [r for d in docs for r in d["rows"]]
    out["merged_from"] = a.inputs
    out["full_seconds"] = max(d["full_seconds"] for d in docs)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, a.out)
    print(f"traces {base['traces']['count']}, response tokens {base['tokens']}, L = {base['window']}, "
          f"variant {base['variant']}")
    print("| policy | B | LM-loss ratio | mean ΔNLL | KL(full‖evicted) | top-1 agree | low-entropy loss incr. | high-entropy loss incr. |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(out["rows"], key=lambda r: (r["budget"], r["lm_loss_ratio"])):
        print(f"| {r['policy']} | {r['budget']} | {r['lm_loss_ratio']:.4f} | {r['mean_delta_nll']:.4f} | {r['kl']:.4f} | "
              f"{r['top1_agreement']:.4f} | {100 * r['low_entropy_loss_increase']:+.1f} % | "
              f"{100 * r['high_entropy_loss_increase']:+.1f} % |")


if __name__ == "__main__":
    main()
