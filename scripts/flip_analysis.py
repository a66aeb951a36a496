#!/usr/bin/env python3
"""Where an eviction policy's samples go wrong, from paired `fkv-eval generate` records (issue 27's "show why").

  python3 scripts/flip_analysis.py results/qwen_gsm8k_sampled/qwen_gsm8k_sampled_full \
      results/qwen_gsm8k_sampled/qwen_gsm8k_sampled_{foresightkv_b128,rkv_b128} [--gguf MODEL.gguf] [--show 5]

The first argument is the full-cache run, the others policies run with the same seed, so sample j of
problem i draws from the same sampler stream in every run: a policy's sample is token-identical to its full
partner until the evicted cache first changes a sampled token. For every pair, on the problems every run has
complete, the script finds that first divergence and reports per policy:
  - the pair classes: both right / lost (full right, policy wrong) / gained / both wrong / token-identical;
  - for the lost pairs: where the divergence sits (response token index, fraction of the full answer, before
    or after the first eviction could happen, i.e. before prompt + response reached B entries), and whether
    the two diverging tokens carry digits (a number changed) or not (wording changed);
  - the problems that lost >= 2 of their k samples against full, and, with --show N, N lost pairs with the
    text around the divergence (tokens decoded with the model's own vocabulary from --gguf).
An argument is a JSONL file or a results_archive.py folder, as for grid_blocks.py.

What the policy had evicted needs its decisions: replay the policy on the problems (`fkv-eval generate ...
--offset P --limit 1 --eviction-log X.evict.jsonl`: a problem replayed alone draws the grid's samples, same
config hash, unless its batch rounds differently; scripts/qwen_flip_replay.sh) and pass the logs with
--eviction-log (the replay's samples X.jsonl next to each: a log is used only where its replayed sample equals
the analysed one token for token). For every logged pair that diverges, two caches are read over all (layer,
KV head): the one the diverging token was sampled from, and the one the policy's first differing number was
written from (every event taken before the forward of the token before it); each gives the share still held
of the question's digit tokens, of its other tokens, of the first differing quantity's digits (when the full
answer's number there is a quantity of the question), of the template / instruction tokens and of the
response so far; lost pairs against the both-right pairs as control. --lost-problems prints, per run, the
problems with a lost pair (the replay's input) and exits.
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grid_blocks import load, run_name  # noqa: E402


def byte_decoder():
    # inverse of GPT-2's bytes_to_unicode (byte-level BPE; engineering.md "byte-level BPE")
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class Vocab:
    def __init__(self, gguf_path):
        self.tokens = None
        if gguf_path:
            from gguf import GGUFReader  # dev-only oracle package (.venv)

            f = GGUFReader(gguf_path).fields["tokenizer.ggml.tokens"]
            self.tokens = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            self.dec = byte_decoder()

    def text(self, ids):
        if self.tokens is None:
            return " ".join(f"<{i}>" for i in ids)
        out = bytearray()
        for i in ids:
            out += bytes(self.dec.get(ch, ord("?")) for ch in self.tokens[i]) if i < len(self.tokens) else b"?"
        return out.decode("utf-8", errors="replace")


def first_divergence(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return None if len(a) == len(b) else n


NUM = re.compile(r"\d+(?:\.\d+)?")


def numbers(text):
    return [m.group(0).rstrip("0").rstrip(".") if "." in m.group(0) else m.group(0)
            for m in NUM.finditer(text.replace(",", ""))]


def first_number_error(f, q):
    """(index, full's number, policy's number) of the first number where the two answers' number sequences differ."""
    a, b = numbers(f["response"]), numbers(q["response"])
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            return i, a[i], b[i]
    return (min(len(a), len(b)), None, None) if len(a) != len(b) else None


def gold(rec):
    return str(rec.get("answer", "")).split("####")[-1].strip()


