#!/usr/bin/env python3
"""Per-block view of an `fkv-eval generate` grid, from its per-sample records (work files or the archive).

  python3 scripts/grid_blocks.py --block 20 data/results/qwen_gsm8k_sampled_{full,rkv_b128,...}.jsonl
  python3 scripts/grid_blocks.py --block 20 results/qwen_gsm8k_sampled/qwen_gsm8k_sampled_{full,...}

An argument is a JSONL file or an archive folder of scripts/results_archive.py (its *.jsonl.xz blocks).
Only the problems every run has complete (all samples) are counted, so the runs are compared on the same
samples. Runs of one policy and budget (two judges) are told apart by their file or folder names. Prints a
markdown table: one row per run with its correct samples in each block of --block problems
and in total, then the samples without an extracted answer, the strict (boxed-only) minus official correct
count, the samples that stopped at the length cap, and the mean eviction events per sample; --greedy FILE
adds a full-cache greedy run's correct count on the same problems (one sample each) below the table.
--stats adds a second table on the same samples: avg@k with a 95 % bootstrap CI over problems, the paired
difference to the FIRST run (bootstrap over problems, the same resamples for every run; seed 0, 2000
resamples), mean and p90 length, samples stopped at the length cap, mean peak KV MiB, and eviction seconds /
(prefill + decode seconds); --json OUT also writes those rows as {"rows": [{"policy", "budget", "accuracy",
"ci_low", "ci_high", "paired_diff", "paired_ci_low", "paired_ci_high", "n_problems", "samples", ...}]} (the
"generation" input of scripts/plot_results.py; the full-cache run has budget null).
"""
import argparse
import json
import lzma
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results_archive  # noqa: E402  (the sample-file reader the archive uses)


def load(path):
    if not os.path.exists(path):
        raise OSError(f"{path}: no such file or folder (a fkv-eval generate JSONL or a results_archive.py folder)")
    files = [path]
    if os.path.isdir(path):
        files = [f for _, _, _, f in results_archive.archived_blocks(path)]
    rows = {}
    for f in files:
        # a torn last line of a running or killed run is tolerated
        for key, line in results_archive.read_lines(f).items():
            rows[key] = json.loads(line)
    return rows


def run_series(path, rows):
    """A tagged run's own line in the plots ("foresightkv grpo": a second judge's run of a policy), else None."""
    j = next(iter(rows.values()), None)
    if j is None or j.get("policy", "full") == "full":
        return None
    tag = run_tag(path, j["policy"], j["budget"])
    return f'{j["policy"]} {tag}' if tag else None


def run_name(path, rows):
    j = next(iter(rows.values()), None)
    if j is None:
        return os.path.basename(path.rstrip("/"))
    if j.get("policy", "full") == "full":
        return "full"
    return f'{run_series(path, rows) or j["policy"]} B={j["budget"]}'  # e.g. "foresightkv grpo B=64"


