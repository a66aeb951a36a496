// Decoder-only transformer (Llama, Qwen2, Qwen3) with HF semantics (engineering.md §1), run against
// an external evictable KV cache. One entry point for a chunk of new tokens (prefill chunk or one
// decode token), batch >= 1, explicit absolute positions. Queries attend to every live cache entry
// whose position is <= their own (the chunk's own keys are appended first, so attention within the
// chunk is causal by position). The model knows nothing about eviction policies: taps expose
// post-RoPE queries/keys and, on request, attention probabilities to whoever asks.
// Two backends compute the same function (LoadOptions::backend): "native", hand-written CPU kernels on the file's
// weight blocks, and "aten", the forward written once in ATen ops on dense fp32 weights (the readable path the
// device-neutral/CUDA work builds on); both are checked against HF transformers.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "foresightkv/cache/kv_cache.h"
#include "foresightkv/io/model_config.h"
#include "foresightkv/model/weights.h"

namespace fkv::model {

/// Observer of per-layer attention internals during forward().
class ForwardTaps {
 public:
  virtual ~ForwardTaps() = default;
  /// Post-RoPE queries q [n_seq, Hq, T, D] and keys/values k, v [n_seq, Hkv, T, D] (fp32) of the chunk,
  /// before they are appended to the cache.
  virtual void on_qkv(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {}
  /// Return true to receive attention probabilities of `layer` for this forward.
  virtual bool wants_attention(int64_t layer) const { return false; }
  /// probs [n_seq, Hq, T, S] fp32 over cache slots 0..S-1 of each query's KV head after the append
  /// (S = max live length of the layer; slots past a head's length and masked slots are 0).
  virtual void on_attention(int64_t layer, const at::Tensor& probs) {}
};

enum class Logits { None, Last, All };

class Transformer {
 public:
  /// Load from an HF model directory (config.json + safetensors) or a .gguf file.
  static std::unique_ptr<Transformer> load(const std::string& path, const LoadOptions& opt = {});

  const io::ModelConfig& config() const { return weights_->config; }
  const Weights& weights() const { return *weights_; }

  /// A cache shaped for this model. kv_dtype: at::kFloat (exact) or at::kHalf (half the bytes; the
  /// decode kernel converts on load, so attention math stays fp32).
  cache::KvCache make_cache(int64_t n_seq, int64_t capacity, at::ScalarType kv_dtype = at::kFloat) const;

  /// ids, pos: [n_seq, T] int64. Appends the chunk's K/V to `cache` and returns logits
  /// [n_seq, T, V] (All), [n_seq, V] (Last) or an undefined tensor (None), fp32.
  /// Throws InvalidArgument for ids outside the vocabulary or a cache of the wrong shape/capacity.
  /// last_index (Last only; empty = T - 1 for every sequence): the chunk row whose logits sequence s gets,
  /// for batches whose prompts end at different rows of a padded chunk.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& pos, cache::KvCache& cache,
                     Logits logits = Logits::Last, ForwardTaps* taps = nullptr,
                     const std::vector<int64_t>& last_index = {}) const;

  explicit Transformer(std::shared_ptr<const Weights> w);
  ~Transformer();

 private:
  struct Dense;  // the aten backend's dense fp32 matrices
  at::Tensor forward_aten(const at::Tensor& ids, const at::Tensor& pos, cache::KvCache& cache, Logits logits,
                          ForwardTaps* taps, const std::vector<int64_t>& last_index) const;

  std::shared_ptr<const Weights> weights_;
  at::Tensor inv_freq_;  // [D/2] fp32
  std::unique_ptr<const Dense> dense_;  // set when weights_->backend == "aten"
};

}  // namespace fkv::model
