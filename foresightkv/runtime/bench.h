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

struct KernelBenchOptions {
  std::vector<int64_t> n_tok = {1, 16};       // activation rows per product (1 = single-stream decode)
  std::vector<int64_t> contexts = {1024};     // keys per KV head for the attention kernel
  int64_t threads = 2;
  double min_seconds = 0.3;                   // each timing repeats the call for at least this long
  int64_t repeats = 1;                        // best of N timings
};

/// `fkv-model bench-kernels`: the model's distinct weight matrices (kind, type, shape; first layer where
/// each occurs, and the output head) through ops::matmul (fp32 activations) and ops::matmul_q8 (int8
/// activations) at each n_tok, and the decode attention kernel on the model's head shape at each context
/// with fp32 and fp16 KV. Inputs are seeded random; weights are the model's own. Returns {"matmul": [...],
/// "attention": [...], ...} with milliseconds per call, weight GB/s and GMAC/s.
json run_kernel_bench(const model::Transformer& m, const KernelBenchOptions& opt);

/// "f32" -> kFloat, "f16" -> kHalf; throws InvalidArgument otherwise.
at::ScalarType parse_kv_dtype(const std::string& s);

/// Peak resident set size of this process so far (bytes).
int64_t peak_rss_bytes();
/// Current resident set size (bytes).
int64_t current_rss_bytes();

}  // namespace fkv::runtime
