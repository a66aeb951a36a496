#!/usr/bin/env python3
"""Markdown table of `fkv-eval generate` summaries (one row per *.summary.json, in the order given).

  python3 scripts/accuracy_table.py data/results/qwen_gsm8k_sampled_full.summary.json \
      data/results/qwen_gsm8k_sampled_h2o_b64.summary.json ...

Columns: policy, B, L, problems x samples, avg@k with its bootstrap 95 % CI, strict (boxed-only) accuracy,
paired difference to the run given by --paired-with (with CI and pair count), mean / p90 length,
finish reasons, decode tokens/s (left out with --no-speed, for runs that shared the CPU or were paused), peak
live KV MiB, eviction share of generation time. Only reads the summaries; a summary without a "paired" block
gets "—" there.
"""
import argparse
import json
import sys


def row(s, speed=True):
    c = s["config"]
    ev = c.get("eviction", {})
    pol = ev.get("policy", "full")
    full = pol == "full"
    b = "—" if full else str(ev.get("budget"))
    w = "—" if full else str(ev.get("window"))
    acc = f'{s["accuracy"]:.3f} [{s["ci_low"]:.3f}, {s["ci_high"]:.3f}]'
    p = s.get("paired")
    paired = "—" if not p else f'{p["diff"]:+.3f} [{p["ci_low"]:+.3f}, {p["ci_high"]:+.3f}] ({p["n_pairs"]} pairs)'
    fr = ", ".join(f"{k} {v}" for k, v in sorted(s.get("finish_reasons", {}).items()))
    return (f'| {pol} | {b} | {w} | {s["n_problems"]} x {s["samples"]} | {acc} | {s["strict_accuracy"]:.3f} | {paired} '
            f'| {s["mean_length"]:.1f} | {s["p90_length"]:.0f} | {fr} |'
            + (f' {s["tokens_per_s"]:.1f} |' if speed else "")
            + f' {s["peak_kv_bytes"] / 2**20:.2f} | {100 * s["eviction_time_share"]:.1f} % |')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summaries", nargs="+")
    ap.add_argument("--no-speed", action="store_true", help="leave out the tokens/s column")
    a = ap.parse_args(argv)
    rows = []
    for f in a.summaries:  # every file is read before anything is printed
        try:
            rows.append(row(json.load(open(f)), speed=not a.no_speed))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"accuracy_table: {f}: not an fkv-eval generate summary ({e!r})", file=sys.stderr)
            return 1
    cols = ["policy", "B", "L", "problems x k", "avg@k (95 % CI)", "strict", "paired diff vs full (95 % CI)",
            "mean len", "p90 len", "finish"] + (["tok/s"] if not a.no_speed else []) + ["peak KV MiB", "eviction share"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    print("\n".join(rows))
    return 0

if __name__ == "__main__":
    sys.exit(main())
