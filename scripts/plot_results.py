#!/usr/bin/env python3
"""Plot ForesightKV result summaries (JSON) as PNG figures.

  plot_results.py INPUT.json [INPUT2.json ...] --out PREFIX [--metrics M[,M...]] [--title T] [--dpi N]

Input kinds, detected per file:
  fidelity    {"rows": [{"policy", "budget", "window", "lm_loss_ratio", "mean_delta_nll", "kl",
                         "top1_agreement", ["variant"]}, ...]}
              -> PREFIX_fidelity.png: one line per policy, x = budget (log2), y = LM-loss ratio
                 (--metrics picks other/more row fields, one panel each).
  generation  {"rows": [{"policy", "budget", "accuracy", ["ci_low", "ci_high", "variant", "series"]}, ...]}
              -> PREFIX_accuracy.png: one line per policy, x = budget (log2), y = accuracy with CI error bars.
              A row's optional "series" (either kind; e.g. "foresightkv grpo", grid_blocks.py --json) names its
              line instead of its policy: one policy run with two judges draws two lines.
  retention   {"kind": "retention", "layers": L, "positions": T, "retained": [[L x T fractions]], ["title"]}
              -> PREFIX_retention.png: heat map, layer on y, position on x (one panel per file).
  training    a training log (JSONL, one object per line with "step"): fkv-train grpo (reward_mean, reward_std,
              kl, clip_frac) or fkv-train sft (split train/eval/rollout: loss, acc)
              -> PREFIX_training.png: grpo: reward mean +- std and KL per step; sft: loss and ranking accuracy
                 (train, held-out eval, on-policy rollout lines); one series per file.
  budget      with both fidelity and generation inputs, also PREFIX_budget.png: accuracy (with CIs) and the
              first --metrics field side by side, one colour per policy in both panels (issue 27's figure).
A row with policy "full", or with budget 0 / null / absent, is the uncompressed reference and is drawn as a
horizontal line. Series are split by variant (and by window or source file where those differ).
Rows of a recognised file that fit neither kind are skipped with a warning.

Writes only the figures for the kinds present, each atomically (temp file + os.replace), and prints their
paths. Exit codes: 0 ok; 2 bad usage or an input that cannot be read or holds no recognised rows (nothing is
written then).
"""
import argparse
import json
import math
import os
import sys
import tempfile

FIDELITY_KEYS = ("policy", "lm_loss_ratio")
GENERATION_KEYS = ("policy", "accuracy")
METRIC_LABELS = {"lm_loss_ratio": "LM-loss ratio (policy / full)", "mean_delta_nll": "mean ΔNLL (nats/token)",
                 "kl": "KL(full ‖ policy) (nats/token)", "top1_agreement": "top-1 agreement"}


class InputError(Exception):
    pass


