#!/usr/bin/env python3
"""Reference data for fkv's tokenizer, chat-template and decode tests (HF transformers/tokenizers as oracle).

Writes into tests/data/text/ (committed, ~3 MB in all):
  corpus.jsonl                 >= 2,000 strings: GSM8K/AIME/AMC/GPQA texts, random Unicode (CJK, emoji, combining
                               marks, RTL, whitespace runs, digits), LaTeX, code, inline special tokens.
  qwen3_refs.jsonl             ids for every corpus string with the shared Qwen3 tokenizer.json, decode outputs
  smollm2_refs.jsonl           the same with HF AutoTokenizer(dir, gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf)
  synthetic_<v>/tokenizer.json small trained byte-level BPE tokenizers exercising options the real files do not use
  synthetic_<v>_refs.jsonl     ({"text", "ids", ...} as below; lstrip/rstrip/single_word/normalized added tokens, NFKC/NFD, Digits, String splits,
                               split behaviours, add_prefix_space, ignore_merges, "a b" merges, TemplateProcessing)
  chat_template_refs.jsonl     tokenizer.apply_chat_template(..., tokenize=False) for qwen3 (enable_thinking
                               unset/True/False), qwen2.5, deepseek-r1 (Distill-Qwen and Distill-Llama share one
                               template), smollm2 (the GGUF's template) and plain chatml.

Ref lines: {"i": corpus index, "ids": [...], "ids_special": [...] (only when add_special_tokens=True differs),
"decoded": str (only when != the text), "decoded_skip": str (only when != decoded)}; decode-only cases
{"decode_ids": [...], "decoded": str, "decoded_skip": str} exercise partial UTF-8 and special tokens.

Usage: .venv/bin/python scripts/make_tokenizer_refs.py [--out tests/data/text] [--shared ../shared/data]
       [--gguf data/models/SmolLM2-135M-Instruct.Q4_1.gguf]
Deterministic (fixed seeds); rerun after changing the corpus rules or upgrading transformers/tokenizers.
"""
import argparse
import json
import os
import random
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ---- chat templates not available as local tokenizers (verbatim from the model repos' tokenizer_config.json) ----

QWEN25_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided "
    "with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# DeepSeek-R1-Distill-Qwen-* and -Llama-* (revision with the '<think>\n' generation prefix).
DEEPSEEK_R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}"
    "{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}"
    "{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜>"
    "<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + "
    "tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}"
    "{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + "
    "'\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}"
    "{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}"
    "{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- set ns.is_output_first = false %}{%- else %}{{'\\n<｜tool▁output▁begin｜>' + message['content'] + "
    "'<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}"
    "{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)
DEEPSEEK_BOS = "<｜begin▁of▁sentence｜>"

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# ---- corpus ---------------------------------------------------------------------------------------------------

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "<|fim_prefix|>",
            "<file_sep>", "<jupyter_code>", "<repo_name>", "<|im_start", "<think", "</think", "<<think>>", "|im_end|>"]

LATEX = [r"\frac{a}{b}", r"\sqrt{x^2+y^2}", r"\boxed{42}", r"\sum_{k=1}^{n} k^2", r"\int_0^\infty e^{-x}\,dx",
         r"\binom{n}{k}", r"$\alpha+\beta=\gamma$", r"\left(\frac{1}{2}\right)^{n}", r"x \equiv 3 \pmod{7}",
         r"\mathbb{R}^n", r"\lfloor \log_2 n \rfloor", r"\begin{align} a &= b \\ c &= d \end{align}"]

CODE = ["def f(x):\n    return x**2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
        "if __name__ == '__main__':\n    main()", "    \n\t\t\n  x = {'a': [1, 2, 3]}  # comment",
        "SELECT * FROM t WHERE id=42;", "#include <vector>\nint main(){return 0;}", "const s = `${a}-${b}`;",
        "fn main() { println!(\"héllo\"); }", "<div class=\"x\">&nbsp;</div>", "x+=1;y-=2;z*=3;w/=4"]

