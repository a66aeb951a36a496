// Tokenizer loading (tokenizer.json / GGUF), encoding and decoding with HF semantics (see tokenizer.h).
#include "foresightkv/text/tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <unordered_map>
#include <unordered_set>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/json.h"
#include "foresightkv/io/gguf.h"
#include "foresightkv/text/bpe.h"
#include "foresightkv/text/pretokenizer.h"
#include "foresightkv/text/utf8.h"

namespace fkv::text {

namespace {

// Matches added tokens in text the way HF's AddedVocabulary does: leftmost-longest over all contents
// (Aho-Corasick LeftmostLongest there; candidates bucketed by first byte here), then single_word / lstrip /
// rstrip adjustments on each match.
class AddedMatcher {
 public:
  void add(const AddedToken* tok) {
    if (tok->content.empty()) return;
    auto& bucket = by_first_[static_cast<uint8_t>(tok->content[0])];
    bucket.push_back(tok);
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const AddedToken* a, const AddedToken* b) { return a->content.size() > b->content.size(); });
    empty_ = false;
  }
  bool empty() const { return empty_; }

  struct Segment {
    size_t begin, end;
    const AddedToken* token;  // null for plain text
  };

  /// Splits `s` (valid UTF-8) into plain-text segments and added-token segments, in order.
  void split(std::string_view s, std::vector<Segment>& out) const {
    size_t start_offset = 0;  // end of the last emitted segment
    size_t pos = 0;           // where the next leftmost-longest search starts
    while (pos < s.size()) {
      size_t mstart = 0, mend = 0;
      const AddedToken* tok = find(s, pos, mstart, mend);
      if (!tok) break;
      pos = mend;
      if (tok->single_word) {
        const bool start_space = mstart == 0 || !ends_with_word(s.substr(0, mstart));
        const bool stop_space = mend == s.size() || !starts_with_word(s.substr(mend));
        if (!start_space || !stop_space) continue;
      }
      size_t start = mstart, stop = mend;
      if (tok->lstrip) start = std::max(space_leftmost_at_end(s.substr(0, start)), start_offset);
      if (tok->rstrip) stop += space_rightmost_at_start(s.substr(stop));
      start = std::max(start, start_offset);
      if (start > start_offset) out.push_back({start_offset, start, nullptr});
      out.push_back({start, stop, tok});
      start_offset = stop;
      pos = std::max(pos, stop);
    }
    if (start_offset < s.size()) out.push_back({start_offset, s.size(), nullptr});
  }

 private:
  const AddedToken* find(std::string_view s, size_t from, size_t& mstart, size_t& mend) const {
    for (size_t i = from; i < s.size(); ++i) {
      const auto& bucket = by_first_[static_cast<uint8_t>(s[i])];
      for (const AddedToken* t : bucket) {  // longest first
        if (s.compare(i, t->content.size(), t->content) == 0) {
          mstart = i;
          mend = i + t->content.size();
          return t;
        }
      }
    }
    return nullptr;
  }

  static bool is_word_char(char32_t c) {
    // Rust char::is_alphanumeric (Alphabetic or general category N*) or '_'.
    return c == U'_' || u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_ALPHABETIC) ||
           (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_N_MASK) != 0;
  }
  static bool is_space(char32_t c) { return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE); }

  static char32_t last_char(std::string_view s, size_t& char_start) {
    size_t i = s.size();
    do --i;
    while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80);
    char_start = i;
    size_t j = i;
    return utf8::next(s, j);
  }
  static bool ends_with_word(std::string_view s) {
    if (s.empty()) return false;
    size_t k = 0;
    return is_word_char(last_char(s, k));
  }
  static bool starts_with_word(std::string_view s) {
    if (s.empty()) return false;
    size_t i = 0;
    return is_word_char(utf8::next(s, i));
  }
  // Byte offset where the trailing whitespace of `s` begins (0 when `s` is all whitespace).
  static size_t space_leftmost_at_end(std::string_view s) {
    size_t end = s.size();
    while (end > 0) {
      size_t start = 0;
      const char32_t c = last_char(s.substr(0, end), start);
      if (!is_space(c)) return end;
      end = start;
    }
    return 0;
  }
  // Length in bytes of the leading whitespace of `s`.
  static size_t space_rightmost_at_start(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
      size_t j = i;
      if (!is_space(utf8::next(s, j))) return i;
      i = j;
    }
    return s.size();
  }

  std::array<std::vector<const AddedToken*>, 256> by_first_;
  bool empty_ = true;
};

