// Tokenizer behaviour beyond corpus parity: added/special token semantics (Qwen3's <think> is added but not
// special), skip_special_tokens, streaming decode of characters split across tokens, clear errors for bad
// input and bad files, long whitespace runs, thread safety, and a hidden [.bench] for 100 KB encodes.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>

#include "foresightkv/core/error.h"
#include "foresightkv/text/pretokenizer.h"
#include "foresightkv/text/utf8.h"
#include "text_test_util.h"

using fkv::text::StreamDecoder;
using fkv::text::Tokenizer;
using Catch::Matchers::Contains;

namespace {

std::string stream_all(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip, size_t* empty_puts = nullptr) {
  StreamDecoder dec(tok, skip);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = dec.put(id);
    if (empty_puts && piece.empty()) ++*empty_puts;
    REQUIRE(fkv::text::utf8::valid_prefix(piece) == piece.size());  // never a split UTF-8 sequence
    out += piece;
  }
  return out + dec.finish();
}

// A minimal valid byte-level tokenizer.json: the 256 byte symbols, one merge, one added token.
std::string tiny_tokenizer_json(const std::string& pre_tokenizer, const std::string& normalizer = "null",
                                const std::string& decoder = R"({"type":"ByteLevel"})") {
  std::string vocab = "{";
  for (int b = 0; b < 256; ++b) {
    std::string sym;
    fkv::text::utf8::append(sym, fkv::text::detail::byte_to_char(static_cast<uint8_t>(b)));
    vocab += fkv::json(sym).dump() + ":" + std::to_string(b) + ",";
  }
  vocab += R"("ab":256})";
  return R"({"version":"1.0","added_tokens":[{"id":257,"content":"<eos>","special":true,"normalized":false}],)"
         R"("normalizer":)" + normalizer + R"(,"pre_tokenizer":)" + pre_tokenizer +
         R"(,"post_processor":null,"decoder":)" + decoder +
         R"(,"model":{"type":"BPE","vocab":)" + vocab + R"(,"merges":["a b"]}})";
}

}  // namespace

TEST_CASE("Qwen3 tokenizer: added vs special tokens and skip_special_tokens", "[unit][text]") {
  const Tokenizer& tok = fkv::test::qwen3_tokenizer();
  CHECK(tok.vocab_size() == 151669);
  CHECK(tok.added_token_id("<|im_end|>") == 151645);
  CHECK(tok.added_token_id("<think>") == 151667);
  CHECK(tok.added_token_id("</think>") == 151668);
  CHECK(tok.is_special(151645));
  CHECK_FALSE(tok.is_special(151667));  // <think> is added but not special
  CHECK_FALSE(tok.bos_id().has_value());
  CHECK(tok.eos_ids() == std::vector<int32_t>{151645});
  CHECK_THAT(tok.chat_template(), Contains("enable_thinking"));
  CHECK(tok.id_to_token(151645) == "<|im_end|>");
  CHECK(tok.token_to_id("<|im_end|>") == 151645);
  CHECK(tok.token_to_id("Ġthe").has_value());
  CHECK_FALSE(tok.token_to_id("no such token").has_value());

  const auto ids = tok.encode("<|im_start|>assistant\n<think>\nok</think>\n\nDone.<|im_end|>");
  REQUIRE(ids.front() == 151644);
  REQUIRE(ids.back() == 151645);
  CHECK(std::count(ids.begin(), ids.end(), 151667) == 1);
  CHECK(std::count(ids.begin(), ids.end(), 151668) == 1);
  CHECK(tok.decode(ids) == "<|im_start|>assistant\n<think>\nok</think>\n\nDone.<|im_end|>");
  CHECK(tok.decode(ids, true) == "assistant\n<think>\nok</think>\n\nDone.");
  CHECK(tok.encode("x", true) == tok.encode("x", false));  // Qwen's post-processor adds nothing
}