WORDS = ["the", "The", "don't", "I'M", "we'LL", "they'Re", "it's", "O'Neil", "naïve", "café", "résumé", "Straße",
         "ſ", "K", "ﬁne", "ΑΒΓ", "αβγ", "Привет", "мир", "hello", "World", "tokenizer", "HTTP", "e-mail", "x86_64",
         "3.14159", "1,000,000", "2024-06-01", "12:30pm", "$5.99", "100%", "#hashtag", "@user", "a.b.c", "...", "—",
         "–", "«quote»", "„Zitat“", "'single'", '"double"', "(paren)", "[bracket]", "{brace}", "<angle>"]

SCRIPTS = {
    "cjk": [(0x4E00, 0x9FFF)], "hiragana": [(0x3041, 0x3096)], "katakana": [(0x30A1, 0x30FA)],
    "hangul": [(0xAC00, 0xD7A3)], "hebrew": [(0x05D0, 0x05EA)], "arabic": [(0x0621, 0x064A)],
    "devanagari": [(0x0905, 0x0939)], "thai": [(0x0E01, 0x0E30)], "greek": [(0x03B1, 0x03C9)],
    "cyrillic": [(0x0430, 0x044F)], "latin_ext": [(0x00C0, 0x024F)], "math": [(0x2200, 0x22FF)],
    "arrows": [(0x2190, 0x21FF)], "box": [(0x2500, 0x257F)], "fullwidth": [(0xFF01, 0xFF5E)],
    "emoji": [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF)],
    "digits_other": [(0x0660, 0x0669), (0x06F0, 0x06F9), (0x0966, 0x096F), (0xFF10, 0xFF19), (0x2460, 0x2473)],
}
COMBINING = [chr(c) for c in range(0x0300, 0x0370)]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", "\u00a0", "\u2003", "\u3000", "\u200b",
              "\u2028", "\x0b", "\x0c", "\u0085", "\u180e", "\u2009", "\u202f"]
EMOJI_SEQ = ["👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸", "❤️", "🧑🏿‍💻", "😀", "🤖", "✨", "1️⃣", "©️", "🫠"]
RTL = ["שלום עולם", "مرحبا بالعالم", "עברית 123 text", "العربية، نص.", "\u202eRLO\u202c", "abc \u200fxyz"]


def assigned(cp):
    return unicodedata.category(chr(cp)) not in ("Cn", "Cs", "Co")


def rand_script_char(rng, name):
    lo, hi = rng.choice(SCRIPTS[name])
    while True:
        cp = rng.randint(lo, hi)
        if assigned(cp):
            return chr(cp)


def random_unicode_string(rng):
    parts = []
    for _ in range(rng.randint(1, 14)):
        kind = rng.random()
        if kind < 0.20:
            parts.append(rng.choice(WORDS))
        elif kind < 0.38:
            name = rng.choice(list(SCRIPTS))
            parts.append("".join(rand_script_char(rng, name) for _ in range(rng.randint(1, 6))))
        elif kind < 0.46:
            base = rng.choice("aeiouAEOnNcCsSzy") if rng.random() < 0.8 else rand_script_char(rng, "greek")
            parts.append(base + "".join(rng.choice(COMBINING) for _ in range(rng.randint(1, 3))))
        elif kind < 0.58:
            parts.append(rng.choice(WHITESPACE) * rng.randint(1, 3))
        elif kind < 0.66:
            parts.append("".join(rng.choice("0123456789") for _ in range(rng.randint(1, 9))))
        elif kind < 0.72:
            parts.append(rng.choice(EMOJI_SEQ))
        elif kind < 0.77:
            parts.append(rng.choice(RTL))
        elif kind < 0.83:
            parts.append(rng.choice(SPECIALS))
        elif kind < 0.88:
            parts.append(rng.choice(LATEX))
        elif kind < 0.92:
            parts.append("".join(chr(rng.randint(0x21, 0x7E)) for _ in range(rng.randint(1, 8))))
        else:  # any assigned code point of the BMP or SMP
            while True:
                cp = rng.randint(0x20, 0x1FFFF)
                if assigned(cp):
                    parts.append(chr(cp))
                    break
        if rng.random() < 0.5:
            parts.append(" ")
    return "".join(parts)


def read_jsonl(path, field):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)[field] for line in f if line.strip()]


