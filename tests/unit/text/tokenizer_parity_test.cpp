// Exact parity with HF on the committed reference corpus (tests/data/text, scripts/make_tokenizer_refs.py):
// ids (with and without add_special_tokens), decode with skip_special_tokens false/true, streaming decode
// equal to decode, and decode-only cases of random ids (partial UTF-8 -> U+FFFD, special tokens). Covers the
// Qwen3 tokenizer.json, the SmolLM2 GGUF vocabulary (HF AutoTokenizer gguf_file= oracle) and two small
// synthetic tokenizer.json files that exercise options the real files do not use.
#include <catch2/catch.hpp>

#include <iostream>

#include "text_test_util.h"

using fkv::json;
using fkv::text::StreamDecoder;
using fkv::text::Tokenizer;

namespace {

struct Parity {
  size_t encoded = 0, encode_mismatch = 0, decoded = 0, decode_mismatch = 0, stream_mismatch = 0, roundtrip = 0;
  std::vector<std::string> examples;
  void note(const std::string& what) {
    if (examples.size() < 8) examples.push_back(what);
  }
};

std::string show_ids(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size() && i < 40; ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s + (ids.size() > 40 ? ",...]" : "]");
}

std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  StreamDecoder dec(tok, skip);
  std::string out;
  for (int32_t id : ids) out += dec.put(id);
  return out + dec.finish();
}

void check_decode(const Tokenizer& tok, const std::vector<int32_t>& ids, const std::string& want,
                  const std::string& want_skip, Parity& p, const std::string& label) {
  ++p.decoded;
  const std::string got = tok.decode(ids, false);
  const std::string got_skip = tok.decode(ids, true);
  if (got != want || got_skip != want_skip) {
    ++p.decode_mismatch;
    p.note(label + ": decode " + show_ids(ids) + " -> '" + got + "' / skip '" + got_skip + "', HF '" + want +
           "' / skip '" + want_skip + "'");
  }
  if (stream_decode(tok, ids, false) != got || stream_decode(tok, ids, true) != got_skip) {
    ++p.stream_mismatch;
    p.note(label + ": streaming decode differs from decode for " + show_ids(ids));
  }
}

// Rows {"i"| "text", "ids", "ids_special"?, "decoded"?, "decoded_skip"?} or {"decode_ids", "decoded", "decoded_skip"}.
Parity run_refs(const Tokenizer& tok, const std::string& refs, const std::vector<std::string>* corpus) {
  Parity p;
  for (const json& row : fkv::test::read_jsonl(fkv::test::text_ref(refs))) {
    if (row.contains("decode_ids")) {
      check_decode(tok, row["decode_ids"].get<std::vector<int32_t>>(), row["decoded"].get<std::string>(),
                   row["decoded_skip"].get<std::string>(), p, "decode-only");
      continue;
    }
    const std::string text =
        row.contains("text") ? row["text"].get<std::string>() : corpus->at(row["i"].get<size_t>());
    const auto want = row["ids"].get<std::vector<int32_t>>();
    const auto want_special = row.contains("ids_special") ? row["ids_special"].get<std::vector<int32_t>>() : want;
    ++p.encoded;
    const auto got = tok.encode(text, false);
    const auto got_special = tok.encode(text, true);
    if (got != want || got_special != want_special) {
      ++p.encode_mismatch;
      p.note("encode '" + text.substr(0, 120) + "': got " + show_ids(got) + " HF " + show_ids(want));
    }
    const std::string dec = row.contains("decoded") ? row["decoded"].get<std::string>() : text;
    const std::string dec_skip = row.contains("decoded_skip") ? row["decoded_skip"].get<std::string>() : dec;
    check_decode(tok, want, dec, dec_skip, p, "corpus");
    if (!row.contains("decoded") && tok.decode(got) == text) ++p.roundtrip;  // HF round-trips this text exactly
  }
  return p;
}

void report(const std::string& name, const Parity& p) {
  std::cout << name << " parity: encode " << (p.encoded - p.encode_mismatch) << "/" << p.encoded << ", decode "
            << (p.decoded - p.decode_mismatch) << "/" << p.decoded << ", streaming mismatches " << p.stream_mismatch
            << ", exact round trips " << p.roundtrip << "\n";
  for (const auto& e : p.examples) std::cout << "  " << e << "\n";
  CHECK(p.encoded > 0);
  CHECK(p.encode_mismatch == 0);
  CHECK(p.decode_mismatch == 0);
  CHECK(p.stream_mismatch == 0);
}

}  // namespace

TEST_CASE("Qwen3 tokenizer.json matches HF on the reference corpus", "[unit][text]") {
  const auto& corpus = fkv::test::ref_corpus();
  REQUIRE(corpus.size() >= 2000);
  report("qwen3", run_refs(fkv::test::qwen3_tokenizer(), "qwen3_refs.jsonl", &corpus));
}

TEST_CASE("SmolLM2 GGUF tokenizer matches HF (gguf_file=) on the reference corpus", "[unit][text]") {
  const auto& corpus = fkv::test::ref_corpus();
  report("smollm2", run_refs(fkv::test::smollm2_tokenizer(), "smollm2_refs.jsonl", &corpus));
}

TEST_CASE("synthetic tokenizer.json variants match HF tokenizers", "[unit][text]") {
  for (const char* v : {"a", "b"}) {
    SECTION(std::string("variant ") + v) {
      const Tokenizer tok = Tokenizer::from_file(fkv::test::text_ref(std::string("synthetic_") + v + "/tokenizer.json"));
      report(std::string("synthetic_") + v, run_refs(tok, std::string("synthetic_") + v + "_refs.jsonl", nullptr));
    }
  }
}