def run_tag(path, policy, budget):
    """The FKV_GRID_TAG of a run file <prefix>_<policy>_<tag>_b<budget> (qwen_learned_grid.sh), or None."""
    base = os.path.basename(path.rstrip("/")).removesuffix(".jsonl")
    i, end = base.rfind(f"_{policy}_"), f"_b{budget}"
    if i < 0 or not base.endswith(end):
        return None
    tag = base[i + len(policy) + 2:len(base) - len(end)]
    return tag or None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--block", type=int, default=20)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--greedy", help="full-cache greedy records (one sample per problem)")
    ap.add_argument("--stats", action="store_true", help="also print accuracy / paired-difference CIs and costs")
    ap.add_argument("--json", help="with --stats: also write the stats rows to this JSON file (plot_results.py)")
    a = ap.parse_args(argv)
    try:
        data = [load(r) for r in a.runs]
        names = [run_name(r, rows) for r, rows in zip(a.runs, data)]
        # two runs of one policy and budget (e.g. two judges): name them by their files as well
        names = [f"{n} ({os.path.basename(r.rstrip('/')).removesuffix('.jsonl')})" if names.count(n) > 1 else n
                 for n, r in zip(names, a.runs)]
        greedy = load(a.greedy) if a.greedy else None
    except (OSError, ValueError, KeyError, lzma.LZMAError, results_archive.ArchiveError) as e:
        print(f"grid_blocks: {e}", file=sys.stderr)
        return 1
    common = None
    for rows in data:
        per = {}
        for (p, s) in rows:
            per.setdefault(p, set()).add(s)
        done = {p for p, ss in per.items() if ss == set(range(a.samples))}
        common = done if common is None else common & done
    problems = sorted(common or ())
    if not problems:
        print("grid_blocks: no problem is complete in every run", file=sys.stderr)
        return 1
    blocks = sorted({p // a.block for p in problems})
    head = ["run"] + [f"{b * a.block}-{b * a.block + a.block - 1}" for b in blocks] + [
        "total", "no answer", "strict - official", "length cap", "eviction events / sample"]
    print(f"problems: {len(problems)} ({problems[0]}-{problems[-1]}, every run complete), {a.samples} samples each")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, rows in zip(names, data):
        sel = [rows[(p, s)] for p in problems for s in range(a.samples)]
        per_block = [sum(bool(r["correct"]) for r in sel if r["problem_index"] // a.block == b) for b in blocks]
        n_blk = [sum(1 for r in sel if r["problem_index"] // a.block == b) for b in blocks]
        cells = [f"{c}/{n}" for c, n in zip(per_block, n_blk)]
        total = sum(per_block)
        no_ans = sum(1 for r in sel if r.get("extracted") in (None, ""))
        strict = sum(bool(r.get("strict_correct")) for r in sel) - total
        cap = sum(1 for r in sel if r.get("finish_reason") == "length")
        ev = sum(r.get("eviction_events", 0) for r in sel) / len(sel)
        print("| " + " | ".join([name] + cells + [f"{total}/{len(sel)}", str(no_ans), f"{strict:+d}", str(cap),
                                                  f"{ev:.1f}"]) + " |")
    if a.stats:
        print()
        rows = print_stats(names, data, problems, a.samples)
        for row, path, run_rows in zip(rows, a.runs, data):
            series = run_series(path, run_rows)
            if series:
                row["series"] = series
        if a.json:
            results_archive.write_atomic(a.json, (json.dumps({"kind": "generation", "rows": rows}, indent=1) + "\n")
                                         .encode())
    if greedy is not None:
        g = [greedy.get((p, 0)) for p in problems]
        missing = sum(1 for r in g if r is None)
        right = sum(1 for r in g if r is not None and r["correct"])
        print(f"\ngreedy (full cache): {right}/{len(problems) - missing} on the same problems"
              + (f" ({missing} not in the greedy file)" if missing else ""))
    return 0


def percentile(xs, q):
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ys = sorted(xs)
    return ys[min(len(ys) - 1, max(0, int(-(-q * len(ys) // 100)) - 1))]


def print_stats(names, data, problems, k, n_boot=2000):
    """avg@k and paired difference to the first run with 95 % bootstrap CIs over problems, lengths, KV, costs."""
    rng = random.Random(0)
    boots = [[rng.randrange(len(problems)) for _ in problems] for _ in range(n_boot)]
    per_run = [[sum(bool(rows[(p, s)]["correct"]) for s in range(k)) / k for p in problems] for rows in data]

    def ci(vals):
        means = sorted(sum(vals[i] for i in b) / len(b) for b in boots)
        return means[int(0.025 * n_boot)], means[int(0.975 * n_boot) - 1]

    head = ["run", f"avg@{k} (95 % CI)", "paired diff vs " + names[0] + " (95 % CI)", "mean len", "p90 len",
            "length cap", "peak KV MiB", "eviction share"]
    out = []
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, rows, acc in zip(names, data, per_run):
        sel = [rows[(p, s)] for p in problems for s in range(k)]
        lo, hi = ci(acc)
        diff = [x - y for x, y in zip(acc, per_run[0])]
        dlo, dhi = ci(diff)
        lens = [r.get("length", 0) for r in sel]
        kv = sum(r.get("peak_kv_bytes", 0) for r in sel) / len(sel) / 2**20
        busy = sum(r.get("prefill_seconds", 0) + r.get("decode_seconds", 0) for r in sel)
        share = sum(r.get("eviction_seconds", 0) for r in sel) / busy if busy > 0 else 0.0
        mean = sum(acc) / len(acc)
        cap = sum(1 for r in sel if r.get("finish_reason") == "length")
        print("| " + " | ".join([name, f"{mean:.3f} [{lo:.3f}, {hi:.3f}]",
                                 f"{sum(diff) / len(diff):+.3f} [{dlo:+.3f}, {dhi:+.3f}]",
                                 f"{sum(lens) / len(lens):.1f}", str(percentile(lens, 90)), str(cap), f"{kv:.2f}",
                                 f"{100 * share:.1f} %"]) + " |")
        first = sel[0]
        full = first.get("policy", "full") == "full"
        out.append({"run": name, "policy": first.get("policy", "full"), "budget": None if full else first.get("budget"),
                    "window": None if full else first.get("window"), "variant": first.get("variant"),
                    "accuracy": mean, "ci_low": lo, "ci_high": hi, "paired_against": names[0],
                    "paired_diff": sum(diff) / len(diff), "paired_ci_low": dlo, "paired_ci_high": dhi,
                    "mean_length": sum(lens) / len(lens), "p90_length": percentile(lens, 90), "length_capped": cap,
                    "peak_kv_mib": kv, "eviction_share": share, "n_problems": len(problems), "samples": k})
    return out


if __name__ == "__main__":
    sys.exit(main())