def build_corpus(shared):
    rng = random.Random(20261128)
    ev = Path(shared) / "eval"
    corpus = ["", " ", "  ", "\n", "\n\n\n", "\t", "a", "Hello world", " Hello", "Hello  world!!\n\n  x",
              "I'M don't 12345 abc", "你好，世界。Ünïcödé café", "e\u0301 vs \u00e9 and \u212b vs \u00c5",
              "ﬁ ﬂ ﬃ ² ½ Ⅻ ㎏", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
              "<think>\nreasoning\n</think>\n\nanswer", "<think></think><think>", "x" * 300, " " * 200 + "x",
              "\n" * 50, "a\u0300" * 40, "😀" * 30, "1234567890" * 10, "word " * 60]
    gsm_test = read_jsonl(ev / "gsm8k_test.jsonl", "question")
    gsm_ans = read_jsonl(ev / "gsm8k_test.jsonl", "answer")
    gsm_train = read_jsonl(Path(shared) / "train" / "gsm8k_train.jsonl", "question")
    corpus += rng.sample(gsm_test, 350) + rng.sample(gsm_ans, 250) + rng.sample(gsm_train, 200)
    corpus += read_jsonl(ev / "aime24.jsonl", "problem") + read_jsonl(ev / "aime25.jsonl", "problem")
    corpus += read_jsonl(ev / "amc23.jsonl", "question")
    corpus += [t[:1500] for t in read_jsonl(ev / "gpqa.jsonl", "input")]
    corpus += [rng.choice(LATEX) + " " + rng.choice(LATEX) for _ in range(60)]
    corpus += [rng.choice(CODE) for _ in range(40)] + CODE
    corpus += [random_unicode_string(rng) for _ in range(1000)]
    # Prompts as the generation loop will see them.
    for _ in range(60):
        q = rng.choice(gsm_test)
        corpus.append(f"<|im_start|>user\n{q}\nPlease reason step by step, and put your final answer within "
                      f"\\boxed{{}}.<|im_end|>\n<|im_start|>assistant\n<think>\n")
    return corpus


# ---- HF encoders -----------------------------------------------------------------------------------------------

def encode_refs(tok_encode, tok_encode_special, tok_decode, corpus, rng, vocab_size, special_ids):
    lines = []
    for i, text in enumerate(corpus):
        ids = tok_encode(text)
        line = {"i": i, "ids": ids}
        ids_s = tok_encode_special(text)
        if ids_s != ids:
            line["ids_special"] = ids_s
        dec = tok_decode(ids, False)
        dec_skip = tok_decode(ids, True)
        if dec != text:
            line["decoded"] = dec
        if dec_skip != dec:
            line["decoded_skip"] = dec_skip
        lines.append(line)
    # Decode-only cases: random ids (partial UTF-8 byte tokens, specials) to pin U+FFFD replacement.
    for _ in range(300):
        n = rng.randint(1, 12)
        ids = [rng.choice(special_ids) if rng.random() < 0.15 else rng.randrange(vocab_size) for _ in range(n)]
        lines.append({"decode_ids": ids, "decoded": tok_decode(ids, False), "decoded_skip": tok_decode(ids, True)})
    return lines


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, {len(rows)} lines)")


def hf_refs(tok, corpus, seed, name):
    """Refs from a transformers tokenizer; cross-checks against the raw `tokenizers` backend."""
    rng = random.Random(seed)
    special_ids = sorted(set(tok.all_special_ids) | set(tok.added_tokens_decoder.keys()))
    return encode_refs(lambda s: tok.encode(s, add_special_tokens=False),
                       lambda s: tok.encode(s, add_special_tokens=True),
                       lambda ids, skip: tok.decode(ids, skip_special_tokens=skip),
                       corpus, rng, len(tok), special_ids)


# ---- synthetic tokenizers ----------------------------------------------------------------------------------------

