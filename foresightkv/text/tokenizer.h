// Byte-level BPE tokenizer with HF `tokenizers` semantics (engineering.md §4), loadable from an HF
// tokenizer.json (plus tokenizer_config.json beside it) or from the vocabulary embedded in a GGUF
// (tokenizer.ggml.model = gpt2). Pipeline: added tokens split out first (leftmost-longest, honouring
// lstrip/rstrip/single_word/normalized) -> normalizer (NFC/NFD/NFKC/NFKD or none) -> pre-tokenizer (Split
// regex, ByteLevel, Digits, Sequence; PCRE2 UTF|UCP) -> byte-level BPE by merge rank -> post-processor.
// Decoding maps token spellings back through the byte table and replaces invalid UTF-8 with U+FFFD, exactly
// like HF's ByteLevel decoder; StreamDecoder emits text incrementally without ever splitting a UTF-8 sequence.
// A Tokenizer is immutable after loading; encode/decode are thread-safe.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fkv::io {
class GgufFile;
}

namespace fkv::text {

/// A token matched atomically in raw text before normalization/pre-tokenization (HF "added token").
/// `special` only matters for decode(skip_special_tokens=true): Qwen3's <think> is added but not special.
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false;       // absorb whitespace on the left into the match
  bool rstrip = false;       // absorb whitespace on the right into the match
  bool single_word = false;  // match only when not inside a word
  bool normalized = false;   // matched in normalized text instead of raw text
};

class Tokenizer {
 public:
  /// Loads from a `.gguf` file, an HF `tokenizer.json`, or a directory holding `tokenizer.json`. For the JSON
  /// forms, `tokenizer_config.json` beside it (when present) supplies bos/eos tokens and the chat template.
  static Tokenizer from_file(const std::string& path);
  /// tokenizer.json text plus optional tokenizer_config.json text ("" when absent); `source` names them in errors.
  static Tokenizer from_json_text(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                                  const std::string& source);
  /// The tokenizer embedded in a GGUF; the pre-tokenizer follows tokenizer.ggml.pre as HF transformers builds it.
  static Tokenizer from_gguf(const io::GgufFile& file);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  /// Token ids of `text` (must be valid UTF-8, else InvalidArgument with the byte offset). Added tokens in
  /// the text are always matched atomically. With add_special_tokens, the post-processor's tokens (e.g. a BOS
  /// for Llama-3-style files or GGUF add_bos_token) are added; Qwen and SmolLM2 add none.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;

  /// Text of `ids`. With skip_special_tokens, added tokens flagged special are dropped (HF semantics).
  /// Invalid UTF-8 produced by partial tokens becomes U+FFFD. Throws InvalidArgument for an id outside
  /// [0, vocab_size()) or an id with no token.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  /// The raw bytes one token contributes to decode (may be a partial UTF-8 sequence).
  std::string token_bytes(int32_t id) const;

  /// Number of ids including added tokens (HF len(tokenizer)); model embedding rows beyond it are padding.
  int32_t vocab_size() const;
  /// The token's vocabulary spelling ("Ġthe", "<|im_end|>"). Throws InvalidArgument when out of range.
  const std::string& id_to_token(int32_t id) const;
  /// Id of a token given in its vocabulary spelling, or nullopt.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  /// Id of an added token by its content, e.g. "<|im_end|>" or "<think>". Throws InvalidArgument (listing
  /// the added tokens) when there is no such added token.
  int32_t added_token_id(std::string_view content) const;
  bool is_special(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;

  std::optional<int32_t> bos_id() const;
  /// End-of-sequence ids the files declare (tokenizer_config eos_token, GGUF eos/eot ids), deduplicated.
  const std::vector<int32_t>& eos_ids() const;
  /// Jinja chat template from tokenizer_config.json or tokenizer.chat_template ("" when none).
  const std::string& chat_template() const;
  /// Content of the BOS token ("" when none): templates that render {{bos_token}} need it.
  std::string bos_token() const;
  /// Where the tokenizer was loaded from (for messages).
  const std::string& source() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Incremental decoder for generation: put() returns the text completed by each new id, holding back the bytes
/// of a UTF-8 sequence split across tokens (e.g. an emoji spread over 2-4 byte tokens) until it is complete.
/// The concatenation of all put() results and finish() equals tokenizer.decode(all ids, skip_special_tokens).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
  std::string put(int32_t id);
  /// Flushes held-back bytes (an unfinished sequence becomes U+FFFD) and resets the decoder.
  std::string finish();
  /// Bytes currently held back (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace fkv::text
