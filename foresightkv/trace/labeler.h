// Oracle labelling of a trace (fkv-trace label/generate; foresightkv-spec.md §C, §E.2): one full-cache
// teacher-forced pass in chunks gives per-token NLL and predictive entropy (position i predicts token i+1)
// and the post-RoPE q/k of every layer (taps); then, one layer at a time, the block-pooled attention is
// streamed per KV head and query block (golden/schedule.h, never T x T) and the greedy Golden Eviction
// schedule is computed for every requested budget. Peak memory: the q/k of all layers (fp32,
// T x (Hq + Hkv) x D x layers) plus O(T^2 / W) per KV head for the pooled scores.
#pragma once
#include <vector>

#include "foresightkv/model/transformer.h"
#include "foresightkv/trace/trace_file.h"

namespace fkv::trace {

struct LabelOptions {
  std::vector<int64_t> budgets;  // B values (each a multiple of window); empty = NLL/entropy only
  int64_t window = 0;            // W
  bool bf16_probs = true;        // parity: attention probabilities rounded to bf16 before pooling (spec §C.2)
  int64_t chunk = 512;           // forward chunk length of the full-cache pass
  bool replace = false;          // recompute labels that already exist for a (B, W)
};

/// Fill t.nll/t.entropy (when absent) and add GoldenLabels for every budget not yet present.
void label_trace(const model::Transformer& model, Trace& t, const LabelOptions& opt);

/// The oracle's future score of every position at every step of a (B, W) schedule, for every layer: fp32
/// [layers, Hkv, T, S] = golden::future_scores of the same full-cache pass label_trace runs (spec §C.2). Labels
/// any cache state a policy reaches on this trace (on-policy judge data, train/feature_store.h).
at::Tensor future_score_tables(const model::Transformer& model, const Trace& t, int64_t budget, int64_t window,
                               bool bf16_probs = true, int64_t chunk = 512);

/// Survivors after replaying a schedule: for labels [layers, steps, Hkv, W] of a T-token trace with budget B,
/// the absolute positions alive in the model's cache right after eviction step `step` (rows[0:B] then the
/// newest W are appended by the next chunk): returns [layers, Hkv, B] int64.
at::Tensor replay_survivors(const GoldenLabels& labels, int64_t T, int64_t step);

}  // namespace fkv::trace
