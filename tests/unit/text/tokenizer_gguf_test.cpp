// Tokenizers built from GGUF metadata written here (a tiny byte-level vocabulary, no tensors): control and
// user-defined tokens matched atomically (control = special), add_bos_token, HF's respelling of tokens outside
// the byte alphabet, tokenizer.ggml.pre selection, and clear errors for unsupported models / pre-tokenizers.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "foresightkv/core/error.h"
#include "foresightkv/text/pretokenizer.h"
#include "foresightkv/text/tokenizer.h"
#include "foresightkv/text/utf8.h"

using fkv::text::Tokenizer;
using Catch::Matchers::Contains;

namespace {

// Minimal GGUF v3 writer for metadata-only files (engineering.md §3.1).
class GgufMetadataWriter {
 public:
  void str(const std::string& key, const std::string& v) {
    head(key, 8);
    put_str(v);
  }
  void u32(const std::string& key, uint32_t v) {
    head(key, 4);
    put(v);
  }
  void boolean(const std::string& key, bool v) {
    head(key, 7);
    kv_.push_back(v ? 1 : 0);
  }
  void strings(const std::string& key, const std::vector<std::string>& v) {
    head(key, 9);
    put(uint32_t{8});
    put(uint64_t{v.size()});
    for (const auto& s : v) put_str(s);
  }
  void i32s(const std::string& key, const std::vector<int32_t>& v) {
    head(key, 9);
    put(uint32_t{5});
    put(uint64_t{v.size()});
    for (int32_t x : v) put(x);
  }
  std::string write(const std::filesystem::path& path) const {
    std::string out = "GGUF";
    append(out, uint32_t{3});
    append(out, uint64_t{0});  // tensors
    append(out, count_);
    out += kv_;
    out.resize((out.size() + 31) / 32 * 32, '\0');
    std::ofstream(path, std::ios::binary).write(out.data(), static_cast<std::streamsize>(out.size()));
    return path.string();
  }

 private:
  template <typename T>
  static void append(std::string& s, T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  template <typename T>
  void put(T v) {
    append(kv_, v);
  }
  void put_str(const std::string& s) {
    put(uint64_t{s.size()});
    kv_ += s;
  }
  void head(const std::string& key, uint32_t type) {
    put_str(key);
    put(type);
    ++count_;
  }
  std::string kv_;
  uint64_t count_ = 0;
};

struct TinyVocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  TinyVocab() {
    for (int b = 0; b < 256; ++b) {
      std::string s;
      fkv::text::utf8::append(s, fkv::text::detail::byte_to_char(static_cast<uint8_t>(b)));
      tokens.push_back(s);
      types.push_back(6);
    }
    for (const auto& [t, ty] : std::vector<std::pair<std::string, int32_t>>{
             {"ab", 1}, {"<|im_start|>", 3}, {"<think>", 4}, {"x y", 1}, {"Ġa", 1}})
      tokens.push_back(t), types.push_back(ty);
  }
};

std::string write_gguf(const std::filesystem::path& path, const std::string& model, const std::string& pre,
                       bool add_bos) {
  const TinyVocab v;
  GgufMetadataWriter w;
  w.str("general.architecture", "llama");
  w.str("tokenizer.ggml.model", model);
  if (!pre.empty()) w.str("tokenizer.ggml.pre", pre);
  w.strings("tokenizer.ggml.tokens", v.tokens);
  w.i32s("tokenizer.ggml.token_type", v.types);
  w.strings("tokenizer.ggml.merges", {"a b", "Ġ a"});
  w.u32("tokenizer.ggml.bos_token_id", 257);
  w.u32("tokenizer.ggml.eos_token_id", 257);
  w.boolean("tokenizer.ggml.add_bos_token", add_bos);
  w.str("tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}");
  return w.write(path);
}

struct TempDir {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / "fkv_tokenizer_gguf_test";
  TempDir() { std::filesystem::create_directories(dir); }
  ~TempDir() { std::filesystem::remove_all(dir); }
};

}  // namespace

TEST_CASE("GGUF tokenizer: control/user-defined tokens, add_bos_token, respelling", "[unit][text]") {
  TempDir tmp;
  const Tokenizer tok = Tokenizer::from_file(write_gguf(tmp.dir / "tiny.gguf", "gpt2", "smollm", false));
  CHECK(tok.vocab_size() == 261);
  CHECK(tok.encode("ab<|im_start|>a<think>") == std::vector<int32_t>{256, 257, 97, 258});
  CHECK(tok.encode(" a") == std::vector<int32_t>{260});
  CHECK(tok.is_special(257));
  CHECK_FALSE(tok.is_special(258));  // user-defined: added, not special
  CHECK(tok.decode(std::vector<int32_t>{256, 257, 258}, true) == "ab<think>");
  CHECK(tok.bos_id() == 257);
  CHECK(tok.eos_ids() == std::vector<int32_t>{257});
  CHECK(tok.encode("ab", true) == std::vector<int32_t>{256});
  CHECK_THAT(tok.chat_template(), Contains("<|im_start|>"));
  // "x y" holds a real space (not a byte-level symbol): HF's converter respells it "xĠy".
  CHECK(tok.token_to_id("xĠy") == 259);
  CHECK(tok.decode(std::vector<int32_t>{259}) == "x y");

  const Tokenizer with_bos = Tokenizer::from_file(write_gguf(tmp.dir / "bos.gguf", "gpt2", "qwen2", true));
  CHECK(with_bos.encode("ab", true) == std::vector<int32_t>{257, 256});
  CHECK(with_bos.encode("ab", false) == std::vector<int32_t>{256});
  // No tokenizer.ggml.pre: the GPT-2 default.
  CHECK_NOTHROW(Tokenizer::from_file(write_gguf(tmp.dir / "nopre.gguf", "gpt2", "", false)));
}

TEST_CASE("GGUF tokenizer: unsupported model or pre-tokenizer fails clearly", "[unit][text]") {
  TempDir tmp;
  CHECK_THROWS_AS(Tokenizer::from_file(write_gguf(tmp.dir / "pre.gguf", "gpt2", "chatglm-bpe", false)),
                  fkv::FormatError);
  CHECK_THROWS_WITH(Tokenizer::from_file(write_gguf(tmp.dir / "pre.gguf", "gpt2", "chatglm-bpe", false)),
                    Contains("chatglm-bpe") && Contains("llama-bpe"));
  CHECK_THROWS_WITH(Tokenizer::from_file(write_gguf(tmp.dir / "spm.gguf", "llama", "default", false)),
                    Contains("tokenizer.ggml.model = 'llama'"));
}
