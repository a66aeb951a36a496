// Shared helpers for the text tests: JSONL reading, the committed reference corpus (tests/data/text, made by
// scripts/make_tokenizer_refs.py) and loading the real tokenizers (skipping with a reason when an optional
// input is absent; CI provides them all).
#pragma once
#include <fstream>
#include <string>
#include <vector>

#include "foresightkv/core/file.h"
#include "foresightkv/core/json.h"
#include "foresightkv/text/tokenizer.h"
#include "support/paths.h"
#include "support/skip.h"

namespace fkv::test {

inline std::vector<json> read_jsonl(const std::string& path) {
  if (!fkv::file_exists(path))
    FKV_SKIP(path + " is missing; regenerate it with .venv/bin/python scripts/make_tokenizer_refs.py");
  std::ifstream f(path);
  std::vector<json> rows;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

inline std::string text_ref(const std::string& name) { return test_data("text/" + name); }

inline const std::vector<std::string>& ref_corpus() {
  static const std::vector<std::string> corpus = [] {
    std::vector<std::string> c;
    for (const auto& row : read_jsonl(text_ref("corpus.jsonl"))) c.push_back(row["text"].get<std::string>());
    return c;
  }();
  return corpus;
}

inline std::string qwen3_tokenizer_dir() { return shared_data() + "/tokenizers/qwen3"; }

inline const fkv::text::Tokenizer& qwen3_tokenizer() {
  static const fkv::text::Tokenizer tok = [] {
    if (!fkv::file_exists(qwen3_tokenizer_dir() + "/tokenizer.json"))
      FKV_SKIP("Qwen3 tokenizer not found under " + qwen3_tokenizer_dir() + " (set FKV_DATA_DIR to the shared data)");
    return fkv::text::Tokenizer::from_file(qwen3_tokenizer_dir());
  }();
  return tok;
}

inline const fkv::text::Tokenizer& smollm2_tokenizer() {
  static const fkv::text::Tokenizer tok = [] {
    if (!fkv::file_exists(smollm2_gguf()))
      FKV_SKIP(smollm2_gguf() + " not found; fetch it with scripts/fetch_model.sh (or set FKV_MODEL_DIR)");
    return fkv::text::Tokenizer::from_file(smollm2_gguf());
  }();
  return tok;
}

}  // namespace fkv::test
