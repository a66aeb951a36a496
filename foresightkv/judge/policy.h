// The learned eviction policies (foresightkv-spec.md §B.6, §B.7), registered with the eviction framework so
// that fkv-model generate, fkv-eval fidelity and fkv-eval generate run them like any baseline:
//   foresightkv       score the candidates with the judge, take the 2D largest phi (D = entries to drop),
//                     draw D distinct slots from softmax(phi over that pool) without replacement (§B.6);
//   foresightkv_topk  drop the D largest phi (deterministic; the paper's pure Top-K ablation, §B.7).
// Survivors keep their positional order, the newest `protect` entries are never candidates. The random stream of
// a draw is keyed by (seed, sequence stream, layer, event, KV head), like the `random` baseline, so a sample
// evicts the same way in any batch or row. The judge file is EvictionConfig::judge (resolve_judge() fills it).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "foresightkv/evict/policy.h"
#include "foresightkv/judge/features.h"
#include "foresightkv/judge/judge.h"

namespace fkv::judge {

/// Register "foresightkv" and "foresightkv_topk" with evict::make_policy (idempotent, thread-safe).
void register_policies();

/// Sample `d` distinct indices of `scores` (one row) without replacement, each draw from softmax over the
/// remaining entries (= torch.multinomial(softmax(scores), d, replacement=False)), via Gumbel-top-k with
/// uniforms from `rng`. Returns indices in draw order.
std::vector<int64_t> sample_without_replacement(const float* scores, int64_t n, int64_t d, std::mt19937_64& rng);

/// Drop sets of one event: phi [Hkv, C] (candidates), d entries to drop per head. sampled: top-min(2d, C) pool
/// then softmax sampling without replacement (parity: scores rounded to bf16 first, as the official code's bf16
/// softmax); otherwise the d largest (ties: the lower slot first). Returns [Hkv, d] int64 slots. pool (sampled
/// only, optional): set to the [Hkv, min(2d, C)] int64 slots the sampler drew from, by descending phi.
at::Tensor choose_drops(const at::Tensor& phi, int64_t d, bool sampled, bool parity, uint64_t seed, uint64_t stream,
                        int64_t layer, int64_t event, at::Tensor* pool = nullptr);

/// Keep slots [Hkv, N - d] (ascending, the protected tail included) from drop slots [Hkv, d] of an N-entry cache.
at::Tensor keep_from_drops(const at::Tensor& drops, int64_t n);

class JudgePolicy : public evict::Policy {
 public:
  JudgePolicy(std::shared_ptr<const Judge> judge, bool sampled, const evict::EvictionConfig& resolved);
  std::string name() const override { return sampled_ ? "foresightkv" : "foresightkv_topk"; }
  bool needs_attention() const override { return true; }
  bool needs_accumulators() const override { return true; }
  bool first_event_sees_history(evict::Variant) const override { return true; }
  at::Tensor select(const evict::LayerView& view) override;
  /// Seconds spent in feature building + judge scoring (the judge's share of eviction time).
  double judge_seconds() const { return judge_seconds_; }

 private:
  std::shared_ptr<const Judge> judge_;
  bool sampled_, parity_;
  FeatureOptions feat_;
  uint64_t seed_;
  double judge_seconds_ = 0;
};

/// Load (and cache by path + mtime) the judge a config names; checks its variant against the config's.
std::shared_ptr<const Judge> load_judge_cached(const std::string& path);

/// The committed judge for a model: judges/*.safetensors (under FKV_ROOT or the source tree) whose metadata
/// names this model's sha256, the one whose (B, L) is nearest to (budget, window) (|log2 B ratio| + |log2 L
/// ratio|, ties: larger B). Returns "" when none exists.
std::string find_committed_judge(const std::string& model_sha256, int64_t budget, int64_t window,
                                 const std::string& judges_dir = "");

/// For a foresightkv* config: with cfg.judge set, load it and check it against the model (shape; sha256 when the
/// judge records one, a mismatch is an error); otherwise fill cfg.judge with the committed judge for the model,
/// or throw InvalidArgument saying how to train one. Logs which file was loaded. No-op for other policies.
/// model_shape.n_layer == 0 skips the shape check (done by the caller once the model is loaded).
void resolve_judge(evict::EvictionConfig& cfg, const std::string& model_path, const std::string& model_sha256,
                   const JudgeShape& model_shape);

/// The directory of committed judges: $FKV_JUDGES, else $FKV_ROOT/judges, else the source tree's judges/.
std::string judges_dir();

}  // namespace fkv::judge
