// fkv-train sft: supervised distillation of Golden Eviction into the judge (foresightkv-spec.md §D).
// Data: labelled trace files (fkv-trace) -> feature store along the golden trajectory (train/feature_store.h).
// Loss (§D.3): per layer, per row r = (step, KV head), the pairwise hinge over every strictly ordered pair of the
// oracle targets o = -alpha (o_i > o_k: i has LOWER future attention, so phi_i should exceed phi_k by the margin):
//   l_r = mean_{(i,k): o_i > o_k} max(0, m - (phi_i - phi_k));   l_layer = mean over rows with >= 1 pair;
//   loss(sample) = sum over layers;  a step sums the gradients of its `batch` samples (no division, as the code).
// Optimiser (§D.4): Adam (torch semantics, no weight decay), lr schedule: warm-up factor k / warmup for the first
// `warmup` updates (so the first update uses lr 0), then 0.5 (1 + cos(pi (k - warmup) / (steps - warmup))); global
// gradient-norm clip; seed from the config. Every value is a config key (configs/train/sft_*.json).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "foresightkv/core/json.h"
#include "foresightkv/judge/judge.h"
#include "foresightkv/model/weights.h"

namespace fkv::train {

struct SftConfig {
  std::string model;              // GGUF / HF dir / registry name
  std::string traces;             // labelled trace file (fkv-trace generate/label)
  std::string eval_traces;        // optional held-out trace file: ranking loss/accuracy logged
  std::string store, eval_store;  // feature-store directories (default OUTPUT/store, OUTPUT/eval_store)
  int64_t budget = 64, window = 16;
  std::string variant = "intended";  // judge features: intended | parity (judge/features.h)
  int64_t steps = 1000, batch = 4, warmup = 10;
  double lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, clip = 1.0, margin = 0.01;
  int64_t hidden = 16;
  double init_std = 0.02;
  uint64_t seed = 422;
  int64_t checkpoint_every = 200, eval_every = 0, log_every = 1;
  int64_t limit = 0, eval_limit = 0;  // traces used (0 = all)
  int64_t threads = 2, extract_batch = 4;
  std::string device = "cpu";  // cpu | cuda | cuda:N: where the frozen LLM runs (extraction, rollouts); not part of
                               // the resume check, like threads
  // On-policy rounds (beyond the paper, docs/training.md): after the first `steps` updates on the golden trajectory,
  // `rounds` times: roll the current judge out on the first `round_limit` training traces (0 = all; `round_policy`
  // sampled = foresightkv, topk = foresightkv_topk), label the states it reaches with the oracle, and train
  // `round_steps` more updates (warm-up + cosine restarted) on: golden = the golden store only (no rollouts: the
  // equal-compute control), judge = the on-policy states of all rounds so far, mixed = golden + all on-policy states.
  std::string trajectory = "golden";
  int64_t rounds = 0, round_steps = 300, round_limit = 0;
  std::string round_policy = "sampled";
  int64_t total_steps() const { return steps + rounds * round_steps; }

  json to_json() const;
  /// Strict keys (every field above); unknown keys fail with the list of valid ones.
  static SftConfig from_json(const json& j);
  /// The config keys in order (for the CLI's --KEY overrides, dashes for underscores).
  static const std::vector<std::string>& keys();
};

/// Pairwise hinge of rows: phi [R, n], target [R, n] -> mean over rows having >= 1 strictly ordered pair of the
/// mean hinge over that row's pairs. Differentiable in phi. Returns a 0-dim tensor (0 when no row has a pair).
at::Tensor pairwise_hinge(const at::Tensor& phi, const at::Tensor& target, double margin);
/// The same, with explicit loops in double (test oracle).
double pairwise_hinge_reference(const at::Tensor& phi, const at::Tensor& target, double margin);

/// Ranking accuracy of rows: |top-W(phi) ∩ drops| / W averaged over rows; phi [R, n], drops [R, W].
double ranking_accuracy(const at::Tensor& phi, const at::Tensor& drops);

/// The learning-rate factor of update k (0-based).
double lr_factor(int64_t k, int64_t warmup, int64_t steps);

/// Adam with torch.optim.Adam's update (bias-corrected, eps outside the sqrt, no weight decay).
struct Adam {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t t = 0;
  std::vector<at::Tensor> m, v;
  void init(const std::vector<at::Tensor>& params);
  /// One update of every parameter with its .grad() (a parameter without grad is treated as zero grad).
  void step(const std::vector<at::Tensor>& params, double lr);
};

/// Global L2 norm of the gradients; scales them by clip / (norm + 1e-6) when that is < 1 (torch clip_grad_norm_).
double clip_grad_norm(const std::vector<at::Tensor>& params, double clip);

/// Strict config keys: throws InvalidArgument naming the first key of `j` (an object) not in `keys`, with the list
/// of valid ones (`what` = "sft config", ...).
void check_config_keys(const json& j, const std::vector<std::string>& keys, const char* what);
/// Load options for the frozen LLM of a training run: `device` (cpu | cuda | cuda:N), everything else auto
/// (native kernels on the CPU; aten + bf16 on CUDA). Resolved: throws when the device is not usable.
model::LoadOptions load_options(const std::string& device);

/// Data order shared by the trainers: epoch e is a Fisher-Yates permutation of [0, n) seeded by (seed, e); item g
/// is entry g % n of epoch g / n. A pure function of (seed, g): resuming needs no RNG state.
class DataOrder {
 public:
  DataOrder(uint64_t seed, int64_t n) : seed_(seed), n_(n) {}
  int64_t item(int64_t g);

 private:
  uint64_t seed_;
  int64_t n_, epoch_ = -1;
  std::vector<int64_t> perm_;
};

/// A training checkpoint: the judge (its metadata = meta + adam_t) and Adam's moments as extra tensors
/// adam.m.<param> / adam.v.<param>, written atomically.
void save_training_checkpoint(const judge::Judge& j, const Adam& opt, const std::string& path, json meta);
/// A run's state at `step`: OUT/checkpoint.safetensors (meta + step), and with `snapshot` or `final_too` the judge
/// alone as OUT/step_NNNNNN.safetensors (kind "judge"); `final_too` also writes OUT/final.safetensors.
void save_run_state(const judge::Judge& j, const Adam& opt, const std::string& out, json meta, int64_t step,
                    bool snapshot, bool final_too);
/// Restore Adam's moments and step count from such a checkpoint (opt.init must have run for j's parameters).
void load_adam_state(Adam& opt, const judge::Judge& j, const std::string& path);
/// Keep the JSONL log's lines of steps <= `step` (resume: the killed run may have logged past its checkpoint);
/// lines with split `drop_split_at_step` at exactly `step` are dropped too (they are written again).
void truncate_log(const std::string& path, int64_t step, const std::string& drop_split_at_step = "");

struct SftResult {
  std::string final_path;
  int64_t steps_run = 0;
  double seconds = 0, extract_seconds = 0, train_seconds = 0;
  json last_log;
};

/// Run (or resume) SFT into `output_dir` (log.jsonl, checkpoint.safetensors, step_NNNNNN.safetensors,
/// final.safetensors). `resume`: continue from output_dir/checkpoint.safetensors bit-identically.
/// `stop_after` > 0: return right after that step without saving anything more (a killed run; tests).
SftResult run_sft(const SftConfig& cfg, const std::string& output_dir, bool resume, int64_t stop_after = 0);

}  // namespace fkv::train