// The bytes the ByteLevel decoder produces for one token: each character mapped back through the byte table,
// or, when any character is outside the table (e.g. U+FF5C in DeepSeek's <｜User｜>), the token's own UTF-8.
std::string spelled_to_bytes(const std::string& spelled) {
  std::string out;
  out.reserve(spelled.size());
  if (utf8::valid_prefix(spelled) != spelled.size()) return spelled;
  size_t i = 0;
  while (i < spelled.size()) {
    const int b = detail::char_to_byte(utf8::next(spelled, i));
    if (b < 0) return spelled;
    out.push_back(static_cast<char>(b));
  }
  return out;
}

// HF's GGUF converter respells a token holding characters outside the byte alphabet through that alphabet.
std::string respell_if_needed(const std::string& token) {
  if (utf8::valid_prefix(token) != token.size()) return token;
  size_t i = 0;
  bool in_alphabet = true;
  while (i < token.size() && in_alphabet) in_alphabet = detail::char_to_byte(utf8::next(token, i)) >= 0;
  if (in_alphabet) return token;
  std::string out;
  for (char c : token) utf8::append(out, detail::byte_to_char(static_cast<uint8_t>(c)));
  return out;
}

std::string json_token_content(const json& v, const char* key, const std::string& source) {
  if (v.is_null()) return {};
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  FKV_THROW_KIND(2, "{}: tokenizer_config \"{}\" must be a string, an object with \"content\", or null; found {}",
                 source, key, v.dump().substr(0, 200));
}

json parse_json(std::string_view text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    FKV_THROW_KIND(2, "{} is not valid JSON: {}; re-download or regenerate the file", what, e.what());
  }
}

}  // namespace

struct Tokenizer::Impl {
  std::string source;
  detail::Normalizer normalizer;
  detail::PreTokenizer pre;
  std::unique_ptr<detail::BpeModel> bpe;
  std::vector<AddedToken> added;  // sorted by id; matchers point into it (never resized after build)
  std::unordered_map<std::string, int32_t> added_by_content;
  AddedMatcher raw_matcher, normalized_matcher;
  std::vector<std::string> spelled;   // id -> vocabulary spelling ("" for holes)
  std::vector<std::string> bytes;     // id -> decoded bytes
  std::vector<uint8_t> kind;          // id -> 0 hole, 1 model token, 2 added, 3 added special
  std::vector<int32_t> prefix_ids, suffix_ids;  // post-processor tokens around a single sequence
  std::optional<int32_t> bos;
  std::vector<int32_t> eos;
  std::string chat_template;

