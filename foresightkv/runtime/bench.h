// `fkv-model bench`: prefill and decode throughput at several context lengths, measured on the real
// runtime path (chunked prefill into an fp32 KV cache, then greedy token-by-token decode).
#pragma once
#include <cstdint>
#include <string>
#include <ATen/core/ScalarType.h>
#include <vector>

#include "foresightkv/core/json.h"
#include "foresightkv/model/transformer.h"

namespace fkv::runtime {

struct BenchOptions {
  std::vector<int64_t> contexts = {128, 1024, 4096};
  int64_t decode_tokens = 32;
  int64_t prefill_chunk = 512;
  int64_t threads = 2;
  uint64_t seed = 0;
  int64_t repeats = 1;  // best of N for each measurement
  std::string kv_dtype = "f32";  // "f32" | "f16"
};

/// Runs the benchmark and returns {"results": [{context, prefill_tokens_per_s, decode_tokens_per_s,
/// peak_rss_bytes, ...}], "model", "dtype_path", "threads", ...}.
json run_bench(const model::Transformer& m, const BenchOptions& opt);

/// "f32" -> kFloat, "f16" -> kHalf; throws InvalidArgument otherwise.
at::ScalarType parse_kv_dtype(const std::string& s);

/// Peak resident set size of this process so far (bytes).
int64_t peak_rss_bytes();
/// Current resident set size (bytes).
int64_t current_rss_bytes();

}  // namespace fkv::runtime