def num(v):
    """A finite float, or None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def is_reference(row):
    b = row.get("budget")
    return str(row.get("policy", "")).lower() == "full" or b is None or (num(b) is not None and num(b) <= 0)


def row_kind(row):
    if not isinstance(row, dict):
        return None
    if all(k in row for k in FIDELITY_KEYS) and ("budget" in row or is_reference(row)):
        return "fidelity"
    if all(k in row for k in GENERATION_KEYS) and ("budget" in row or is_reference(row)):
        return "generation"
    return None


def load_jsonl_log(text):
    """A training log: every non-empty line a JSON object with a numeric "step"; None when it is not one."""
    lines = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            j = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(j, dict) or num(j.get("step")) is None:
            return None
        lines.append(j)
    return lines or None


def load_input(path):
    """-> (kind_or_'rows', payload). payload: retention dict, training lines, or {'fidelity': rows, 'generation': rows}."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}")
    except UnicodeDecodeError as e:
        raise InputError(f"not valid JSON: {e}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        log = load_jsonl_log(text)
        if log is None:
            raise InputError(f"not valid JSON (nor a JSONL training log): {e}")
        return "training", log
    if isinstance(doc, dict) and "step" in doc:
        return "training", [doc]
    if isinstance(doc, dict) and doc.get("kind") == "retention":
        return "retention", check_retention(doc)
    rows = doc.get("rows") if isinstance(doc, dict) else doc if isinstance(doc, list) else None
    if not isinstance(rows, list):
        raise InputError('expected an object with a "rows" list (fidelity or generation summary) '
                         'or {"kind": "retention", ...}')
    out = {"fidelity": [], "generation": []}
    skipped = 0
    for i, row in enumerate(rows):
        k = row_kind(row)
        if k is None:
            skipped += 1
            continue
        out[k].append(row)
    if not out["fidelity"] and not out["generation"]:
        raise InputError(f"no recognised rows among {len(rows)} (fidelity rows need {'/'.join(FIDELITY_KEYS)}/budget, "
                         f"generation rows need {'/'.join(GENERATION_KEYS)}/budget)")
    if skipped:
        print(f"plot_results: {path}: skipped {skipped} unrecognised row(s)", file=sys.stderr)
    return "rows", out


def check_retention(doc):
    L, T, grid = doc.get("layers"), doc.get("positions"), doc.get("retained")
    if not (isinstance(L, int) and L > 0 and isinstance(T, int) and T > 0):
        raise InputError('retention: "layers" and "positions" must be positive integers')
    if not isinstance(grid, list) or len(grid) != L:
        raise InputError(f'retention: "retained" must be a list of {L} layer rows')
    vals = []
    for li, r in enumerate(grid):
        if not isinstance(r, list) or len(r) != T:
            raise InputError(f'retention: "retained"[{li}] must hold {T} positions')
        row = []
        for pi, v in enumerate(r):
            x = num(v)
            if x is None or not -1e-9 <= x <= 1 + 1e-9:
                raise InputError(f'retention: "retained"[{li}][{pi}] = {v!r} is not a fraction in [0, 1]')
            row.append(x)
        vals.append(row)
    return {"layers": L, "positions": T, "retained": vals, "title": doc.get("title")}


def series_label(key, dims):
    policy, variant, window, source = key
    parts = [str(policy)]
    if "variant" in dims and variant is not None:
        parts.append(str(variant))
    if "window" in dims and window is not None:
        parts.append(f"w={window}")
    if "source" in dims:
        parts.append(f"[{source}]")
    return " ".join(parts)


def series_of(row):
    """A row's line: its "series" (e.g. "foresightkv grpo": the policy with another judge) or its policy."""
    return row.get("series") or row.get("policy")


def group_series(rows):
    """rows: list of (source, row). -> (series {key: [rows]}, refs {key: [rows]}, dims that distinguish series)."""
    keyed = [((series_of(r), r.get("variant"), r.get("window"), src), r) for src, r in rows]
    dims = set()
    for i, name in ((1, "variant"), (2, "window")):
        if len({k[i] for k, r in keyed if not is_reference(r)}) > 1:
            dims.add(name)
    # The source file only matters when the same series appears in more than one file.
    per = {}
    for k, r in keyed:
        per.setdefault((k[0], k[1] if "variant" in dims else None, k[2] if "window" in dims else None), set()).add(k[3])
    if any(len(s) > 1 for s in per.values()):
        dims.add("source")
    series, refs = {}, {}
    for (p, v, w, s), r in keyed:
        key = (p, v if "variant" in dims else None, w if "window" in dims else None, s if "source" in dims else None)
        (refs if is_reference(r) else series).setdefault(key, []).append(r)
    return series, refs, dims


def budget_axis(ax, budgets):
    ax.set_xscale("log", base=2)
    if budgets:
        ticks = sorted(set(budgets))
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{b:g}" for b in ticks])
        ax.minorticks_off()
    ax.set_xlabel("KV budget (tokens, log2)")
    ax.grid(True, which="major", alpha=0.3)


def draw_lines(ax, rows, ycol, with_ci=False, color_of=None):
    """color_of: {policy: colour} to keep a policy's colour across panels (default: cycle in series order)."""
    import matplotlib.pyplot as plt
    series, refs, dims = group_series(rows)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    all_budgets = []
    for i, (key, rs) in enumerate(sorted(series.items(), key=lambda kv: tuple(str(x) for x in kv[0]))):
        pts = sorted((num(r["budget"]), num(r.get(ycol)), r) for r in rs if num(r.get(ycol)) is not None)
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        all_budgets += xs
        c = color_of[key[0]] if color_of and key[0] in color_of else colors[i % len(colors)]
        label = series_label(key, dims)
        if with_ci and any(num(p[2].get("ci_low")) is not None or num(p[2].get("ci_high")) is not None for p in pts):
            lo = [max(0.0, y - num(p[2].get("ci_low"))) if num(p[2].get("ci_low")) is not None else 0.0
                  for y, p in zip(ys, pts)]
            hi = [max(0.0, num(p[2].get("ci_high")) - y) if num(p[2].get("ci_high")) is not None else 0.0
                  for y, p in zip(ys, pts)]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=4, capsize=3, color=c, label=label)
        else:
            ax.plot(xs, ys, marker="o", ms=4, color=c, label=label)
    styles = ["--", ":", "-."]
    for j, (key, rs) in enumerate(sorted(refs.items(), key=lambda kv: tuple(str(x) for x in kv[0]))):
        vals = [num(r.get(ycol)) for r in rs if num(r.get(ycol)) is not None]
        if not vals:
            continue
        y = sum(vals) / len(vals)
        label = series_label(key, dims) + " (reference)"
        ax.axhline(y, color="black", ls=styles[j % len(styles)], lw=1.2, label=label)
        if with_ci and len(rs) == 1 and num(rs[0].get("ci_low")) is not None and num(rs[0].get("ci_high")) is not None:
            ax.axhspan(num(rs[0]["ci_low"]), num(rs[0]["ci_high"]), color="gray", alpha=0.15, lw=0)
    budget_axis(ax, all_budgets)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def fig_fidelity(rows, metrics, title):
    import matplotlib.pyplot as plt
    n = len(metrics)
    cols = 1 if n == 1 else 2
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.4 * cols, 4.4 * nrows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        draw_lines(ax, rows, m)
        ax.set_ylabel(METRIC_LABELS.get(m, m))
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title or "Fidelity vs KV budget")
    fig.tight_layout()
    return fig