def make_synthetic(corpus, out_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    base.train_from_iterator([t for t in corpus[:1200] if t], trainer=trainer)
    j = json.loads(base.to_str())
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    n = len(j["model"]["vocab"])

    def added(content, i, **kw):
        d = {"id": n + i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
        d.update(kw)
        return d

    variants = {}
    # a: NFKC, Digits + ByteLevel(prefix space, regex), "a b" merges, flagged added tokens, TemplateProcessing.
    a = json.loads(json.dumps(j))
    a["normalizer"] = {"type": "NFKC"}
    a["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}
    a["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in a["model"]["merges"]]
    a["added_tokens"] = [added("<s>", 0), added("</s>", 1), added("[MASK]", 2, lstrip=True),
                         added("<sep>", 3, rstrip=True), added("word", 4, single_word=True, special=False),
                         added("ﬁx", 5, normalized=True, special=False), added("<think>", 6, special=False),
                         added("<|both|>", 7, lstrip=True, rstrip=True), added("²", 8, normalized=True)]
    a["post_processor"] = {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [n], "tokens": ["<s>"]},
                                              "</s>": {"id": "</s>", "ids": [n + 1], "tokens": ["</s>"]}}}
    variants["a"] = a
    # b: NFD, String split Removed, regex Contiguous / MergedWithPrevious / MergedWithNext / inverted,
    #    ByteLevel without regex, ignore_merges, ByteLevel post-processor.
    b = json.loads(json.dumps(j))
    b["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFD"}]}
    b["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": "||"}, "behavior": "Removed", "invert": False},
        {"type": "Split", "pattern": {"Regex": r"\p{N}"}, "behavior": "Contiguous", "invert": False},
        {"type": "Split", "pattern": {"Regex": r"[.!?]"}, "behavior": "MergedWithPrevious", "invert": False},
        {"type": "Split", "pattern": {"Regex": r"[$#@]"}, "behavior": "MergedWithNext", "invert": False},
        {"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "Isolated", "invert": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    b["model"]["ignore_merges"] = True
    b["added_tokens"] = [added("<|eot|>", 0)]
    b["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    variants["b"] = b

    results = {}
    for name, tj in variants.items():
        d = Path(out_dir) / f"synthetic_{name}"
        d.mkdir(parents=True, exist_ok=True)
        text = json.dumps(tj, ensure_ascii=False, separators=(",", ":"))
        (d / "tokenizer.json").write_text(text, encoding="utf-8")
        tok = Tokenizer.from_str(text)
        sub = corpus[:24] + corpus[-1060:-460] + corpus[-60:-40]  # edge cases, random Unicode, prompts
        extra = ["a [MASK] b", "a   [MASK]   b", "x<sep>   y", "word words sword word_ (word) word",
                 "ﬁx fix ﬁxed", "x²y", "<|both|>", "  <|both|>  z", "12.5! $x #tag @me a||b||c", "1 2  3   4",
                 "wörd word\u00a0word", "<think>word</think>"]
        texts = sub + extra
        rows = []
        for t in texts:
            enc = tok.encode(t, add_special_tokens=False).ids
            enc_s = tok.encode(t, add_special_tokens=True).ids
            row = {"text": t, "ids": enc}
            if enc_s != enc:
                row["ids_special"] = enc_s
            dec = tok.decode(enc, skip_special_tokens=False)
            dec_skip = tok.decode(enc, skip_special_tokens=True)
            if dec != t:
                row["decoded"] = dec
            if dec_skip != dec:
                row["decoded_skip"] = dec_skip
            rows.append(row)
        write_jsonl(Path(out_dir) / f"synthetic_{name}_refs.jsonl", rows)
        results[name] = len(rows)
    return results


# ---- chat templates ------------------------------------------------------------------------------------------

def conversations():
    think_turn = "<think>\nLet me add: 2 + 2 = 4.\n</think>\n\nThe answer is 4."
    return [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
         {"role": "user", "content": "Tell me a joke."}],
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": think_turn},
         {"role": "user", "content": "And 3+3?"}],
        [{"role": "system", "content": "Reason carefully."}, {"role": "user", "content": "Q1"},
         {"role": "assistant", "content": "<think>r1</think>A1"}, {"role": "user", "content": "Q2"},
         {"role": "assistant", "content": "<think>\n\nr2\n\n</think>\n\n\nA2"}, {"role": "user", "content": "Q3"}],
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": think_turn}],
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "no reasoning here"}],
        [{"role": "user", "content": "Übersetze: 你好，世界 🌍 — שלום"},
         {"role": "assistant", "content": "<think>Chinese → German</think>Hallo, Welt 🌍"},
         {"role": "user", "content": "Danke! e\u0301 \t tabs\n\nand newlines  "}],
        [{"role": "system", "content": "S1"}, {"role": "user", "content": "U1"}, {"role": "system", "content": "S2"},
         {"role": "user", "content": "U2"}],
        [{"role": "user", "content": "Find x such that x^2 = 4.\nPlease reason step by step, and put your final answer "
                                     "within \\boxed{}."}],
        [{"role": "user", "content": "call the tool"}, {"role": "assistant", "content": "<think>need tool</think>Calling."},
         {"role": "tool", "content": "{\"temp\": 21}"}, {"role": "tool", "content": "<tool_response>x</tool_response>"},
         {"role": "user", "content": "thanks"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
         {"role": "user", "content": "<tool_response>r</tool_response>"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "plain", "reasoning_content": "explicit"},
         {"role": "user", "content": "q2"}, {"role": "assistant", "content": "last", "reasoning_content": "\nwhy\n"}],
        [{"role": "user", "content": ""}],
        [{"role": "system", "content": ""}, {"role": "user", "content": "empty system"}],
    ]


