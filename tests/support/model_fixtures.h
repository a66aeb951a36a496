// Shared helpers for model tests: golden bundles (tests/data/tiny_models/<case>), chunked runs through
// the KV cache, and tensor comparison with a readable failure report.
#pragma once
#include <ATen/ATen.h>

#include "support/catch.h"
#include <string>
#include <vector>

#include "foresightkv/golden/reference_model.h"
#include "foresightkv/io/safetensors.h"
#include "foresightkv/model/transformer.h"
#include "support/paths.h"

namespace fkv::test {

struct Bundle {
  std::string dir;
  std::vector<int64_t> ids;
  at::Tensor logits;  // [T, V] fp32
};

inline Bundle load_bundle(const std::string& name) {
  Bundle b;
  b.dir = test_data("tiny_models/" + name);
  io::SafetensorsFile f(b.dir + "/golden.safetensors");
  const io::StTensor& ids = f.tensors().at("ids");
  const io::StTensor& lg = f.tensors().at("logits");
  REQUIRE(ids.dtype == io::StDtype::I64);
  REQUIRE(lg.dtype == io::StDtype::F32);
  b.ids.resize(static_cast<size_t>(ids.numel()));
  std::memcpy(b.ids.data(), ids.data, ids.nbytes);
  b.logits = at::empty(lg.shape, at::kFloat);
  std::memcpy(b.logits.data_ptr<float>(), lg.data, lg.nbytes);
  return b;
}

inline const std::vector<std::string>& bundle_names() {
  static const std::vector<std::string> names = {"llama_g1", "llama_g3_tied_oldrope", "llama3_rope_sharded",
                                                 "qwen2_g2_bias", "qwen3_g4_hd16"};
  return names;
}

/// Logits [T, V] of `ids` fed through a fresh cache `chunk` tokens at a time (first chunk `first`).
inline at::Tensor run_chunked(const model::Transformer& m, const std::vector<int64_t>& ids, int64_t chunk,
                              int64_t first = -1) {
  const int64_t T = static_cast<int64_t>(ids.size());
  cache::KvCache kv = m.make_cache(1, T);
  std::vector<at::Tensor> out;
  int64_t s = 0;
  while (s < T) {
    const int64_t n = std::min(s == 0 && first > 0 ? first : chunk, T - s);
    at::Tensor idt = at::tensor(std::vector<int64_t>(ids.begin() + s, ids.begin() + s + n), at::kLong).view({1, n});
    at::Tensor pos = at::arange(s, s + n, at::kLong).view({1, n});
    out.push_back(m.forward(idt, pos, kv, model::Logits::All)[0]);
    s += n;
  }
  return at::cat(out, 0);
}

/// Max |a - b| with a report of where; REQUIREs shapes equal and no NaN.
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  REQUIRE_FALSE(a.isnan().any().item<bool>());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace fkv::test