def fig_accuracy(rows, title):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    draw_lines(ax, rows, "accuracy", with_ci=True)
    ax.set_ylabel("accuracy")
    if not accuracy_ylim(ax, rows):
        print("plot_results: accuracy values outside [0, 1] (expected fractions); y axis left automatic",
              file=sys.stderr)
    ax.set_title(title or "Accuracy vs KV budget")
    fig.tight_layout()
    return fig


def accuracy_ylim(ax, rows):
    accs = [num(r.get(k)) for _, r in rows for k in ("accuracy", "ci_high") if num(r.get(k)) is not None]
    if accs and 0 <= min(accs) and max(accs) <= 1:
        ax.set_ylim(-0.02, 1.02 if max(accs) > 0.5 else max(accs) * 1.15 + 0.01)
        return True
    return False


def fig_budget(generation, fidelity, metric, title):
    import matplotlib.pyplot as plt
    policies = sorted({series_of(r) for _, r in generation + fidelity if not is_reference(r)}, key=str)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {p: palette[i % len(palette)] for i, p in enumerate(policies)}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12.8, 4.6))
    draw_lines(a1, generation, "accuracy", with_ci=True, color_of=color_of)
    a1.set_ylabel("accuracy")
    accuracy_ylim(a1, generation)
    a1.set_title("task accuracy")
    draw_lines(a2, fidelity, metric, color_of=color_of)
    a2.set_ylabel(METRIC_LABELS.get(metric, metric))
    if metric == "lm_loss_ratio":
        from matplotlib.ticker import NullFormatter, ScalarFormatter
        a2.set_yscale("log")
        vals = [num(r.get(metric)) for _, r in fidelity if num(r.get(metric)) is not None]
        a2.set_yticks([t for t in (1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32) if min(vals) * 0.9 <= t <= max(vals) * 1.1])
        a2.yaxis.set_major_formatter(ScalarFormatter())
        a2.yaxis.set_minor_formatter(NullFormatter())
    a2.set_title("trace fidelity")
    fig.suptitle(title or "Accuracy and fidelity vs KV budget")
    fig.tight_layout()
    return fig