  // Common tail of both loaders: id tables, matchers. `vocab` is the model vocabulary (spelling -> id).
  void finish(const std::unordered_map<std::string, int32_t>& vocab) {
    std::sort(added.begin(), added.end(), [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
    int32_t n = 0;
    for (const auto& [tok, id] : vocab) n = std::max(n, id + 1);
    for (const auto& a : added) n = std::max(n, a.id + 1);
    spelled.assign(n, {});
    kind.assign(n, 0);
    for (const auto& [tok, id] : vocab) {
      FKV_CHECK_FORMAT(id >= 0, "{}: vocabulary token '{}' has negative id {}", source, tok, id);
      spelled[id] = tok;
      kind[id] = 1;
    }
    std::unordered_set<std::string> special_originals;  // contents of special added tokens, before normalization
    for (auto& a : added) {
      FKV_CHECK_FORMAT(a.id >= 0, "{}: added token '{}' has negative id {}", source, a.content, a.id);
      FKV_CHECK_FORMAT(!a.content.empty(), "{}: added token with id {} has empty content", source, a.id);
      utf8::check_valid(a.content, source + ": added token content");
      added_by_content[a.content] = a.id;
      if (a.special) special_originals.insert(a.content);
      // HF keeps (and matches, and decodes) a normalized added token by its normalized content.
      if (a.normalized && !normalizer.is_identity()) {
        std::string norm;
        if (normalizer.apply(a.content, norm)) a.content = norm;
      }
      spelled[a.id] = a.content;
      kind[a.id] = 2;
    }
    // skip_special_tokens drops an id when its token string is the original content of a special added token,
    // which is HF's test: a special token whose normalized content differs is kept, and a vocabulary token
    // spelled like a special token is dropped.
    bytes.resize(n);
    for (int32_t i = 0; i < n; ++i) {
      if (kind[i] == 0) continue;
      bytes[i] = spelled_to_bytes(spelled[i]);
      if (special_originals.count(spelled[i])) kind[i] = 3;
    }
    for (auto& a : added) (a.normalized ? normalized_matcher : raw_matcher).add(&a);
  }

  int32_t id_of(const std::string& token, const char* what) const {
    auto it = added_by_content.find(token);
    if (it != added_by_content.end()) return it->second;
    auto jt = bpe->vocab().find(token);
    FKV_CHECK_FORMAT(jt != bpe->vocab().end(), "{}: {} '{}' is not in the vocabulary", source, what, token);
    return jt->second;
  }

  void encode_plain(std::string_view seg, std::vector<std::string>& pieces, std::vector<int32_t>& out) const {
    pieces.clear();
    pre.split(seg, pieces);
    for (const auto& p : pieces) bpe->encode_piece(p, out);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

// ---- loading -----------------------------------------------------------------------------------------------

Tokenizer Tokenizer::from_file(const std::string& path) {
  namespace fs = std::filesystem;
  FKV_CHECK_ARG(fs::exists(path),
                "tokenizer path '{}' does not exist; pass a tokenizer.json, a directory holding one, or a .gguf file",
                path);
  std::string json_path = path;
  if (fs::is_directory(path)) {
    json_path = (fs::path(path) / "tokenizer.json").string();
    FKV_CHECK_ARG(fs::exists(json_path), "directory '{}' has no tokenizer.json; pass the tokenizer.json or a .gguf file",
                  path);
  } else {
    char magic[4] = {0, 0, 0, 0};
    std::ifstream f(path, std::ios::binary);
    f.read(magic, 4);
    if (f.gcount() == 4 && std::string_view(magic, 4) == "GGUF") {
      io::GgufFile gguf(path);
      return from_gguf(gguf);
    }
  }
  const fs::path dir = fs::path(json_path).parent_path();
  const std::string config_path = (dir / "tokenizer_config.json").string();
  const std::string config = fs::exists(config_path) ? read_file(config_path) : std::string();
  Tokenizer tok = from_json_text(read_file(json_path), config, json_path);
  // transformers >= 4.43 may keep the template in chat_template.jinja instead of tokenizer_config.json.
  const std::string jinja_path = (dir / "chat_template.jinja").string();
  if (tok.impl_->chat_template.empty() && fs::exists(jinja_path)) tok.impl_->chat_template = read_file(jinja_path);
  return tok;
}

Tokenizer Tokenizer::from_json_text(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                                    const std::string& source) {
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  const json j = parse_json(tokenizer_json, source);
  FKV_CHECK_FORMAT(j.is_object(), "{}: expected a JSON object at top level, found {}", source, j.type_name());
  FKV_CHECK_FORMAT(j.contains("model") && j["model"].is_object(), "{}: missing \"model\" object", source);
  const json& m = j["model"];
  const std::string mtype = m.value("type", std::string("BPE"));
  FKV_CHECK_FORMAT(mtype == "BPE", "{}: model type '{}' is not supported; fkv implements byte-level BPE only", source,
                   mtype);
  FKV_CHECK_FORMAT(m.contains("vocab") && m["vocab"].is_object(), "{}: model.vocab must be an object token -> id",
                   source);
  FKV_CHECK_FORMAT(m.contains("merges") && m["merges"].is_array(), "{}: model.merges must be an array", source);
  auto check_empty_string = [&](const char* key) {
    FKV_CHECK_FORMAT(!m.contains(key) || m[key].is_null() || (m[key].is_string() && m[key].get<std::string>().empty()),
                     "{}: model.{} = {} is not supported (byte-level BPE uses none)", source, key, m[key].dump());
  };
  check_empty_string("continuing_subword_prefix");
  check_empty_string("end_of_word_suffix");
  FKV_CHECK_FORMAT(!m.contains("dropout") || m["dropout"].is_null() ||
                       (m["dropout"].is_number() && m["dropout"].get<double>() == 0.0),
                   "{}: model.dropout = {} is not supported (BPE dropout is a training feature)", source,
                   m["dropout"].dump());
  FKV_CHECK_FORMAT(!m.value("byte_fallback", false),
                   "{}: model.byte_fallback = true is not supported (that is a sentencepiece-style BPE)", source);

  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(m["vocab"].size());
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    FKV_CHECK_FORMAT(it.value().is_number_integer(), "{}: model.vocab['{}'] must be an integer id, found {}", source,
                     it.key(), it.value().dump());
    vocab[it.key()] = it.value().get<int32_t>();
  }
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(m["merges"].size());
  for (const auto& mg : m["merges"]) {
    if (mg.is_array()) {
      FKV_CHECK_FORMAT(mg.size() == 2 && mg[0].is_string() && mg[1].is_string(),
                       "{}: merge #{} must be a pair of strings, found {}", source, merges.size(), mg.dump());
      merges.emplace_back(mg[0].get<std::string>(), mg[1].get<std::string>());
    } else if (mg.is_string()) {
      const std::string s = mg.get<std::string>();
      const size_t sp = s.find(' ');
      FKV_CHECK_FORMAT(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                       "{}: merge #{} '{}' must be two tokens separated by exactly one space", source, merges.size(), s);
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else {
      FKV_THROW_KIND(2, "{}: merge #{} must be a [a, b] pair or an \"a b\" string, found {}", source, merges.size(),
                     mg.dump());
    }
  }
  std::optional<int32_t> unk;
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    auto it = vocab.find(m["unk_token"].get<std::string>());
    FKV_CHECK_FORMAT(it != vocab.end(), "{}: model.unk_token '{}' is not in the vocabulary", source,
                     m["unk_token"].get<std::string>());
    unk = it->second;
  }

  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    FKV_CHECK_FORMAT(j["added_tokens"].is_array(), "{}: \"added_tokens\" must be an array", source);
    // Ids as HF tokenizers assigns them when loading (the file's "id" is only a hint): a content already in
    // the model vocabulary takes that id, any other the next id after the vocabulary / the last added token.
    std::unordered_map<std::string, int32_t> assigned;
    int32_t max_added = -1;
    const auto model_size = static_cast<int32_t>(vocab.size());
    for (const auto& a : j["added_tokens"]) {
      FKV_CHECK_FORMAT(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
                           a["content"].is_string(),
                       "{}: each added token needs an integer \"id\" and a string \"content\", found {}", source,
                       a.dump().substr(0, 200));
      AddedToken t;
      t.content = a["content"].get<std::string>();
      if (t.content.empty() || assigned.count(t.content)) continue;
      if (auto it = vocab.find(t.content); it != vocab.end())
        t.id = it->second;
      else
        t.id = max_added < 0 ? model_size : (max_added >= model_size ? max_added + 1 : model_size);
      max_added = std::max(max_added, t.id);
      assigned[t.content] = t.id;
      t.special = a.value("special", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.single_word = a.value("single_word", false);
      t.normalized = a.value("normalized", !t.special);
      impl->added.push_back(std::move(t));
    }
  }
  impl->bpe = std::make_unique<detail::BpeModel>(std::move(vocab), merges, m.value("ignore_merges", false), unk);
  impl->normalizer = detail::Normalizer::from_json(j.value("normalizer", json()));
  impl->pre = detail::PreTokenizer::from_json(j.value("pre_tokenizer", json()));

  {
    const json d = j.value("decoder", json());
    FKV_CHECK_FORMAT(d.is_object() && d.value("type", std::string()) == "ByteLevel",
                     "{}: decoder {} is not supported; fkv decodes byte-level BPE (decoder type ByteLevel)", source,
                     d.dump().substr(0, 200));
  }

  // Post-processor: which special tokens add_special_tokens puts around a single sequence.
  std::function<void(const json&)> add_post = [&](const json& p) {
    const std::string type = p.value("type", std::string());
    if (type == "ByteLevel") return;  // offsets only
    if (type == "Sequence") {
      FKV_CHECK_FORMAT(p.contains("processors") && p["processors"].is_array(),
                       "{}: post_processor Sequence needs a \"processors\" array", source);
      for (const auto& q : p["processors"]) add_post(q);
      return;
    }
    FKV_CHECK_FORMAT(type == "TemplateProcessing",
                     "{}: post_processor type '{}' is not supported; expected ByteLevel, TemplateProcessing or "
                     "Sequence",
                     source, type);
    FKV_CHECK_FORMAT(p.contains("single") && p["single"].is_array(),
                     "{}: TemplateProcessing needs a \"single\" array", source);
    bool seen_a = false;
    for (const auto& piece : p["single"]) {
      if (piece.contains("Sequence")) {
        seen_a = true;
      } else if (piece.contains("SpecialToken")) {
        const std::string name = piece["SpecialToken"].value("id", std::string());
        FKV_CHECK_FORMAT(p.contains("special_tokens") && p["special_tokens"].contains(name),
                         "{}: TemplateProcessing refers to special token '{}' missing from special_tokens", source,
                         name);
        const json ids = p["special_tokens"].at(name).value("ids", json::array());
        FKV_CHECK_FORMAT(ids.is_array() && !ids.empty(), "{}: TemplateProcessing special token '{}' has no \"ids\"",
                         source, name);
        for (const auto& id : ids) {
          FKV_CHECK_FORMAT(id.is_number_integer(), "{}: TemplateProcessing ids of '{}' must be integers", source, name);
          (seen_a ? impl->suffix_ids : impl->prefix_ids).push_back(id.get<int32_t>());
        }
      } else {
        FKV_THROW_KIND(2, "{}: TemplateProcessing piece {} not understood", source, piece.dump());
      }
    }
  };
  if (j.contains("post_processor") && !j["post_processor"].is_null()) add_post(j["post_processor"]);

  impl->finish(impl->bpe->vocab());

  if (!tokenizer_config_json.empty()) {
    const std::string cfg_name = source + " (tokenizer_config.json)";
    const json c = parse_json(tokenizer_config_json, cfg_name);
    FKV_CHECK_FORMAT(c.is_object(), "{}: expected a JSON object", cfg_name);
    if (c.contains("chat_template")) {
      const json& t = c["chat_template"];
      if (t.is_string()) {
        impl->chat_template = t.get<std::string>();
      } else if (t.is_array()) {  // [{"name": "default", "template": ...}, ...]
        for (const auto& e : t)
          if (e.value("name", std::string()) == "default") impl->chat_template = e.value("template", std::string());
      }
    }
    const std::string bos = c.contains("bos_token") ? json_token_content(c["bos_token"], "bos_token", cfg_name) : "";
    const std::string eos = c.contains("eos_token") ? json_token_content(c["eos_token"], "eos_token", cfg_name) : "";
    if (!bos.empty()) impl->bos = impl->id_of(bos, "bos_token");
    if (!eos.empty()) impl->eos.push_back(impl->id_of(eos, "eos_token"));
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_gguf(const io::GgufFile& file) {
  auto impl = std::make_unique<Impl>();
  impl->source = file.path();
  const std::string model = file.has("tokenizer.ggml.model") ? file.get("tokenizer.ggml.model").as_string() : "";
  FKV_CHECK_FORMAT(model == "gpt2",
                   "{}: tokenizer.ggml.model = '{}' is not supported; fkv implements byte-level BPE ('gpt2') only",
                   file.path(), model);
  const auto& tokens = file.get("tokenizer.ggml.tokens").as_array();
  FKV_CHECK_FORMAT(file.has("tokenizer.ggml.merges"), "{}: a gpt2 tokenizer needs tokenizer.ggml.merges", file.path());
  const auto& merge_vals = file.get("tokenizer.ggml.merges").as_array();
  std::vector<int64_t> types(tokens.size(), 1);
  if (file.has("tokenizer.ggml.token_type")) {
    const auto& tv = file.get("tokenizer.ggml.token_type").as_array();
    FKV_CHECK_FORMAT(tv.size() == tokens.size(), "{}: tokenizer.ggml.token_type has {} entries, tokens has {}",
                     file.path(), tv.size(), tokens.size());
    for (size_t i = 0; i < tv.size(); ++i) types[i] = tv[i].as_int();
  }
  // Vocabulary as HF's GGUF converter builds it: every token, respelled through the byte alphabet when it holds
  // other characters. Control (3) and user-defined (4) tokens are also added tokens, matched atomically with
  // their file spelling (control = special). HF skips control tokens outside the byte alphabet as llama.cpp
  // mislabels; fkv keeps them atomic like llama.cpp (identical for SmolLM2/Qwen2.5, whose are all ASCII).
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i].as_string();
    vocab[respell_if_needed(t)] = static_cast<int32_t>(i);
    if (types[i] == 3 || types[i] == 4) {
      AddedToken a;
      a.id = static_cast<int32_t>(i);
      a.content = t;
      a.special = types[i] == 3;
      impl->added.push_back(std::move(a));
    }
  }
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merge_vals.size());
  for (const auto& mv : merge_vals) {
    const std::string& s = mv.as_string();
    const size_t sp = s.find(' ');
    FKV_CHECK_FORMAT(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                     "{}: tokenizer.ggml.merges[{}] = '{}' must be two tokens separated by one space", file.path(),
                     merges.size(), s);
    merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
  }
  impl->bpe = std::make_unique<detail::BpeModel>(std::move(vocab), merges, false, std::nullopt);
  const std::string pre = file.has("tokenizer.ggml.pre") ? file.get("tokenizer.ggml.pre").as_string() : "default";
  impl->pre = detail::PreTokenizer::from_gguf_pre(pre);

  auto opt_id = [&](const char* key) -> std::optional<int32_t> {
    if (!file.has(key)) return std::nullopt;
    const int64_t id = file.get(key).as_int();
    FKV_CHECK_FORMAT(id >= 0 && id < static_cast<int64_t>(tokens.size()), "{}: {} = {} is outside the vocabulary [0, {})",
                     file.path(), key, id, tokens.size());
    return static_cast<int32_t>(id);
  };
  impl->bos = opt_id("tokenizer.ggml.bos_token_id");
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
    if (auto id = opt_id(key); id && std::find(impl->eos.begin(), impl->eos.end(), *id) == impl->eos.end())
      impl->eos.push_back(*id);
  // transformers registers the bos/eos/unk/pad tokens as special tokens too.
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                          "tokenizer.ggml.padding_token_id"}) {
    const auto id = opt_id(key);
    if (!id) continue;
    const bool already = std::any_of(impl->added.begin(), impl->added.end(), [&](const AddedToken& a) { return a.id == *id; });
    if (!already) {
      AddedToken a;
      a.id = *id;
      a.content = tokens[*id].as_string();
      a.special = true;
      impl->added.push_back(std::move(a));
    }
  }
  const bool add_bos = file.has("tokenizer.ggml.add_bos_token") && file.get("tokenizer.ggml.add_bos_token").as_bool();
  const bool add_eos = file.has("tokenizer.ggml.add_eos_token") && file.get("tokenizer.ggml.add_eos_token").as_bool();
  FKV_CHECK_FORMAT(!add_bos || impl->bos, "{}: add_bos_token is true but there is no bos_token_id", file.path());
  if (add_bos) impl->prefix_ids.push_back(*impl->bos);
  if (add_eos) {
    const auto eos = opt_id("tokenizer.ggml.eos_token_id");
    FKV_CHECK_FORMAT(eos.has_value(), "{}: add_eos_token is true but there is no eos_token_id", file.path());
    impl->suffix_ids.push_back(*eos);
  }
  if (file.has("tokenizer.chat_template")) impl->chat_template = file.get("tokenizer.chat_template").as_string();
  impl->finish(impl->bpe->vocab());
  return Tokenizer(std::move(impl));
}

