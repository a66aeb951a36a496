// The learned judge of ForesightKV (foresightkv-spec.md §B): one tiny MLP per (layer, KV head) that maps a
// cached token's features (post-RoPE key, value, 8·G attention statistics; judge/features.h) to an
// "evict-ness" score phi (larger = evict, §B.5). Per layer the weights are head-wise: W1 [Hkv, F, H1],
// b1 [Hkv, H1], W2 [Hkv, H1, 1], b2 [Hkv, 1], exact (erf) GELU between, no normalisation (§B.3). All heads of
// a layer are evaluated as one batched product (baddbmm over the head axis), never a loop over heads.
//
// Checkpoints are safetensors with the official key names (§B.1):
//   model.layers.{l}.self_attn.judge_model.fc1.weight [Hkv, F, 16]   ...fc1.bias [Hkv, 16]
//   model.layers.{l}.self_attn.judge_model.fc2.weight [Hkv, 16, 1]   ...fc2.bias [Hkv, 1]
// plus JSON metadata under "fkv_judge" (model sha256, feature variant, B, W, training config, data hash, step).
// Loading reads only the judge_model keys, so an official HF checkpoint directory (LLM + judge, bf16) imports
// directly. Other tensors in the file (optimizer state of a training checkpoint) are ignored here.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "foresightkv/core/json.h"
#include "foresightkv/io/safetensors.h"

namespace fkv::judge {

inline constexpr int kJudgeFormatVersion = 1;

struct JudgeShape {
  int64_t n_layer = 0, n_head_kv = 0, head_dim = 0, group = 0, hidden = 16;
  int64_t n_feature() const { return 2 * head_dim + 8 * group; }  // F = 2d + 8G (spec §B.2)
  bool operator==(const JudgeShape& o) const {
    return n_layer == o.n_layer && n_head_kv == o.n_head_kv && head_dim == o.head_dim && group == o.group &&
           hidden == o.hidden;
  }
};

class Judge {
 public:
  Judge() = default;
  /// Fresh weights: every head-wise weight and bias ~ N(0, init_std) (the official init, §B.3), from a CPU
  /// generator seeded with `seed` (deterministic; layer by layer, fc1.weight, fc1.bias, fc2.weight, fc2.bias).
  static Judge init(const JudgeShape& shape, double init_std, uint64_t seed);
  /// Load a judge checkpoint (a .safetensors file) or an official HF checkpoint (file or directory, sharded
  /// or not): only the judge_model keys are read and converted to fp32. Throws FormatError when keys are
  /// missing or shapes are inconsistent. `meta()` is the file's fkv_judge metadata (empty for HF imports).
  static Judge load(const std::string& path);

  const JudgeShape& shape() const { return shape_; }
  const json& meta() const { return meta_; }
  json& meta() { return meta_; }

  /// phi [Hkv, n] for features x [Hkv, n, F] (fp32) of `layer`. Differentiable w.r.t. the parameters when
  /// they require grad (training).
  at::Tensor score(int64_t layer, const at::Tensor& x) const;

  /// Parameters in a fixed order (layer by layer: fc1.weight, fc1.bias, fc2.weight, fc2.bias) with their
  /// official key names.
  std::vector<at::Tensor> parameters() const;
  std::vector<std::string> parameter_names() const;
  void set_requires_grad(bool on);
  /// Multiply every layer's output layer (fc2 weight and bias) by s: phi becomes s * phi (same orderings; the
  /// foresightkv sampler's softmax then runs at temperature 1 / s). In place; keeps requires_grad. The metadata's
  /// "score_scale" (1 when absent) is multiplied by s: it is the cumulative scale since training.
  void scale_output(double s);
  /// A deep copy (detached tensors).
  Judge clone() const;
  /// A deep copy in another dtype (kDouble for gradient checks).
  Judge to(at::ScalarType dtype) const;

  /// Write atomically: judge tensors (fp32) with official names + `extra` tensors (fp32, any names; e.g.
  /// optimizer state) + metadata {"fkv_judge": meta()}.
  void save(const std::string& path, const std::map<std::string, at::Tensor>& extra = {}) const;

  /// Check against a model: layers, KV heads, head_dim and group must match; throws InvalidArgument naming the
  /// judge file, what it was trained for and what the run has.
  void check_model(const JudgeShape& model_shape, const std::string& what) const;
  /// check_model, then take the model's head_dim and group (an imported official judge has no metadata).
  void adopt_model_shape(const JudgeShape& model_shape, const std::string& what);

 private:
  JudgeShape shape_;
  std::vector<at::Tensor> w1_, b1_, w2_, b2_;
  json meta_ = json::object();
};

/// Official key of a judge tensor: model.layers.{layer}.self_attn.judge_model.{fc1|fc2}.{weight|bias}.
std::string judge_key(int64_t layer, const char* fc, const char* kind);

/// Copy a safetensors tensor (F64/F32/F16/BF16/I64/I32/I16) into a new CPU tensor of the same dtype; throws
/// FormatError naming `path` for other dtypes or a size mismatch.
at::Tensor tensor_from_st(const io::StTensor& t, const std::string& path);

}  // namespace fkv::judge