TEST_CASE("SmolLM2 GGUF tokenizer: ids, specials and template metadata", "[unit][text]") {
  const Tokenizer& tok = fkv::test::smollm2_tokenizer();
  CHECK(tok.vocab_size() == 49152);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_ids() == std::vector<int32_t>{2});
  CHECK(tok.is_special(0));
  CHECK(tok.is_special(16));
  CHECK_FALSE(tok.is_special(17));
  CHECK_THAT(tok.chat_template(), Contains("named SmolLM"));
  CHECK(tok.encode("<|im_start|>user") == std::vector<int32_t>{1, 4093});
  CHECK(tok.encode("Hello 12345 world") == std::vector<int32_t>{19556, 216, 33, 34, 35, 36, 37, 905});
}

TEST_CASE("streaming decode never emits a split UTF-8 sequence", "[unit][text]") {
  for (const Tokenizer* tok : {&fkv::test::qwen3_tokenizer(), &fkv::test::smollm2_tokenizer()}) {
    const std::string text = "Emoji 🫠🧑🏿‍💻 and 𓃆 and 👨‍👩‍👧‍👦! 你好";
    const auto ids = tok->encode(text);
    size_t empty_puts = 0;
    CHECK(stream_all(*tok, ids, false, &empty_puts) == text);
    CHECK(empty_puts > 0);  // some token ended inside a character and was held back
    // A character cut off at the end becomes U+FFFD on finish(), like HF's decode.
    std::vector<int32_t> partial;
    for (int32_t id : ids) {
      partial.push_back(id);
      CHECK(stream_all(*tok, partial, false) == tok->decode(partial));
    }
  }
  StreamDecoder dec(fkv::test::qwen3_tokenizer(), true);
  CHECK(dec.put(151645).empty());  // a skipped special token
  CHECK(dec.pending_bytes() == 0);
}

TEST_CASE("tokenizer rejects bad input with clear errors", "[unit][text]") {
  const Tokenizer& tok = fkv::test::qwen3_tokenizer();
  CHECK_THROWS_AS(tok.encode(std::string("ok \xff bad")), fkv::InvalidArgument);
  CHECK_THROWS_WITH(tok.encode(std::string("ok \xc3")), Contains("byte offset 3"));
  CHECK_THROWS_WITH(tok.encode(std::string("\xed\xa0\x80")), Contains("UTF-8"));  // a surrogate
  CHECK_THROWS_AS(tok.decode(std::vector<int32_t>{151669}), fkv::InvalidArgument);
  CHECK_THROWS_AS(tok.decode(std::vector<int32_t>{-1}), fkv::InvalidArgument);
  CHECK_THROWS_WITH(tok.added_token_id("<|not_a_token|>"), Contains("<|im_end|>"));
  CHECK_THROWS_AS(tok.id_to_token(1 << 30), fkv::InvalidArgument);
}

