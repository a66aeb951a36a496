#!/usr/bin/env python3
"""Self-test for scripts/plot_results.py: writes synthetic fidelity, generation and retention summaries into a
temp directory, runs the script on them, and checks that exactly the expected PNGs appear and are complete PNG
files (signature, IHDR, IEND), that temp files are not left behind, and that bad inputs exit 2 with a message
naming the file and write nothing.

Run: .venv/bin/python tests/cli/test_plot_results.py   (needs matplotlib, listed in scripts/requirements.txt)
Prints one line per test and "test_plot_results: N/M passed"; exits non-zero on failure.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "plot_results.py")
PNG_SIG = b"\x89PNG\r\n\x1a\n"
BUDGETS = [64, 128, 256, 512, 1024]


def fidelity_doc():
    rows = [{"policy": "full", "budget": 0, "window": 32, "lm_loss_ratio": 1.0, "mean_delta_nll": 0.0, "kl": 0.0,
             "top1_agreement": 1.0}]
    for k, policy in enumerate(["h2o", "snapkv", "foresight"]):
        for variant in ("base", "quant"):
            for b in BUDGETS:
                d = (0.3 / (k + 1)) * 64 / b * (1.2 if variant == "quant" else 1.0)
                rows.append({"policy": policy, "variant": variant, "budget": b, "window": 32,
                             "lm_loss_ratio": 1 + d, "mean_delta_nll": d, "kl": d / 2, "top1_agreement": 1 - d / 3})
    return {"model": "synthetic", "rows": rows}


def generation_doc():
    rows = [{"policy": "full", "budget": None, "accuracy": 0.62, "ci_low": 0.55, "ci_high": 0.69}]
    for k, policy in enumerate(["h2o", "foresight"]):
        for b in BUDGETS:
            acc = 0.62 - (0.2 / (k + 1)) * 64 / b
            row = {"policy": policy, "budget": b, "accuracy": acc}
            if policy == "foresight":  # CIs on one policy only: the other is drawn without error bars
                row.update(ci_low=max(0.0, acc - 0.07), ci_high=min(1.0, acc + 0.07))
            rows.append(row)
    rows.append({"note": "an unrelated row is skipped with a warning"})
    return {"dataset": "gsm8k", "rows": rows}


def retention_doc(L=6, T=40):
    return {"kind": "retention", "layers": L, "positions": T, "title": "synthetic retention",
            "retained": [[round(((p * 7 + l * 3) % 11) / 10, 3) for p in range(T)] for l in range(L)]}


def write(tmp, name, doc):
    path = os.path.join(tmp, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def plot(*args):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=120)


def check_png(path):
    assert os.path.isfile(path), f"{path} not written"
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_SIG, f"{path}: not a PNG (starts {data[:8]!r})"
    length, ctype = struct.unpack(">I4s", data[8:16])
    assert ctype == b"IHDR" and length == 13, f"{path}: first chunk is {ctype!r}"
    w, h = struct.unpack(">II", data[16:24])
    assert 100 <= w <= 10000 and 100 <= h <= 10000, f"{path}: odd size {w}x{h}"
    assert data[-12:-4] == b"\x00\x00\x00\x00IEND", f"{path}: truncated (no IEND at the end)"
    return w, h


def ok_run(tmp, inputs, *extra, expect):
    out = os.path.join(tmp, "out", "fig")
    r = plot(*inputs, "--out", out, *extra)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    paths = [f"{out}_{k}.png" for k in expect]
    assert r.stdout.split() == paths, f"stdout should list {paths}, got {r.stdout!r}"
    for p in paths:
        check_png(p)
    listing = sorted(os.listdir(os.path.dirname(out)))
    assert listing == sorted(os.path.basename(p) for p in paths), f"unexpected files in out dir: {listing}"
    return r, paths


def fidelity_figure(tmp):
    ok_run(tmp, [write(tmp, "fid.json", fidelity_doc())], expect=["fidelity"])


def generation_figure(tmp):
    r, _ = ok_run(tmp, [write(tmp, "gen.json", generation_doc())], expect=["accuracy"])
    assert "skipped 1 unrecognised row" in r.stderr, f"skipped row not reported: {r.stderr!r}"


def retention_figure(tmp):
    ok_run(tmp, [write(tmp, "ret.json", retention_doc())], expect=["retention"])


def all_kinds_and_overwrite(tmp):
    inputs = [write(tmp, "fid.json", fidelity_doc()), write(tmp, "gen.json", generation_doc()),
              write(tmp, "ret.json", retention_doc()), write(tmp, "ret2.json", retention_doc(3, 17))]
    _, paths = ok_run(tmp, inputs, "--metrics", "lm_loss_ratio,mean_delta_nll,kl,top1_agreement",
                      expect=["fidelity", "accuracy", "budget", "retention"])
    # Second run over the existing files (same series in two files: labelled by source) replaces them in place.
    inputs.append(write(tmp, "fid_b.json", fidelity_doc()))
    ok_run(tmp, inputs, "--title", "again", expect=["fidelity", "accuracy", "budget", "retention"])


def training_logs(tmp):
    grpo = "\n".join(json.dumps({"step": k, "reward_mean": -1 + 0.01 * k, "reward_std": 0.2, "kl": 1e-4 * k})
                     for k in range(1, 21)) + "\n"
    sft = "\n".join([json.dumps({"step": k, "split": "train", "loss": 1 / k, "acc": 0.5 + 0.01 * k}) for k in range(1, 30)]
                    + [json.dumps({"step": 10, "split": "eval", "loss": 0.2, "acc": 0.6}),
                       json.dumps({"step": 20, "split": "rollout", "round": 1, "loss": 0.3, "acc": 0.55})]) + "\n"
    os.makedirs(os.path.join(tmp, "grpo_run"))
    os.makedirs(os.path.join(tmp, "sft_run"))
    ok_run(tmp, [write(tmp, "grpo_run/log.jsonl", grpo), write(tmp, "sft_run/log.jsonl", sft)], expect=["training"])
    r = plot(write(tmp, "torn.jsonl", grpo + '{"step": 21, "rew'), "--out", os.path.join(tmp, "x", "fig"))
    assert r.returncode == 2 and "torn.jsonl" in r.stderr and "JSONL" in r.stderr, (r.returncode, r.stderr)


def bad_inputs_fail(tmp):
    good = write(tmp, "good.json", fidelity_doc())
    out_dir = os.path.join(tmp, "out")
    cases = [
        (write(tmp, "norows.json", {"rows": [{"policy": "h2o", "budget": 64, "score": 3}]}), "no recognised rows"),
        (write(tmp, "empty.json", {"rows": []}), "no recognised rows"),
        (write(tmp, "nolist.json", {"results": []}), '"rows"'),
        (write(tmp, "broken.json", '{"rows": [1, 2'), "not valid JSON"),
        (write(tmp, "shape.json", dict(retention_doc(), layers=7)), "7 layer rows"),
        (write(tmp, "range.json", dict(retention_doc(2, 3), retained=[[0, 0.5, 1], [0, 1.5, 1]])), "[1][1]"),
        (os.path.join(tmp, "missing.json"), "cannot read"),
    ]
    for path, needle in cases:
        for inputs in ([path], [good, path]):  # a bad file among good ones also writes nothing
            r = plot(*inputs, "--out", os.path.join(out_dir, "fig"))
            assert r.returncode == 2, f"{os.path.basename(path)}: expected exit 2, got {r.returncode}: {r.stderr}"
            assert path in r.stderr and needle in r.stderr, f"{os.path.basename(path)}: unclear error {r.stderr!r}"
            assert "Traceback" not in r.stderr, r.stderr
            assert not os.path.exists(out_dir) or not os.listdir(out_dir), f"files written: {os.listdir(out_dir)}"
    r = plot(good, "--out", os.path.join(out_dir, "fig"), "--metrics", "perplexity")
    assert r.returncode == 2 and "perplexity" in r.stderr, (r.returncode, r.stderr)
    r = plot(good)  # --out is required
    assert r.returncode == 2 and "--out" in r.stderr, (r.returncode, r.stderr)


def series_lines(tmp):
    # one policy run with two judges ("series", as grid_blocks.py --json writes it) is two lines, not one
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import plot_results
    rows = [("a", {"policy": "foresightkv", "budget": 64, "accuracy": 0.1}),
            ("a", {"policy": "foresightkv", "budget": 128, "accuracy": 0.2}),
            ("a", {"policy": "foresightkv", "series": "foresightkv grpo", "budget": 64, "accuracy": 0.15})]
    series, refs, dims = plot_results.group_series(rows)
    got = {k[0]: sorted(r["budget"] for r in rs) for k, rs in series.items()}
    assert got == {"foresightkv": [64, 128], "foresightkv grpo": [64]}, got
    doc = generation_doc()
    doc["rows"].append({"policy": "foresight", "series": "foresight grpo", "budget": 64, "accuracy": 0.5})
    ok_run(tmp, [write(tmp, "gen.json", doc)], expect=["accuracy"])


TESTS = [series_lines, fidelity_figure, generation_figure, retention_figure, training_logs, all_kinds_and_overwrite, bad_inputs_fail]


def main():
    results = []
    with tempfile.TemporaryDirectory(prefix="test_plot_results-") as tmp:
        for fn in TESTS:
            sub = os.path.join(tmp, fn.__name__)
            os.makedirs(sub)
            try:
                fn(sub)
                results.append((fn.__name__, None))
            except AssertionError as e:
                results.append((fn.__name__, str(e) or "assertion failed"))
            except Exception:
                results.append((fn.__name__, traceback.format_exc().rstrip()))
    failed = [n for n, e in results if e]
    for n, e in results:
        print(f"{'FAIL' if e else 'ok  '} {n}" + (f": {e}" if e else ""))
    print(f"test_plot_results: {len(results) - len(failed)}/{len(results)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
