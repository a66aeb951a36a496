// Trace sets: token sequences (prompt + response) with per-token NLL/entropy under the full cache and the
// Golden Eviction labels, in one safetensors file (docs/trace_format.md). A Python user reads it with
// `safetensors.numpy.load_file` and `json.loads(safe_open(...).metadata()["fkv_trace"])`. Also reads the plain
// JSONL form (one {"prompt_ids": [...], "response_ids": [...]} per line) that fkv-eval fidelity accepts.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "foresightkv/core/json.h"

namespace fkv::trace {

inline constexpr int kTraceFormatVersion = 1;

struct GoldenLabels {
  int64_t budget = 0, window = 0;
  at::Tensor drops;   // [layers, steps, Hkv, W] int32: cache slots dropped at each step (ascending)
  at::Tensor scores;  // [layers, steps, Hkv, B] fp32: target scores -alpha over the B candidates
};

struct Trace {
  std::string id;
  std::vector<int32_t> tokens;  // prompt + response
  int64_t prompt_len = 0;
  at::Tensor nll;               // [T-1] fp32: nll[i] = -log p(tokens[i+1] | tokens[0..i]) (undefined if absent)
  at::Tensor entropy;           // [T-1] fp32: entropy of the predictive distribution at position i
  std::vector<GoldenLabels> labels;
  json meta = json::object();   // question, answer, text, correct, seed, sample, ...

  const GoldenLabels* find_labels(int64_t budget, int64_t window) const;
  int64_t length() const { return static_cast<int64_t>(tokens.size()); }
};

struct TraceSet {
  json header = json::object();  // model {path, sha256, n_layer, n_head_kv}, config, seed, created_by
  std::vector<Trace> traces;
};

/// Read a trace file (.safetensors; magic/version/shapes validated) or a JSONL token file (any other
/// extension; fkv-eval generate rows are ordered by (problem_index, sample_index)). Throws FormatError naming
/// the file and what is wrong.
TraceSet read_trace_set(const std::string& path);
/// Write atomically (temporary file + rename).
void write_trace_set(const std::string& path, const TraceSet& set);

}  // namespace fkv::trace
