#!/usr/bin/env python3
"""Keep the per-sample records of long `fkv-eval generate` grids in the repository, block by block.

A sampled accuracy grid on a 2-core CPU takes many hours; its working files live in data/results/
(git-ignored, lost with the checkout). This script copies every *finished* block of problems of each run
into an immutable, xz-compressed file under an archive directory (tracked by git), and restores them
into the working files, so a later checkout resumes the grid where the last archived block ended and the
numbers in docs/results.md can be recomputed from committed records.

  results_archive.py save    --work data/results --archive results/qwen_gsm8k_sampled --block 20 --samples 4 \
                             [--partial] RUN [RUN ...]
  results_archive.py restore --work data/results --archive results/qwen_gsm8k_sampled RUN [RUN ...]
  results_archive.py check   --archive results/qwen_gsm8k_sampled --block 20 --samples 4 RUN [RUN ...]

RUN is a file stem such as qwen_gsm8k_sampled_full (work file RUN.jsonl, archive folder RUN/). A block
file RUN/p0000-0019.jsonl.xz holds the lines of problems 0-19, every sample, byte-for-byte as
fkv-eval wrote them, ordered by (problem_index, sample_index). `save` writes a block only when all of
its block * samples records exist; a block that is already archived must hold the same records, timing
and batching fields aside (a difference means the run is not deterministic or its configuration changed,
and is an error). With
--partial the unfinished trailing block is also saved, as RUN/pAAAA-BBBB.partial.jsonl.xz (replaced
on the next save; removed once the block is complete). `restore` appends the archived lines missing
from the work file (records are keyed by problem_index, sample_index; the work file's own lines are kept
and must agree with the archive). Files are written atomically.
"""
import argparse
import json
import lzma
import os
import re
import sys
import tempfile

BLOCK_RE = re.compile(r"^p(\d{4,})-(\d{4,})(\.partial)?\.jsonl\.xz$")


class ArchiveError(Exception):
    pass


def read_lines(path):
    """Complete JSON lines of a sample file, keyed by (problem_index, sample_index)."""
    rows = {}
    if not os.path.exists(path):
        return rows
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        raw = f.read().split("\n")
    for i, line in enumerate(raw):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            j = json.loads(line)
        except json.JSONDecodeError:
            if i >= len(raw) - 2 and not path.endswith(".xz"):  # a torn last line of a killed run: fkv-eval drops it
                continue
            raise ArchiveError(f"{path} line {i + 1}: not JSON")
        if not isinstance(j, dict) or not isinstance(j.get("problem_index"), int) or not isinstance(
                j.get("sample_index"), int):
            raise ArchiveError(f"{path} line {i + 1}: not a fkv-eval generate sample (needs problem_index, sample_index)")
        key = (j["problem_index"], j["sample_index"])
        if key in rows and rows[key] != line:
            raise ArchiveError(f"{path}: two different records for problem {key[0]} sample {key[1]}")
        rows[key] = line
    return rows


# fields that depend on the machine's speed or on how samples were batched, not on the sample itself
VOLATILE = ("tokens_per_s", "prefill_seconds", "decode_seconds", "eviction_seconds", "batch_first_sample",
            "batch_first_problem", "batch_size")


def content(line):
    j = json.loads(line)
    for k in VOLATILE:
        j.pop(k, None)
    return j


def write_atomic(path, data: bytes):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp_")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the archive private to its writer
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def block_name(lo, hi, partial):
    return f"p{lo:04d}-{hi:04d}{'.partial' if partial else ''}.jsonl.xz"


def archived_blocks(folder):
    out = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            m = BLOCK_RE.match(name)
            if m:
                out.append((int(m.group(1)), int(m.group(2)), bool(m.group(3)), os.path.join(folder, name)))
    return out


def encode(rows, keys):
    text = "".join(rows[k] + "\n" for k in sorted(keys))
    # preset 9: a 64 MiB dictionary sees the prompt ids repeated by every sample of a problem
    return lzma.compress(text.encode("utf-8"), preset=9)


