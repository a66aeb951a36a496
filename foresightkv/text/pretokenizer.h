// Internal pieces of the tokenizer pipeline (engineering.md §4.2): a PCRE2 regex wrapper (UTF|UCP, JIT),
// the normalizer (NFC/NFD/NFKC/NFKD via ICU, or a Sequence of those) and the pre-tokenizer (Split with a
// regex or literal, ByteLevel with/without its GPT-2 regex and prefix space, Digits, Sequence), built from
// HF tokenizer.json objects or from llama.cpp's `tokenizer.ggml.pre` names. Not part of the public API:
// include foresightkv/text/tokenizer.h instead.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "foresightkv/core/json.h"

namespace fkv::text::detail {

/// GPT-2's byte-level split regex (what HF's ByteLevel pre-tokenizer uses when use_regex is true).
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
/// Qwen2/Qwen2.5/Qwen3 and DeepSeek-R1-Distill-Qwen split regex (transformers qwen2 PRETOKENIZE_REGEX).
inline constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
/// Llama-3 / DeepSeek-R1-Distill-Llama split regex (numbers in runs of up to three digits).
inline constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

/// A compiled PCRE2 pattern (UTF | UCP, JIT-compiled when the platform supports it). Immutable and
/// thread-safe: each find_all call uses its own match data.
class Regex {
 public:
  explicit Regex(std::string pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  /// Appends the [start, end) byte spans of the successive non-overlapping matches in `s`.
  /// Precondition: `s` is valid UTF-8 (the caller validated it; PCRE2's own check is skipped).
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

/// Unicode normalization forms supported from tokenizer.json "normalizer".
class Normalizer {
 public:
  enum class Form { NFC, NFD, NFKC, NFKD };
  /// From a tokenizer.json "normalizer" value (null -> identity). Throws FormatError for types not implemented.
  static Normalizer from_json(const json& j);
  bool is_identity() const { return forms_.empty(); }
  /// Normalizes `in` (valid UTF-8) into `out`; returns false (and leaves `out` untouched) when `in` is unchanged.
  bool apply(std::string_view in, std::string& out) const;

 private:
  std::vector<Form> forms_;
};

enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

/// One pre-tokenizer step. ByteLevel must be the last step (it maps the text to byte symbols).
struct PreTokenizerStep {
  enum class Kind { Split, ByteLevel };
  Kind kind = Kind::Split;
  std::shared_ptr<const Regex> regex;  // Split pattern; ByteLevel's GPT-2 regex when use_regex (else null)
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel only
};

class PreTokenizer {
 public:
  /// From a tokenizer.json "pre_tokenizer" value. Throws FormatError for unsupported types/options and when
  /// no ByteLevel step ends the sequence (only byte-level BPE is supported).
  static PreTokenizer from_json(const json& j);
  /// From llama.cpp's `tokenizer.ggml.pre`, matching what HF transformers builds for that GGUF.
  static PreTokenizer from_gguf_pre(const std::string& name);
  /// The names from_gguf_pre accepts (for error messages and docs).
  static std::vector<std::string> gguf_pre_names();

  /// Splits `text` (valid UTF-8, already normalized) into pieces, appended to `pieces` as raw UTF-8 bytes
  /// (the byte-level mapping is applied later, by the BPE model).
  void split(std::string_view text, std::vector<std::string>& pieces) const;

  const std::vector<PreTokenizerStep>& steps() const { return steps_; }

 private:
  std::vector<PreTokenizerStep> steps_;
};

/// GPT-2 bytes_to_unicode: the code point each byte is spelled as in byte-level vocabularies.
char32_t byte_to_char(uint8_t b);
/// Inverse of byte_to_char; -1 when `cp` is not a byte-level symbol.
int char_to_byte(char32_t cp);

}  // namespace fkv::text::detail
