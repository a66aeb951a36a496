#!/usr/bin/env python3
"""Self-test for scripts/results_archive.py on hand-written sample files: only complete blocks are archived
(byte-for-byte lines, sorted), --partial keeps the trailing block and is replaced once it completes, a rerun
is a no-op, a record that changed (other than timing/batching fields) is an error, restore rebuilds a deleted
work file exactly and adds only missing records to an existing one, a disagreeing work file and a torn last
line are handled, and no file is left half-written.

Run: python3 tests/cli/test_results_archive.py   Prints "test_results_archive: N/M passed"; exits non-zero on failure.
"""
import json
import lzma
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import run_script_tests  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "results_archive.py")


def rec(p, s, correct=True, tps=30.0):
    return json.dumps({"problem_index": p, "sample_index": s, "config_hash": "abc", "response": f"answer {p}.{s} é",
                       "correct": correct, "tokens_per_s": tps, "batch_size": 16})


def run(tmp, *args):
    return subprocess.run([sys.executable, SCRIPT, *args, "--work", os.path.join(tmp, "work"), "--archive",
                           os.path.join(tmp, "arch"), "--block", "2", "--samples", "2"], capture_output=True, text=True)


def write_work(tmp, lines, run_name="r"):
    os.makedirs(os.path.join(tmp, "work"), exist_ok=True)
    with open(os.path.join(tmp, "work", run_name + ".jsonl"), "w", encoding="utf-8") as f:
        f.write("".join(l + "\n" for l in lines))


def arch_files(tmp, run_name="r"):
    d = os.path.join(tmp, "arch", run_name)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def arch_text(tmp, name, run_name="r"):
    with lzma.open(os.path.join(tmp, "arch", run_name, name), "rt", encoding="utf-8") as f:
        return f.read()


def complete_blocks_only(tmp):
    # problems 0-1 complete (4 records, written out of order), problem 2 has one of two samples
    lines = [rec(1, 0), rec(0, 1), rec(2, 0), rec(0, 0), rec(1, 1)]
    write_work(tmp, lines)
    r = run(tmp, "save", "r")
    assert r.returncode == 0, r.stderr
    assert arch_files(tmp) == ["p0000-0001.jsonl.xz"], arch_files(tmp)
    assert arch_text(tmp, "p0000-0001.jsonl.xz") == "".join(
        l + "\n" for l in [rec(0, 0), rec(0, 1), rec(1, 0), rec(1, 1)])
    r = run(tmp, "save", "r")  # rerun: identical, nothing written
    assert r.returncode == 0 and "0 block file(s) written, 1 already archived" in r.stdout, r.stdout + r.stderr


def partial_then_complete(tmp):
    write_work(tmp, [rec(p, s) for p in range(2) for s in range(2)] + [rec(2, 0)])
    assert run(tmp, "save", "r", "--partial").returncode == 0
    assert arch_files(tmp) == ["p0000-0001.jsonl.xz", "p0002-0003.partial.jsonl.xz"], arch_files(tmp)
    write_work(tmp, [rec(p, s) for p in range(4) for s in range(2)])
    assert run(tmp, "save", "r", "--partial").returncode == 0
    assert arch_files(tmp) == ["p0000-0001.jsonl.xz", "p0002-0003.jsonl.xz"], arch_files(tmp)


def changed_record_is_error(tmp):
    write_work(tmp, [rec(p, s) for p in range(2) for s in range(2)])
    assert run(tmp, "save", "r").returncode == 0
    before = arch_text(tmp, "p0000-0001.jsonl.xz")
    # timing and batching fields may differ (a regenerated block on another machine) ...
    write_work(tmp, [rec(p, s, tps=99.0) for p in range(2) for s in range(2)])
    r = run(tmp, "save", "r")
    assert r.returncode == 0, r.stderr
    # ... the sample itself may not
    write_work(tmp, [rec(p, s, correct=(p, s) != (1, 0)) for p in range(2) for s in range(2)])
    r = run(tmp, "save", "r")
    assert r.returncode == 1 and "problem 1 sample 0" in r.stderr and "not deterministic" in r.stderr, r.stderr
    assert arch_text(tmp, "p0000-0001.jsonl.xz") == before


def restore_rebuilds_and_merges(tmp):
    full = [rec(p, s) for p in range(4) for s in range(2)]
    write_work(tmp, full)
    assert run(tmp, "save", "r").returncode == 0
    os.unlink(os.path.join(tmp, "work", "r.jsonl"))
    r = run(tmp, "restore", "r")
    assert r.returncode == 0 and "8 record(s) restored" in r.stdout, r.stdout + r.stderr
    assert open(os.path.join(tmp, "work", "r.jsonl"), encoding="utf-8").read() == "".join(l + "\n" for l in full)
    # a work file with newer records past the archive and a torn last line: keep its records, add the archive's
    with open(os.path.join(tmp, "work", "r.jsonl"), "w", encoding="utf-8") as f:
        f.write(rec(4, 0) + "\n" + rec(0, 0) + "\n" + rec(4, 1)[:20])
    r = run(tmp, "restore", "r")
    assert r.returncode == 0 and "7 record(s) restored" in r.stdout, r.stdout + r.stderr
    got = open(os.path.join(tmp, "work", "r.jsonl"), encoding="utf-8").read().splitlines()
    assert sorted(got) == sorted(full + [rec(4, 0)]), got
    assert run(tmp, "restore", "r").stdout.strip() == "r: 0 record(s) restored"
    # a work file that disagrees with the archive is left alone
    write_work(tmp, [rec(0, 0, correct=False)])
    r = run(tmp, "restore", "r")
    assert r.returncode == 1 and "disagree on problem 0 sample 0" in r.stderr, r.stderr
    assert open(os.path.join(tmp, "work", "r.jsonl")).read() == rec(0, 0, correct=False) + "\n"


def bad_input(tmp):
    write_work(tmp, [rec(0, 0), "not json", rec(0, 1)])
    r = run(tmp, "save", "r")
    assert r.returncode == 1 and "line 2: not JSON" in r.stderr, r.stderr
    write_work(tmp, [rec(0, 5)])
    r = run(tmp, "save", "r")
    assert r.returncode == 1 and "sample_index 5 outside 0..1" in r.stderr, r.stderr
    write_work(tmp, ['{"problem_index": 0}'])
    r = run(tmp, "save", "r")
    assert r.returncode == 1 and "needs problem_index, sample_index" in r.stderr, r.stderr
    assert arch_files(tmp) == []
    leftovers = [n for _, _, fs in os.walk(tmp) for n in fs if n.startswith(".tmp_")]
    assert leftovers == [], leftovers


def main():
    return run_script_tests("test_results_archive", [complete_blocks_only, partial_then_complete, changed_record_is_error, restore_rebuilds_and_merges,
             bad_input])


if __name__ == "__main__":
    sys.exit(main())
