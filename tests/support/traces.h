// Random token traces for tests that need sequences but not their text.
#pragma once
#include <random>
#include <string>

#include "foresightkv/trace/trace_file.h"

namespace fkv::test {

/// T uniform token ids below `vocab` from mt19937_64(seed), the first `prompt` of them the prompt; id "r<seed>".
inline trace::Trace random_trace(int64_t T, int64_t prompt, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  trace::Trace t;
  t.id = "r" + std::to_string(seed);
  for (int64_t i = 0; i < T; ++i) t.tokens.push_back(static_cast<int32_t>(rng() % vocab));
  t.prompt_len = prompt;
  return t;
}

}  // namespace fkv::test