// ---- encode / decode ---------------------------------------------------------------------------------------

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& im = *impl_;
  utf8::check_valid(text, "Tokenizer::encode");
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special_tokens) out.insert(out.end(), im.prefix_ids.begin(), im.prefix_ids.end());
  std::vector<AddedMatcher::Segment> segs, sub;
  std::vector<std::string> pieces;
  std::string normalized;
  im.raw_matcher.split(text, segs);
  for (const auto& s : segs) {
    if (s.token) {
      out.push_back(s.token->id);
      continue;
    }
    std::string_view seg = text.substr(s.begin, s.end - s.begin);
    if (im.normalizer.apply(seg, normalized)) seg = normalized;
    if (im.normalized_matcher.empty()) {
      im.encode_plain(seg, pieces, out);
      continue;
    }
    sub.clear();
    im.normalized_matcher.split(seg, sub);
    for (const auto& t : sub) {
      if (t.token)
        out.push_back(t.token->id);
      else
        im.encode_plain(seg.substr(t.begin, t.end - t.begin), pieces, out);
    }
  }
  if (add_special_tokens) out.insert(out.end(), im.suffix_ids.begin(), im.suffix_ids.end());
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  FKV_CHECK_ARG(id >= 0 && id < vocab_size() && impl_->kind[id] != 0,
                "token id {} is not in the vocabulary of {} (valid ids: 0..{})", id, impl_->source, vocab_size() - 1);
  return impl_->bytes[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& im = *impl_;
  std::string raw;
  raw.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    FKV_CHECK_ARG(id >= 0 && id < vocab_size() && im.kind[id] != 0,
                  "decode: token id {} is not in the vocabulary of {} (valid ids: 0..{})", id, im.source,
                  vocab_size() - 1);
    if (skip_special_tokens && im.kind[id] == 3) continue;
    raw += im.bytes[id];
  }
  return utf8::decode_lossy(raw);
}