def fig_retention(items, title):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(items), 1, figsize=(8, 3.2 * len(items) + 0.6), squeeze=False)
    for ax, (src, d) in zip(axes.flat, items):
        im = ax.imshow(d["retained"], aspect="auto", origin="lower", interpolation="nearest", vmin=0, vmax=1,
                       cmap="viridis", extent=(-0.5, d["positions"] - 0.5, -0.5, d["layers"] - 0.5))
        ax.set_xlabel("position")
        ax.set_ylabel("layer")
        ax.set_title(d.get("title") or src)
        fig.colorbar(im, ax=ax, label="fraction retained")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def fig_training(items, title):
    import matplotlib.pyplot as plt
    grpo = [(src, log) for src, log in items if any("reward_mean" in x for x in log)]
    sft = [(src, log) for src, log in items if not any("reward_mean" in x for x in log)]
    panels = (2 if grpo else 0) + (2 if sft else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    axes = list(axes[0])
    if grpo:
        ax_r, ax_k = axes.pop(0), axes.pop(0)
        for src, log in grpo:
            rows = [x for x in log if num(x.get("reward_mean")) is not None]
            st = [x["step"] for x in rows]
            m = [x["reward_mean"] for x in rows]
            sd = [num(x.get("reward_std")) or 0.0 for x in rows]
            line, = ax_r.plot(st, m, marker=".", label=src)
            ax_r.fill_between(st, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                              color=line.get_color(), alpha=0.15)
            ax_k.plot(st, [num(x.get("kl")) or 0.0 for x in rows], marker=".", label=f"{src} KL")
        ax_r.set_xlabel("RL step")
        ax_r.set_ylabel("reward (mean ± std over rollouts)")
        ax_r.legend(fontsize=7)
        ax_k.set_xlabel("RL step")
        ax_k.set_ylabel("k3 KL to the SFT judge")
        ax_k.legend(fontsize=7)
    if sft:
        ax_l, ax_a = axes.pop(0), axes.pop(0)
        for src, log in sft:
            for split, style in (("train", "-"), ("eval", "o-"), ("rollout", "s")):
                rows = [x for x in log if x.get("split", "train") == split and num(x.get("loss")) is not None]
                if not rows:
                    continue
                st = [x["step"] for x in rows]
                ax_l.plot(st, [x["loss"] for x in rows], style, markersize=3, label=f"{src} {split}")
                ax_a.plot(st, [num(x.get("acc")) or 0.0 for x in rows], style, markersize=3, label=f"{src} {split}")
        ax_l.set_xlabel("step")
        ax_l.set_ylabel("pairwise hinge loss")
        ax_l.set_yscale("log")
        ax_l.legend(fontsize=7)
        ax_a.set_xlabel("step")
        ax_a.set_ylabel("ranking accuracy |top-W ∩ oracle| / W")
        ax_a.legend(fontsize=7)
    fig.suptitle(title or "fkv-train")
    fig.tight_layout()
    return fig


def save_atomic(fig, path, dpi):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(prog="plot_results.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", metavar="INPUT.json")
    ap.add_argument("--out", required=True, metavar="PREFIX", help="write PREFIX_fidelity.png, PREFIX_accuracy.png, "
                    "PREFIX_retention.png (those whose kinds are present)")
    ap.add_argument("--metrics", default="lm_loss_ratio",
                    help="comma-separated fidelity row fields, one panel each (default: lm_loss_ratio)")
    ap.add_argument("--title", default=None, help="figure title (default: per kind)")
    ap.add_argument("--dpi", type=int, default=150)
    a = ap.parse_args(argv)
    metrics = [m.strip() for m in a.metrics.split(",") if m.strip()]
    if not metrics:
        ap.error("--metrics is empty")

    fidelity, generation, retention, training = [], [], [], []
    errors = []
    for path in a.inputs:
        src = os.path.splitext(os.path.basename(path))[0]
        try:
            kind, payload = load_input(path)
        except InputError as e:
            errors.append(f"plot_results: {path}: {e}")
            continue
        if kind == "retention":
            retention.append((src, payload))
        elif kind == "training":
            training.append((os.path.basename(os.path.dirname(os.path.abspath(path))) or src, payload))
        else:
            fidelity += [(src, r) for r in payload["fidelity"]]
            generation += [(src, r) for r in payload["generation"]]
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    if fidelity:
        missing = [m for m in metrics if not any(num(r.get(m)) is not None for _, r in fidelity)]
        if missing:
            print(f"plot_results: no fidelity row has a numeric {', '.join(missing)}", file=sys.stderr)
            return 2

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(out_dir, exist_ok=True)
    figs = []
    if fidelity:
        figs.append(("fidelity", fig_fidelity(fidelity, metrics, a.title)))
    if generation:
        figs.append(("accuracy", fig_accuracy(generation, a.title)))
    if fidelity and generation:
        figs.append(("budget", fig_budget(generation, fidelity, metrics[0], a.title)))
    if retention:
        figs.append(("retention", fig_retention(retention, a.title)))
    if training:
        figs.append(("training", fig_training(training, a.title)))
    for name, fig in figs:
        path = f"{a.out}_{name}.png"
        save_atomic(fig, path, a.dpi)
        plt.close(fig)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
