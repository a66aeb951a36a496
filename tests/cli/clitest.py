"""Minimal runner shared by the CLI contract tests (tests/cli/test_*.py): each test is a function
f(bin, tmpdir) using plain asserts; `run_all` gives each its own temp directory, prints one line per
test and the closing "N passed, M failed" line, and returns the exit code. `run_script_tests` does the
same for the self-tests of scripts/ (f(tmpdir), no binary). Standard library only."""
import argparse
import os
import subprocess
import tempfile
import traceback


def run(bin_, *args, timeout=600):
    return subprocess.run([bin_, *args], capture_output=True, text=True, errors="replace", timeout=timeout)


def run_all(tests):
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for fn in tests:
            sub = os.path.join(tmp, fn.__name__)
            os.makedirs(sub)
            try:
                fn(a.bin, sub)
                results.append((fn.__name__, None))
            except AssertionError as e:
                results.append((fn.__name__, str(e) or "assertion failed"))
    failed = [(n, e) for n, e in results if e]
    for n, e in results:
        print(f"{'FAIL' if e else 'ok  '} {n}" + (f": {e}" if e else ""))
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def run_script_tests(name, tests):
    """For self-tests of scripts/ (no binary): each test is f(tmpdir); any exception fails it (with its
    traceback). Prints one line per test and "NAME: N/M passed"; returns the exit code."""
    ok = 0
    for fn in tests:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                fn(tmp)
                ok += 1
                print(f"ok   {fn.__name__}")
            except Exception:
                print(f"FAIL {fn.__name__}")
                traceback.print_exc()
    print(f"{name}: {ok}/{len(tests)} passed")
    return 0 if ok == len(tests) else 1


def cuda_available():
    """Whether this process sees a CUDA GPU (the --device cuda tests expect an error without one)."""
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch / no driver: no GPU for this process either
        return False
