// The oracle: a deliberately naive transformer written with plain ATen ops (fp32 by default, any
// device/dtype), HF semantics line by line (engineering.md §1). It shares no code with model/ or
// ops/ (weights are dequantized to dense tensors through io/, and the llama GGUF Q/K permutation is
// undone here independently). Used to check the fast runtime, in particular eviction: a forward with
// a per-(layer, KV head) key mask must equal the runtime after removing exactly those cache entries.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "foresightkv/io/model_config.h"

namespace fkv::golden {

class ReferenceModel {
 public:
  /// path: a .gguf file or an HF model directory.
  static ReferenceModel load(const std::string& path, at::ScalarType dtype = at::kFloat,
                             at::Device device = at::kCPU);

  const io::ModelConfig& config() const { return config_; }

  /// Full-sequence forward of ids [T] at positions 0..T-1. key_mask (optional) [n_layer, Hkv, T, T]
  /// bool: key_mask[l, g, i, j] = false hides key j from query i for every query head of KV head g
  /// in layer l (on top of the causal mask). Returns fp32 logits [T, V].
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& key_mask = {}) const;

 private:
  struct Layer {
    at::Tensor attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, q_norm, k_norm, ffn_norm, w_gate, w_up, w_down;
  };
  io::ModelConfig config_;
  at::Tensor embed_, lm_head_, norm_;
  std::vector<Layer> layers_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
};

}  // namespace fkv::golden