def question_span(vocab, prompt_ids):
    """Positions of the user turn's text in a chat-template prompt (after the last '<|im_start|>user' line,
    before its '<|im_end|>'), or the whole prompt when it has no such turn."""
    toks = [vocab.text([i]) for i in prompt_ids]
    start, end = 0, len(toks)
    for i in range(len(toks) - 1):
        if toks[i] == "<|im_start|>" and toks[i + 1].startswith("user"):
            start = i + 2
    while start < len(toks) and toks[start].strip() == "":  # the newline after the role
        start += 1
    for i in range(start, len(toks)):
        if toks[i] == "<|im_end|>":
            end = i
            break
    return toks, start, end


def number_positions(toks, start, end, number):
    """Prompt positions of the first occurrence of `number`'s digits as consecutive digit tokens in [start, end)."""
    digits = [i for i in range(start, end) if re.fullmatch(r"\d+", toks[i].strip())]
    runs, cur = [], []
    for i in digits:
        if cur and i != cur[-1] + 1:
            runs.append(cur)
            cur = []
        cur.append(i)
    if cur:
        runs.append(cur)
    for r in runs:
        if "".join(toks[i].strip() for i in r) == number:
            return r
    return []


def dropped_before(log, at_before):
    """({(layer, KV head): positions dropped by the events with at < at_before}, number of (layer, KV head) caches)."""
    gone = {}
    for ev in log["events"]:
        if ev["at"] < at_before:
            for h, d in enumerate(ev["dropped"]):
                gone.setdefault((ev["layer"], h), set()).update(d)
    caches = len({(ev["layer"], h) for ev in log["events"] for h in range(len(ev["dropped"]))})
    return gone, caches


def held_share(gone, caches, positions):
    """Share of (layer, KV head, position) still in the cache, given dropped_before's result."""
    if not positions:
        return None
    if caches == 0:
        return 1.0
    pos = set(positions)
    lost = sum(len(pos & g) for g in gone.values())
    return 1.0 - lost / (caches * len(pos))


VIEW = ("question digits", "other question tokens", "the first differing quantity's digits",
        "template / instruction tokens", "response so far")


def number_token(vocab, q, index):
    """Response token index where the policy answer's `index`-th number starts (None if it has no such number)."""
    found = [m.start() for m in re.finditer(r"\d[\d,]*(?:\.\d+)?", q["response"])]
    if index >= len(found):
        return None
    ids, target = q["response_ids"], found[index]
    for t in range(len(ids)):
        if len(vocab.text(ids[: t + 1])) > target:
            return t
    return None


def cache_view(vocab, f, q, d, log):
    """Held shares (VIEW order; None where a set is empty) in the cache response token d was sampled from."""
    toks, a, b = question_span(vocab, q["prompt_ids"])
    dig = [i for i in range(a, b) if re.search(r"\d", toks[i])]
    other = [i for i in range(a, b) if i not in set(dig)]
    at_before = q["prompt_tokens"] + d - 1  # the diverging token came from the forward of the token before it
    e = first_number_error(f, q)
    qty = number_positions(toks, a, b, e[1]) if e is not None and e[1] is not None else []
    template = [i for i in range(len(toks)) if i < a or i >= b]
    resp = list(range(q["prompt_tokens"], at_before + 1))
    gone, caches = dropped_before(log, at_before)
    return tuple(held_share(gone, caches, s) for s in (dig, other, qty, template, resp))


def mean(xs):
    xs = [x for x in xs if x is not None]
    return (sum(xs) / len(xs), len(xs)) if xs else (float("nan"), 0)


def pct(x, n):
    return f"{x} ({100.0 * x / n:.0f} %)" if n else "0"