def save(args, run):
    work = os.path.join(args.work, run + ".jsonl")
    folder = os.path.join(args.archive, run)
    rows = read_lines(work)
    by_problem = {}
    for (p, s) in rows:
        if s < 0 or s >= args.samples:
            raise ArchiveError(f"{work}: sample_index {s} outside 0..{args.samples - 1} (--samples {args.samples})")
        by_problem.setdefault(p, set()).add(s)
    written = kept = 0
    if not rows:
        return written, kept
    last_block = max(by_problem) // args.block
    for b in range(last_block + 1):
        lo, hi = b * args.block, b * args.block + args.block - 1
        keys = [(p, s) for p in range(lo, hi + 1) for s in sorted(by_problem.get(p, ()))]
        complete = len(keys) == args.block * args.samples
        path = os.path.join(folder, block_name(lo, hi, False))
        partial_path = os.path.join(folder, block_name(lo, hi, True))
        if complete:
            if os.path.exists(path):
                old = read_lines(path)
                diff = sorted(k for k in set(old) | set(keys)
                              if k not in old or k not in rows or content(old[k]) != content(rows[k]))
                if diff:
                    raise ArchiveError(f"{path} differs from {work} in {len(diff)} records (first: problem "
                                       f"{diff[0][0]} sample {diff[0][1]}; timing and batching fields aside): "
                                       f"the run changed configuration or is not deterministic")
                kept += 1
            else:
                write_atomic(path, encode(rows, keys))
                written += 1
            if os.path.exists(partial_path):
                os.unlink(partial_path)
        elif args.partial and keys:
            if os.path.exists(path):
                raise ArchiveError(f"{path} is archived complete but {work} lacks some of its records; "
                                   f"run `restore` first")
            write_atomic(partial_path, encode(rows, keys))
            written += 1
    return written, kept


def restore(args, run):
    work = os.path.join(args.work, run + ".jsonl")
    folder = os.path.join(args.archive, run)
    have = read_lines(work)
    add = {}
    for lo, hi, partial, path in archived_blocks(folder):
        for k, line in read_lines(path).items():
            if not (lo <= k[0] <= hi):
                raise ArchiveError(f"{path}: record for problem {k[0]} outside the block's {lo}-{hi}")
            if k in have:
                if have[k] != line:
                    raise ArchiveError(f"{work} and {path} disagree on problem {k[0]} sample {k[1]}; "
                                       f"move the work file away to restore the archive")
            else:
                add[k] = line
    if add:
        # keep the work file's lines as they are (a torn last line is dropped), then the archive's
        text = "".join(have[k] + "\n" for k in sorted(have)) + "".join(add[k] + "\n" for k in sorted(add))
        write_atomic(work, text.encode("utf-8"))
    return len(add)


def check(args, run):
    folder = os.path.join(args.archive, run)
    n = 0
    for lo, hi, partial, path in archived_blocks(folder):
        rows = read_lines(path)
        if not partial and len(rows) != (hi - lo + 1) * args.samples:
            raise ArchiveError(f"{path}: {len(rows)} records, a complete block has {(hi - lo + 1) * args.samples}")
        if (hi - lo + 1) != args.block:
            raise ArchiveError(f"{path}: block of {hi - lo + 1} problems, --block {args.block}")
        n += len(rows)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["save", "restore", "check"])
    ap.add_argument("runs", nargs="+", metavar="RUN")
    ap.add_argument("--work", default="data/results")
    ap.add_argument("--archive", required=True)
    ap.add_argument("--block", type=int, default=20)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--partial", action="store_true")
    args = ap.parse_args()
    if args.block < 1 or args.samples < 1:
        ap.error("--block and --samples must be >= 1")
    try:
        for run in args.runs:
            if args.command == "save":
                w, k = save(args, run)
                print(f"{run}: {w} block file(s) written, {k} already archived (identical)")
            elif args.command == "restore":
                print(f"{run}: {restore(args, run)} record(s) restored")
            else:
                print(f"{run}: {check(args, run)} archived record(s)")
    except (ArchiveError, OSError, lzma.LZMAError) as e:
        print(f"results_archive: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
