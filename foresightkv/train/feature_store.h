// Feature store for judge training (foresightkv-spec.md §D.2). The LLM is frozen, so the judge's inputs along
// the golden trajectory of a trace do not depend on the judge: they are extracted once per (trace, B, W, variant)
// by a teacher-forced chunked run that evicts exactly the golden slots (harness::run_teacher_forced with the
// golden policy) while a recording wrapper captures, at every golden step s and layer l, the candidates' absolute
// positions and attention statistics, and the keys/values of every token as the golden run computed them.
//
// On-policy stores (RolloutOptions) hold the states the judge itself reaches, labelled by the oracle.
//
// One safetensors file per trace, STORE/NNNNNN.safetensors (written atomically, so extraction resumes after a
// kill: finished files are kept, the interrupted one is redone), plus STORE/store.json (model, B, W, variant,
// feature layout, source file; a rerun with other settings refuses to mix):
//   kv      [layers, Hkv, T, 2d]     F16   post-RoPE key ++ value of each absolute position (golden run)
//   pos     [layers, S, Hkv, B]      I32   absolute position of candidate slot n at step s
//   stats   [layers, S, Hkv, B, 8G]  BF16  attention statistics (judge/features.h layout)
//   target  [layers, S, Hkv, B]      F32   -alpha_s (the oracle's target scores, trace labels)
//   drops   [layers, S, Hkv, W]      I32   golden drop slots
// Bytes per trace ~ layers*Hkv*(4dT + S*B*(16G + 8) + 4SW); docs/training.md gives the numbers for the CPU models.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "foresightkv/core/json.h"
#include "foresightkv/evict/config.h"
#include "foresightkv/io/safetensors.h"
#include "foresightkv/judge/judge.h"
#include "foresightkv/model/transformer.h"
#include "foresightkv/trace/trace_file.h"

namespace fkv::train {

struct ExtractOptions {
  int64_t budget = 0, window = 0;
  evict::Variant variant = evict::Variant::Intended;
  int64_t batch = 4;        // traces per teacher-forced forward
  int64_t limit = 0;        // first N labelled traces (0 = all)
  std::string model_path, model_sha256, traces_path;
};

struct ExtractReport {
  int64_t traces = 0, extracted_now = 0, tokens_now = 0, steps = 0;
  double seconds = 0;
  int64_t bytes = 0;  // total store bytes
};

/// On-policy states (beyond the paper; fkv-train sft `trajectory: judge | mixed`): the cache states are those
/// `judge` reaches when it evicts (sampled like `foresightkv`, or the D largest like `foresightkv_topk`),
/// teacher-forced on the trace; the targets are the oracle's future scores of the candidates actually held,
/// -alpha_s(pos) from trace::future_score_tables (alpha depends only on a key's absolute position and the step),
/// and `drops` the W slots the oracle would evict from that state (golden::oracle_drops). Same file layout.
struct RolloutOptions {
  std::shared_ptr<const judge::Judge> judge;
  std::string judge_sha256;  // recorded in store.json: a rerun with another judge refuses to mix states
  bool sampled = true;
  uint64_t seed = 0;         // the draws' seed; the stream of a trace is its index in the store
  bool bf16_probs = true;    // the oracle's probabilities (use the trace file's label setting)
  int64_t chunk = 512;       // forward chunk of the full-cache pass that computes alpha
};

/// Extract (or complete) the store in `dir` for the traces of `set` that carry (B, W) labels with >= 1 step:
/// along the golden trajectory (rollout == nullptr) or along the judge's own (on-policy).
ExtractReport extract_features(const model::Transformer& model, const trace::TraceSet& set, const ExtractOptions& opt,
                               const std::string& dir, const RolloutOptions* rollout = nullptr);

/// One trace's stored tensors (CPU; kv F16, stats BF16 as stored).
struct StoredTrace {
  std::string id;
  int64_t length = 0, steps = 0;
  at::Tensor kv, pos, stats, target, drops;
};

class FeatureStore {
 public:
  /// Open a store directory (validates store.json and every file's shapes).
  explicit FeatureStore(const std::string& dir);
  int64_t size() const { return static_cast<int64_t>(files_.size()); }
  const json& manifest() const { return manifest_; }
  StoredTrace load(int64_t i) const;
  int64_t steps(int64_t i) const { return steps_[i]; }
  /// Tokens of all its traces.
  int64_t tokens() const {
    int64_t n = 0;
    for (int64_t x : lengths_) n += x;
    return n;
  }
  /// sha256 over the manifest's model/B/W/variant and every trace's (id, length, steps): the training data's identity.
  std::string data_hash() const;
  int64_t n_layer() const { return n_layer_; }
  int64_t n_head_kv() const { return n_head_kv_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t group() const { return group_; }
  int64_t budget() const { return budget_; }
  int64_t window() const { return window_; }

 private:
  std::string dir_;
  json manifest_;
  std::vector<std::string> files_, ids_;
  std::vector<int64_t> steps_, lengths_;
  int64_t n_layer_ = 0, n_head_kv_ = 0, head_dim_ = 0, group_ = 0, budget_ = 0, window_ = 0;
};

/// Judge input [Hkv, S*B, F] (fp32) of layer `l` of a stored trace (rows ordered step-major: s*B + n).
at::Tensor assemble_features(const StoredTrace& t, int64_t layer);

}  // namespace fkv::train