def analyse(name, full, pol, problems, k, vocab, show, logs):
    cls = {"both right": 0, "lost": 0, "gained": 0, "both wrong": 0}
    identical = 0
    lost = []
    per_problem = {}
    for p in problems:
        for j in range(k):
            f, q = full[(p, j)], pol[(p, j)]
            if f["stream"] != q["stream"]:
                raise ValueError(f"problem {p} sample {j}: streams differ ({f['stream']} vs {q['stream']}): not paired")
            d = first_divergence(f["response_ids"], q["response_ids"])
            identical += d is None
            key = ("both right" if f["correct"] and q["correct"] else "lost" if f["correct"] else
                   "gained" if q["correct"] else "both wrong")
            cls[key] += 1
            per_problem[p] = per_problem.get(p, 0) + (key == "lost") - (key == "gained")
            if key == "lost":
                lost.append((p, j, d, f, q))
    n = sum(cls.values())
    print(f"## {name}: {len(problems)} problems x {k} samples paired with full")
    print(f"- pairs: both right {cls['both right']}, lost {cls['lost']}, gained {cls['gained']}, both wrong "
          f"{cls['both wrong']}; token-identical to full {pct(identical, n)}")
    if not lost:
        return
    B = lost[0][4].get("budget") or 0
    before = sum(1 for _, _, d, f, _ in lost if d is not None and f["prompt_tokens"] + d < B)
    frac = sorted(d / max(1, len(f["response_ids"])) for _, _, d, f, _ in lost if d is not None)
    idx = sorted(d for _, _, d, _, _ in lost if d is not None)
    digit = 0
    for _, _, d, f, q in lost:
        if d is None:
            continue
        a = vocab.text(f["response_ids"][d:d + 1]) if vocab.tokens else ""
        b = vocab.text(q["response_ids"][d:d + 1]) if vocab.tokens else ""
        digit += bool(re.search(r"\d", a + b))
    q = lambda xs, t: xs[min(len(xs) - 1, int(t * len(xs)))]  # noqa: E731
    print(f"- lost pairs ({len(lost)}): first divergence at response token median {q(idx, 0.5)} "
          f"(p10 {q(idx, 0.1)}, p90 {q(idx, 0.9)}), at {100 * q(frac, 0.5):.0f} % of the full answer (median; "
          f"p10 {100 * q(frac, 0.1):.0f} %, p90 {100 * q(frac, 0.9):.0f} %); before the cache first reached B: "
          f"{pct(before, len(lost))}")
    if vocab.tokens:
        print(f"- the diverging tokens carry a digit in {pct(digit, len(lost))} of the lost pairs")
    kinds = {"question quantity": 0, "derived": 0, "none": 0}
    for _, _, _, f, q in lost:
        e = first_number_error(f, q)
        if e is None or e[1] is None:
            kinds["none"] += 1
            continue
        qnums = set(numbers(vocab.text(f["prompt_ids"]))) if vocab.tokens else set()
        kinds["question quantity" if e[1] in qnums else "derived"] += 1
    if vocab.tokens:
        print(f"- first number that differs from the full answer's number sequence: a quantity of the question "
              f"(the full answer quotes it) in {pct(kinds['question quantity'], len(lost))}, a derived number in "
              f"{pct(kinds['derived'], len(lost))}, no differing number (only the count differs) in "
              f"{pct(kinds['none'], len(lost))}")
    worst = sorted(((v, p) for p, v in per_problem.items() if v >= 2), reverse=True)
    print(f"- problems with net loss >= 2 of {k}: {len(worst)} "
          f"({', '.join(f'{p} (-{v})' for v, p in worst[:20])}{', ...' if len(worst) > 20 else ''})")
    if logs and vocab.tokens:
        groups = ("lost", "lost, at the first differing number", "both right",
                  "both right, at the first differing number")
        views = {g: [] for g in groups}
        at = {g: [] for g in groups}
        mismatched = 0
        for p in problems:
            for j in range(k):
                f, q = full[(p, j)], pol[(p, j)]
                lg = logs.get((q["policy"], q["budget"], q["stream"]))
                d = first_divergence(f["response_ids"], q["response_ids"])
                if lg is None or d is None:
                    continue
                if lg["config_hash"] != q["config_hash"] or lg["response_ids"] != q["response_ids"]:
                    mismatched += 1  # the replay drew another sample: its log is not this sample's
                    continue
                key = "lost" if f["correct"] and not q["correct"] else "both right" if f["correct"] else None
                if key:
                    views[key].append(cache_view(vocab, f, q, d, lg))
                    at[key].append(d)
                    e = first_number_error(f, q)
                    t = number_token(vocab, q, e[0]) if e is not None and e[2] is not None else None
                    if t is not None:
                        views[key + ", at the first differing number"].append(cache_view(vocab, f, q, t, lg))
                        at[key + ", at the first differing number"].append(t)
        if mismatched:
            print(f"- {mismatched} replayed sample(s) differ from the analysed records (other rounding in the replay's "
                  "batch): their logs are left out")
        for key, v in views.items():
            if not v:
                continue
            parts = []
            for i, what in enumerate(VIEW):
                m, n = mean([x[i] for x in v])
                if n:
                    parts.append(f"{what} {100 * m:.0f} %" + (f" ({n} pairs)" if n != len(v) else ""))
            where = "the token" if "number" in key else "the diverging token"
            print(f"- held in the cache {where} was sampled from (share of layer x KV-head caches), {key} pairs with "
                  f"a replayed log ({len(v)}, at response token median {sorted(at[key])[len(at[key]) // 2]}): "
                  + ", ".join(parts))
    for p, j, d, f, q in lost[:show]:
        lo = max(0, d - 24)
        e = first_number_error(f, q)
        print(f"\n  problem {p} sample {j} (answer {gold(f)}: full {f.get('extracted')}, {name} "
              f"{q.get('extracted')}), divergence at response token {d} of {len(f['response_ids'])}; first "
              f"differing number: {'none' if e is None else f'#{e[0]} full {e[1]} vs {e[2]}'}:")
        print(f"    shared : ...{vocab.text(f['response_ids'][lo:d])!r}")
        print(f"    full   : {vocab.text(f['response_ids'][d:d + 16])!r}")
        print(f"    policy : {vocab.text(q['response_ids'][d:d + 16])!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("full")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--gguf", help="the model's GGUF, to decode token ids with its own vocabulary")
    ap.add_argument("--show", type=int, default=0, help="print the text around the divergence of N lost pairs")
    ap.add_argument("--eviction-log", action="append", default=[], help="fkv-eval generate --eviction-log output(s)")
    ap.add_argument("--lost-problems", action="store_true", help="print each run's problems with a lost pair; exit")
    a = ap.parse_args(argv)
    try:
        full = load(a.full)
        runs = [load(r) for r in a.runs]
        vocab = Vocab(a.gguf)
        logs = {}
        for path in a.eviction_log:
            # the replay's samples lie next to its log (X.evict.jsonl <- X.jsonl): a log counts only where the
            # replayed sample is the analysed one token for token
            replay = load(path[: -len(".evict.jsonl")] + ".jsonl" if path.endswith(".evict.jsonl") else path + ".samples")
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.endswith("\n"):
                        e = json.loads(line)
                        r = replay.get((e["problem_index"], e["sample_index"]))
                        e["response_ids"] = r["response_ids"] if r and r["stream"] == e["stream"] else None
                        logs[(e["policy"], e["budget"], e["stream"])] = e
    except (OSError, ValueError, KeyError) as e:
        print(f"flip_analysis: {e}", file=sys.stderr)
        return 1
    k = a.samples
    complete = lambda rows: {p for p in {p for p, _ in rows} if all((p, j) in rows for j in range(k))}  # noqa: E731
    problems = complete(full)
    for r in runs:
        problems &= complete(r)
    problems = sorted(problems)
    if not problems:
        print("flip_analysis: no problem is complete in every run", file=sys.stderr)
        return 1
    if a.lost_problems:
        for path, rows in zip(a.runs, runs):
            lost = sorted({p for p in problems for j in range(k) if full[(p, j)]["correct"] and not rows[(p, j)]["correct"]})
            print(" ".join(map(str, lost)))
        return 0
    for path, rows in zip(a.runs, runs):
        try:
            analyse(run_name(path, rows), full, rows, problems, k, vocab, a.show, logs)
        except ValueError as e:
            print(f"flip_analysis: {path}: {e}", file=sys.stderr)
            return 1
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
