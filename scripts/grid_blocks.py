#!/usr/bin/env python3
"""Per-block view of an `fkv-eval generate` grid, from its per-sample records (work files or the archive).

  python3 scripts/grid_blocks.py --block 20 data/results/qwen_gsm8k_sampled_{full,rkv_b128,...}.jsonl
  python3 scripts/grid_blocks.py --block 20 results/qwen_gsm8k_sampled/qwen_gsm8k_sampled_{full,...}

An argument is a JSONL file or an archive folder of scripts/results_archive.py (its *.jsonl.xz blocks).
Only the problems every run has complete (all samples) are counted, so the runs are compared on the same
samples. Prints a markdown table: one row per run with its correct samples in each block of --block problems
and in total, then the samples without an extracted answer, the strict (boxed-only) minus official correct
count, the samples that stopped at the length cap, and the mean eviction events per sample; --greedy FILE
adds a full-cache greedy run's correct count on the same problems (one sample each) below the table.
"""
import argparse
import json
import lzma
import os
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


def run_name(path, rows):
    j = next(iter(rows.values()), None)
    if j is None:
        return os.path.basename(path.rstrip("/"))
    return "full" if j.get("policy", "full") == "full" else f'{j["policy"]} B={j["budget"]}'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--block", type=int, default=20)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--greedy", help="full-cache greedy records (one sample per problem)")
    a = ap.parse_args(argv)
    try:
        data = [load(r) for r in a.runs]
        names = [run_name(r, rows) for r, rows in zip(a.runs, data)]
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
    if greedy is not None:
        g = [greedy.get((p, 0)) for p in problems]
        missing = sum(1 for r in g if r is None)
        right = sum(1 for r in g if r is not None and r["correct"])
        print(f"\ngreedy (full cache): {right}/{len(problems) - missing} on the same problems"
              + (f" ({missing} not in the greedy file)" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