// ---- accessors ---------------------------------------------------------------------------------------------

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->spelled.size()); }

const std::string& Tokenizer::id_to_token(int32_t id) const {
  FKV_CHECK_ARG(id >= 0 && id < vocab_size() && impl_->kind[id] != 0,
                "token id {} is not in the vocabulary of {} (valid ids: 0..{})", id, impl_->source, vocab_size() - 1);
  return impl_->spelled[id];
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const std::string key(token);
  auto it = impl_->added_by_content.find(key);
  if (it != impl_->added_by_content.end()) return it->second;
  auto jt = impl_->bpe->vocab().find(key);
  if (jt != impl_->bpe->vocab().end()) return jt->second;
  return std::nullopt;
}

int32_t Tokenizer::added_token_id(std::string_view content) const {
  auto it = impl_->added_by_content.find(std::string(content));
  if (it != impl_->added_by_content.end()) return it->second;
  std::string list;
  for (const auto& a : impl_->added) {
    if (list.size() > 300) {
      list += ", ...";
      break;
    }
    list += (list.empty() ? "" : ", ") + a.content;
  }
  FKV_THROW_KIND(1, "'{}' is not an added/special token of {}; its added tokens are: {}", content, impl_->source, list);
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->kind[id] == 3;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
const std::vector<int32_t>& Tokenizer::eos_ids() const { return impl_->eos; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
std::string Tokenizer::bos_token() const { return impl_->bos ? impl_->spelled[*impl_->bos] : std::string(); }
const std::string& Tokenizer::source() const { return impl_->source; }

// ---- streaming ---------------------------------------------------------------------------------------------

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::put(int32_t id) {
  const std::string bytes = tokenizer_->token_bytes(id);  // validates the id
  if (skip_special_ && tokenizer_->is_special(id)) return {};
  pending_ += bytes;
  const size_t keep = utf8::incomplete_tail(pending_);
  const size_t emit = pending_.size() - keep;
  std::string out = utf8::decode_lossy(std::string_view(pending_).substr(0, emit));
  pending_.erase(0, emit);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out = utf8::decode_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace fkv::text