TEST_CASE("tokenizer files: malformed or unsupported content fails clearly", "[unit][text]") {
  const std::string byte_level = R"({"type":"ByteLevel","add_prefix_space":false,"use_regex":true})";
  const Tokenizer ok = Tokenizer::from_json_text(tiny_tokenizer_json(byte_level), "", "tiny");
  CHECK(ok.encode("ab<eos>") == std::vector<int32_t>{256, 257});
  CHECK(ok.vocab_size() == 258);

  CHECK_THROWS_AS(Tokenizer::from_json_text("{ not json", "", "bad"), fkv::FormatError);
  CHECK_THROWS_WITH(Tokenizer::from_json_text("{}", "", "empty"), Contains("model"));
  CHECK_THROWS_WITH(Tokenizer::from_json_text(tiny_tokenizer_json(R"({"type":"Metaspace"})"), "", "t"),
                    Contains("Metaspace"));
  CHECK_THROWS_WITH(Tokenizer::from_json_text(tiny_tokenizer_json("null"), "", "t"), Contains("ByteLevel"));
  CHECK_THROWS_WITH(Tokenizer::from_json_text(tiny_tokenizer_json(byte_level, R"({"type":"Lowercase"})"), "", "t"),
                    Contains("Lowercase"));
  CHECK_THROWS_WITH(Tokenizer::from_json_text(tiny_tokenizer_json(byte_level, "null", R"({"type":"WordPiece"})"), "", "t"),
                    Contains("decoder"));
  CHECK_THROWS_WITH(
      Tokenizer::from_json_text(tiny_tokenizer_json(R"({"type":"Split","pattern":{"Regex":"(unclosed"},"behavior":"Isolated"})"),
                                "", "t"),
      Contains("PCRE2"));
  std::string bad_merge = tiny_tokenizer_json(byte_level);
  bad_merge.replace(bad_merge.find(R"(["a b"])"), 7, R"(["a zz"])");
  CHECK_THROWS_WITH(Tokenizer::from_json_text(bad_merge, "", "t"), Contains("not in the vocabulary"));
  CHECK_THROWS_WITH(Tokenizer::from_json_text(tiny_tokenizer_json(byte_level), R"({"eos_token": "<nope>"})", "t"),
                    Contains("<nope>"));
  CHECK_THROWS_AS(Tokenizer::from_file("/nonexistent/tokenizer.json"), fkv::InvalidArgument);
}

TEST_CASE("GGUF pre-tokenizer names: supported ones build, unknown ones fail clearly", "[unit][text]") {
  for (const auto& name : fkv::text::detail::PreTokenizer::gguf_pre_names())
    CHECK_NOTHROW(fkv::text::detail::PreTokenizer::from_gguf_pre(name));
  CHECK_THROWS_AS(fkv::text::detail::PreTokenizer::from_gguf_pre("chatglm-bpe"), fkv::FormatError);
  CHECK_THROWS_WITH(fkv::text::detail::PreTokenizer::from_gguf_pre("chatglm-bpe"), Contains("smollm"));
}

TEST_CASE("long whitespace, digit and letter runs encode and round-trip", "[unit][text]") {
  const Tokenizer& tok = fkv::test::qwen3_tokenizer();
  for (const std::string& text : {std::string(1 << 20, ' ') + "x", std::string(200000, '\n'),
                                  std::string(100000, '7'), std::string(300000, 'a'), std::string(50000, '!') + " \t\n"}) {
    const auto ids = tok.encode(text);
    CHECK(tok.decode(ids) == text);
  }
}

TEST_CASE("encode is thread-safe and deterministic", "[unit][text]") {
  const Tokenizer& tok = fkv::test::qwen3_tokenizer();
  const auto& corpus = fkv::test::ref_corpus();
  std::vector<std::vector<int32_t>> serial;
  for (size_t i = 0; i < 400; ++i) serial.push_back(tok.encode(corpus[i]));
  std::vector<std::vector<int32_t>> a(400), b(400);
  std::thread t1([&] { for (size_t i = 0; i < 400; ++i) a[i] = tok.encode(corpus[i]); });
  std::thread t2([&] { for (size_t i = 400; i-- > 0;) b[i] = tok.encode(corpus[i]); });
  t1.join();
  t2.join();
  CHECK(a == serial);
  CHECK(b == serial);
}

TEST_CASE("encode speed: 100 KB of text", "[.bench][text]") {
  std::string text;
  for (const auto& s : fkv::test::ref_corpus()) {
    if (text.size() >= 100 * 1024) break;
    text += s + "\n";
  }
  text.resize(fkv::text::utf8::valid_prefix(text.substr(0, 100 * 1024)));
  auto time_it = [&](const Tokenizer& tok, const char* label) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok.encode(text);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::cout << label << ": " << text.size() << " bytes -> " << ids.size() << " tokens in " << ms << " ms\n";
    return ms;
  };
  const Tokenizer cold_qwen = Tokenizer::from_file(fkv::test::qwen3_tokenizer_dir());
  CHECK(time_it(cold_qwen, "qwen3 cold cache") < 1000.0);
  CHECK(time_it(cold_qwen, "qwen3 warm cache") < 1000.0);
  const Tokenizer cold_smol = Tokenizer::from_file(fkv::test::smollm2_gguf());
  CHECK(time_it(cold_smol, "smollm2 cold cache") < 1000.0);
  const auto t0 = std::chrono::steady_clock::now();
  const Tokenizer loaded = Tokenizer::from_file(fkv::test::qwen3_tokenizer_dir());
  std::cout << "qwen3 tokenizer.json load: "
            << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() << " ms\n";
}