def chat_refs(qwen_tok, smol_tok):
    rows = []
    convs = conversations()

    def render(tok, msgs, family, agp=True, **kw):
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=agp, **kw)
        row = {"family": family, "messages": msgs, "add_generation_prompt": agp, "text": text}
        if "enable_thinking" in kw:
            row["enable_thinking"] = kw["enable_thinking"]
        rows.append(row)

    qwen_tpl = qwen_tok.chat_template
    for msgs in convs:
        for agp in (True, False):
            render(qwen_tok, msgs, "qwen3", agp)
            render(qwen_tok, msgs, "qwen3", agp, enable_thinking=True)
            render(qwen_tok, msgs, "qwen3", agp, enable_thinking=False)
    for family, tpl, kw in (("qwen2.5", QWEN25_TEMPLATE, {}), ("deepseek-r1", DEEPSEEK_R1_TEMPLATE,
                                                               {"bos_token": DEEPSEEK_BOS}),
                            ("chatml", CHATML_TEMPLATE, {})):
        qwen_tok.chat_template = tpl
        for msgs in convs:
            for agp in (True, False):
                render(qwen_tok, msgs, family, agp, **kw)
    qwen_tok.chat_template = qwen_tpl
    for msgs in convs:
        for agp in (True, False):
            render(smol_tok, [{k: v for k, v in m.items() if k != "reasoning_content"} for m in msgs], "smollm2", agp)
    templates = {"qwen3": qwen_tpl, "qwen2.5": QWEN25_TEMPLATE, "deepseek-r1": DEEPSEEK_R1_TEMPLATE,
                 "chatml": CHATML_TEMPLATE, "smollm2": smol_tok.chat_template}
    return rows, templates


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "text"))
    ap.add_argument("--shared", default=os.environ.get("FKV_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--gguf", default=str(ROOT / "data" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()

    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(args.shared)
    assert len(corpus) >= 2000, len(corpus)
    write_jsonl(out / "corpus.jsonl", [{"i": i, "text": t} for i, t in enumerate(corpus)])

    qdir = Path(args.shared) / "tokenizers" / "qwen3"
    qwen = AutoTokenizer.from_pretrained(str(qdir))
    raw = tokenizers.Tokenizer.from_file(str(qdir / "tokenizer.json"))
    mismatch = sum(raw.encode(t, add_special_tokens=False).ids != qwen.encode(t, add_special_tokens=False)
                   for t in corpus)
    assert mismatch == 0, f"transformers and the raw tokenizer.json disagree on {mismatch} strings"
    write_jsonl(out / "qwen3_refs.jsonl", hf_refs(qwen, corpus, 1, "qwen3"))

    gguf = Path(args.gguf)
    smol = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    write_jsonl(out / "smollm2_refs.jsonl", hf_refs(smol, corpus, 2, "smollm2"))

    make_synthetic(corpus, out)

    rows, templates = chat_refs(qwen, smol)
    write_jsonl(out / "chat_template_refs.jsonl", rows)
    with open(out / "chat_templates.json", "w", encoding="utf-8") as f:
        json.dump(templates, f, ensure_ascii=False, indent=1)
    meta = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "corpus_size": len(corpus), "python": sys.version.split()[0]}
    with open(out / "refs_meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
