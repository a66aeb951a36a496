// PCRE2 regex wrapper, ICU normalizer and HF-compatible pre-tokenizer steps (see pretokenizer.h).
// Split semantics follow HF tokenizers' NormalizedString::split: the pattern's matches and the gaps between
// them cover the text; the behaviour decides which become pieces; empty pieces are dropped.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "foresightkv/text/pretokenizer.h"

#include <pcre2.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <tuple>

#include "foresightkv/core/error.h"
#include "foresightkv/text/utf8.h"

namespace fkv::text::detail {
namespace {

// Per-thread PCRE2 match state: one ovector pair (patterns here need no captures) and a JIT stack that may
// grow to 64 MiB, enough for whitespace runs of many megabytes.
struct MatchState {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  MatchState() {
    md = pcre2_match_data_create(1, nullptr);
    mctx = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
    if (mctx && jit_stack) pcre2_jit_stack_assign(mctx, nullptr, jit_stack);
    FKV_CHECK(md && mctx, "PCRE2: out of memory creating match data");
  }
  ~MatchState() {
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
    if (mctx) pcre2_match_context_free(mctx);
    if (md) pcre2_match_data_free(md);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

std::string pcre2_message(int code) {
  std::array<PCRE2_UCHAR, 256> buf{};
  pcre2_get_error_message(code, buf.data(), buf.size());
  return reinterpret_cast<const char*>(buf.data());
}

// A literal string as a PCRE2 pattern: escape ASCII punctuation (backslash + non-alphanumeric is literal).
std::string escape_literal(const std::string& s) {
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u) && u != ' ') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

SplitBehavior parse_behavior(const std::string& b) {
  static const std::map<std::string, SplitBehavior> names = {
      {"Isolated", SplitBehavior::Isolated},
      {"Removed", SplitBehavior::Removed},
      {"MergedWithPrevious", SplitBehavior::MergedWithPrevious},
      {"MergedWithNext", SplitBehavior::MergedWithNext},
      {"Contiguous", SplitBehavior::Contiguous}};
  auto it = names.find(b);
  FKV_CHECK_FORMAT(it != names.end(),
                   "tokenizer.json pre_tokenizer Split: unknown behavior '{}'; expected one of Isolated, Removed, "
                   "MergedWithPrevious, MergedWithNext, Contiguous",
                   b);
  return it->second;
}

const std::shared_ptr<const Regex>& gpt2_regex() {
  static const std::shared_ptr<const Regex> re = std::make_shared<Regex>(kGpt2Pattern);
  return re;
}

PreTokenizerStep byte_level_step(bool add_prefix_space, bool use_regex) {
  PreTokenizerStep st;
  st.kind = PreTokenizerStep::Kind::ByteLevel;
  st.add_prefix_space = add_prefix_space;
  if (use_regex) st.regex = gpt2_regex();
  return st;
}

PreTokenizerStep split_step(const std::string& pattern, SplitBehavior behavior, bool invert) {
  PreTokenizerStep st;
  st.kind = PreTokenizerStep::Kind::Split;
  st.regex = std::make_shared<Regex>(pattern);
  st.behavior = behavior;
  st.invert = invert;
  return st;
}

std::string json_type(const json& j, const char* what) {
  FKV_CHECK_FORMAT(j.is_object() && j.contains("type") && j["type"].is_string(),
                   "tokenizer.json {}: expected an object with a string \"type\", found {}", what,
                   j.dump().substr(0, 200));
  return j["type"].get<std::string>();
}

bool json_bool(const json& j, const char* key, bool dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  FKV_CHECK_FORMAT(j[key].is_boolean(), "tokenizer.json: \"{}\" must be a boolean, found {}", key, j[key].dump());
  return j[key].get<bool>();
}

void add_steps_from_json(const json& j, std::vector<PreTokenizerStep>& steps) {
  const std::string type = json_type(j, "pre_tokenizer");
  if (type == "Sequence") {
    FKV_CHECK_FORMAT(j.contains("pretokenizers") && j["pretokenizers"].is_array(),
                     "tokenizer.json pre_tokenizer Sequence: expected a \"pretokenizers\" array");
    for (const auto& s : j["pretokenizers"]) add_steps_from_json(s, steps);
  } else if (type == "Split") {
    FKV_CHECK_FORMAT(j.contains("pattern") && j["pattern"].is_object(),
                     "tokenizer.json pre_tokenizer Split: expected \"pattern\": {{\"Regex\": ...}} or {{\"String\": ...}}");
    const json& p = j["pattern"];
    std::string pattern;
    if (p.contains("Regex") && p["Regex"].is_string()) {
      pattern = p["Regex"].get<std::string>();
    } else if (p.contains("String") && p["String"].is_string()) {
      pattern = escape_literal(p["String"].get<std::string>());
    } else {
      FKV_THROW_KIND(2, "tokenizer.json pre_tokenizer Split: pattern must hold \"Regex\" or \"String\", found {}",
                     p.dump().substr(0, 200));
    }
    FKV_CHECK_FORMAT(j.contains("behavior") && j["behavior"].is_string(),
                     "tokenizer.json pre_tokenizer Split: missing string \"behavior\"");
    steps.push_back(split_step(pattern, parse_behavior(j["behavior"].get<std::string>()), json_bool(j, "invert", false)));
  } else if (type == "ByteLevel") {
    steps.push_back(byte_level_step(json_bool(j, "add_prefix_space", true), json_bool(j, "use_regex", true)));
  } else if (type == "Digits") {
    // HF Digits splits on char::is_numeric (general category N): one piece per digit, or per run of digits.
    const bool individual = json_bool(j, "individual_digits", false);
    steps.push_back(split_step(individual ? R"(\p{N})" : R"(\p{N}+)", SplitBehavior::Isolated, false));
  } else {
    FKV_THROW_KIND(2,
                   "tokenizer.json pre_tokenizer type '{}' is not implemented; supported: Sequence, Split, ByteLevel, "
                   "Digits (fkv handles byte-level BPE tokenizers only)",
                   type);
  }
}

// The matches of `re` in `text` and the gaps between them, as (start, end, is_match), covering `text`.
void find_matches(const Regex& re, std::string_view text, std::vector<std::pair<size_t, size_t>>& matches,
                  std::vector<std::tuple<size_t, size_t, bool>>& splits) {
  matches.clear();
  splits.clear();
  re.find_all(text, matches);
  size_t prev = 0;
  for (auto [s, e] : matches) {
    if (prev != s) splits.emplace_back(prev, s, false);
    splits.emplace_back(s, e, true);
    prev = e;
  }
  if (prev != text.size()) splits.emplace_back(prev, text.size(), false);
}

void apply_split(const PreTokenizerStep& st, const std::string& text, std::vector<std::string>& out,
                 std::vector<std::pair<size_t, size_t>>& matches, std::vector<std::tuple<size_t, size_t, bool>>& splits) {
  find_matches(*st.regex, text, matches, splits);
  if (st.invert)
    for (auto& s : splits) std::get<2>(s) = !std::get<2>(s);
  // (start, end, remove)
  std::vector<std::tuple<size_t, size_t, bool>> pieces;
  pieces.reserve(splits.size());
  switch (st.behavior) {
    case SplitBehavior::Isolated:
      for (auto [s, e, m] : splits) pieces.emplace_back(s, e, false);
      break;
    case SplitBehavior::Removed:
      for (auto [s, e, m] : splits) pieces.emplace_back(s, e, m);
      break;
    case SplitBehavior::Contiguous: {
      bool prev_match = false;
      for (auto [s, e, m] : splits) {
        if (m == prev_match && !pieces.empty())
          std::get<1>(pieces.back()) = e;
        else
          pieces.emplace_back(s, e, false);
        prev_match = m;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool prev_match = false;
      for (auto [s, e, m] : splits) {
        if (m && !prev_match && !pieces.empty())
          std::get<1>(pieces.back()) = e;
        else
          pieces.emplace_back(s, e, false);
        prev_match = m;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool prev_match = false;
      for (auto it = splits.rbegin(); it != splits.rend(); ++it) {
        auto [s, e, m] = *it;
        if (m && !prev_match && !pieces.empty())
          std::get<0>(pieces.back()) = s;
        else
          pieces.emplace_back(s, e, false);
        prev_match = m;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
  }
  for (auto [s, e, remove] : pieces)
    if (!remove && e > s) out.emplace_back(text.substr(s, e - s));
}

}  // namespace

// ---- Regex -----------------------------------------------------------------------------------------------

namespace {
// HF's Oniguruma takes \s as Unicode White_Space; PCRE2's UCP \s also matches U+180E (it follows \h), so
// rewrite \s / \S to the White_Space property (valid inside and outside character classes).
std::string oniguruma_compatible(const std::string& p) {
  std::string out;
  out.reserve(p.size() + 32);
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\\' && i + 1 < p.size()) {
      const char c = p[++i];
      if (c == 's')
        out += "\\p{White_Space}";
      else if (c == 'S')
        out += "\\P{White_Space}";
      else {
        out.push_back('\\');
        out.push_back(c);
      }
    } else {
      out.push_back(p[i]);
    }
  }
  return out;
}
}  // namespace

Regex::Regex(std::string pattern) : pattern_(std::move(pattern)) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  const std::string compiled = oniguruma_compatible(pattern_);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  FKV_CHECK_FORMAT(code != nullptr, "tokenizer regex '{}' does not compile with PCRE2 at offset {}: {}", pattern_,
                   err_off, pcre2_message(err));
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: the interpreter is used when JIT is unavailable
  code_ = code;
}

Regex::~Regex() {
  if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  MatchState& st = match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t off = 0;
  while (off < s.size()) {
    int rc = pcre2_match(code, subject, s.size(), off, PCRE2_NO_UTF_CHECK, st.md, st.mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // retry with the interpreter, which keeps its backtrack state on the heap
      rc = pcre2_match(code, subject, s.size(), off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, st.md, st.mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    FKV_CHECK(rc >= 0, "PCRE2 match of tokenizer regex '{}' failed at byte {} of a {}-byte segment: {}", pattern_, off,
              s.size(), pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.md);
    const size_t b = ov[0], e = ov[1];
    if (e == b) {  // empty match: skip one character (HF drops empty pieces)
      size_t i = b;
      if (i >= s.size()) break;
      utf8::next(s, i);
      off = i;
      continue;
    }
    out.emplace_back(b, e);
    off = e;
  }
}

// ---- Normalizer ------------------------------------------------------------------------------------------

Normalizer Normalizer::from_json(const json& j) {
  Normalizer n;
  if (j.is_null()) return n;
  const std::string type = json_type(j, "normalizer");
  if (type == "Sequence") {
    FKV_CHECK_FORMAT(j.contains("normalizers") && j["normalizers"].is_array(),
                     "tokenizer.json normalizer Sequence: expected a \"normalizers\" array");
    for (const auto& s : j["normalizers"]) {
      Normalizer sub = from_json(s);
      n.forms_.insert(n.forms_.end(), sub.forms_.begin(), sub.forms_.end());
    }
  } else if (type == "NFC") {
    n.forms_.push_back(Form::NFC);
  } else if (type == "NFD") {
    n.forms_.push_back(Form::NFD);
  } else if (type == "NFKC") {
    n.forms_.push_back(Form::NFKC);
  } else if (type == "NFKD") {
    n.forms_.push_back(Form::NFKD);
  } else {
    FKV_THROW_KIND(2,
                   "tokenizer.json normalizer type '{}' is not implemented; supported: NFC, NFD, NFKC, NFKD, Sequence "
                   "of those, or null",
                   type);
  }
  return n;
}

bool Normalizer::apply(std::string_view in, std::string& out) const {
  if (forms_.empty()) return false;
  bool ascii = true;
  for (char c : in) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) return false;  // every normalization form leaves ASCII unchanged
  std::string cur(in), next;
  bool changed = false;
  for (Form f : forms_) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* norm = nullptr;
    switch (f) {
      case Form::NFC: norm = icu::Normalizer2::getNFCInstance(status); break;
      case Form::NFD: norm = icu::Normalizer2::getNFDInstance(status); break;
      case Form::NFKC: norm = icu::Normalizer2::getNFKCInstance(status); break;
      case Form::NFKD: norm = icu::Normalizer2::getNFKDInstance(status); break;
    }
    FKV_CHECK(U_SUCCESS(status) && norm, "ICU: cannot load a normalizer instance: {}", u_errorName(status));
    const icu::StringPiece piece(cur.data(), static_cast<int32_t>(cur.size()));
    if (norm->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) continue;
    status = U_ZERO_ERROR;
    next.clear();
    icu::StringByteSink<std::string> sink(&next);
    norm->normalizeUTF8(0, piece, sink, nullptr, status);
    FKV_CHECK(U_SUCCESS(status), "ICU normalizeUTF8 failed: {}", u_errorName(status));
    cur.swap(next);
    changed = true;
  }
  if (changed) out = std::move(cur);
  return changed;
}

// ---- PreTokenizer ----------------------------------------------------------------------------------------

PreTokenizer PreTokenizer::from_json(const json& j) {
  PreTokenizer p;
  FKV_CHECK_FORMAT(!j.is_null(),
                   "tokenizer.json has no pre_tokenizer; fkv supports byte-level BPE only, which needs a ByteLevel "
                   "pre-tokenizer");
  add_steps_from_json(j, p.steps_);
  for (size_t i = 0; i < p.steps_.size(); ++i) {
    const bool last = i + 1 == p.steps_.size();
    FKV_CHECK_FORMAT(p.steps_[i].kind != PreTokenizerStep::Kind::ByteLevel || last,
                     "tokenizer.json pre_tokenizer: a ByteLevel step must be the last step (found at position {} of {})",
                     i, p.steps_.size());
  }
  FKV_CHECK_FORMAT(!p.steps_.empty() && p.steps_.back().kind == PreTokenizerStep::Kind::ByteLevel,
                   "tokenizer.json pre_tokenizer has no ByteLevel step; fkv supports byte-level BPE tokenizers only");
  return p;
}

std::vector<std::string> PreTokenizer::gguf_pre_names() {
  return {"default", "gpt2", "smollm", "qwen2", "deepseek-r1-qwen", "llama-bpe", "llama3", "llama-v3",
          "dbrx", "smaug-bpe", "falcon3"};
}

PreTokenizer PreTokenizer::from_gguf_pre(const std::string& name) {
  // Mirrors transformers' GGUF converter: names it maps to a split regex get Split(regex, Isolated) followed by
  // ByteLevel(use_regex=false); the others keep GPT2Tokenizer's ByteLevel(use_regex=true). For "smollm" that
  // means no separate digit split (llama.cpp adds one, HF does not; the SmolLM2 merges never join digits).
  PreTokenizer p;
  if (name == "default" || name == "gpt2" || name == "smollm") {
    p.steps_.push_back(byte_level_step(false, true));
  } else if (name == "qwen2" || name == "deepseek-r1-qwen") {
    p.steps_.push_back(split_step(kQwen2Pattern, SplitBehavior::Isolated, false));
    p.steps_.push_back(byte_level_step(false, false));
  } else if (name == "llama-bpe" || name == "llama3" || name == "llama-v3" || name == "dbrx" || name == "smaug-bpe" ||
             name == "falcon3") {
    p.steps_.push_back(split_step(kLlama3Pattern, SplitBehavior::Isolated, false));
    p.steps_.push_back(byte_level_step(false, false));
  } else {
    std::string list;
    for (const auto& n : gguf_pre_names()) list += (list.empty() ? "" : ", ") + n;
    FKV_THROW_KIND(2,
                   "GGUF tokenizer.ggml.pre = '{}' is not supported; expected one of: {}. Add its split regex to "
                   "PreTokenizer::from_gguf_pre (see llama.cpp llama-vocab.cpp and transformers' GGUF converter)",
                   name, list);
  }
  return p;
}

void PreTokenizer::split(std::string_view text, std::vector<std::string>& pieces) const {
  std::vector<std::string> cur, next;
  cur.emplace_back(text);
  std::vector<std::pair<size_t, size_t>> matches;
  std::vector<std::tuple<size_t, size_t, bool>> splits;
  for (const auto& st : steps_) {
    next.clear();
    for (auto& piece : cur) {
      if (st.kind == PreTokenizerStep::Kind::Split) {
        apply_split(st, piece, next, matches, splits);
      } else {
        if (st.add_prefix_space && (piece.empty() || piece[0] != ' ')) piece.insert(piece.begin(), ' ');
        if (st.regex) {
          PreTokenizerStep iso = st;
          iso.behavior = SplitBehavior::Isolated;
          iso.invert = false;
          apply_split(iso, piece, next, matches, splits);
        } else if (!piece.empty()) {
          next.push_back(std::move(piece));
        }
      }
    }
    cur.swap(next);
  }
  for (auto& p : cur) pieces.push_back(std::move(p));
}

// ---- byte-level alphabet ---------------------------------------------------------------------------------

namespace {
struct ByteTables {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 324> to_byte{};
  ByteTables() {
    to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      to_char[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      to_byte[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}
}  // namespace

char32_t byte_to_char(uint8_t b) { return byte_tables().to_char[b]; }

int char_to_byte(char32_t cp) { return cp < 324 ? byte_tables().to_byte[cp] : -1; }

}  // namespace fkv::text::detail
