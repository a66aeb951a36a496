// Trace fidelity under eviction (fkv-eval fidelity; foresightkv-spec.md §A.1, §G.5, Tables 1-2).
// Every trace is run teacher-forced in chunks of L tokens at absolute boundaries 0, L, 2L, ...; each
// chunk attends to the current cache and causally within itself; after a chunk that leaves >= B + L
// entries the policy evicts to B with the newest L protected (the chunk that triggers an eviction has
// already attended to the full cache). This is the A-train schedule (first B tokens full, then chunks of
// L), so Golden Eviction labels line up slot for slot. The full-cache pass uses the same chunks, so a
// budget >= the trace length reproduces it bit for bit. Losses count response tokens only: token t
// (t >= prompt length) is scored from the logits at position t-1.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "foresightkv/core/json.h"
#include "foresightkv/evict/config.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/model/transformer.h"
#include "foresightkv/trace/trace_file.h"

namespace fkv::harness {

struct FidelityOptions {
  std::vector<std::string> policies;  // may include "full" (a reference row, ratio 1 by definition)
  std::vector<int64_t> budgets;
  evict::EvictionConfig base;         // window, variant, protect, query_window, seed, ... (policy/budget set per row)
  int64_t batch = 4;                  // traces per forward batch
  int64_t limit = 0;                  // first N traces (0 = all)
  bool kv_f16 = false;
  std::string per_token_path;         // optional JSONL with one line per (row, trace, scored token)
  double low_entropy_fraction = 0.8;  // tokens with entropy in the bottom 80 % are "low-entropy" (paper Table 1)
  bool share_prefix = true;           // evicted runs reuse the full run's work before the first possible eviction
  std::string model_path, model_sha256;  // foresightkv rows without base.judge: the committed judge for this model
};

struct FidelityRow {
  std::string policy, variant;
  int64_t budget = 0, window = 0;
  double lm_loss_ratio = 0, mean_delta_nll = 0, kl = 0, top1_agreement = 0;
  double low_entropy_loss_increase = 0, high_entropy_loss_increase = 0;  // relative: mean NLL evicted/full - 1
  double low_entropy_delta_nll = 0, high_entropy_delta_nll = 0;          // absolute mean delta NLL
  double mean_nll = 0, mean_nll_full = 0;
  int64_t tokens = 0, traces = 0, eviction_events = 0;
  double seconds = 0, eviction_seconds = 0;
  json resolved_config;
  json to_json() const;
};

struct FidelityReport {
  std::vector<FidelityRow> rows;
  int64_t traces = 0, tokens = 0;
  double full_seconds = 0;
};

/// One teacher-forced chunked run of `batch` under `cfg` (the A-train schedule above: chunks of cfg.window, Length
/// trigger; golden labels attached for policy "golden"), without logits, for callers that observe the eviction
/// events (fkv-train's feature extraction): `prepare` runs once the Evictor exists, before the first forward (e.g.
/// Evictor::set_policy with a recording wrapper).
struct TeacherForcedStats {
  int64_t events = 0;
  double seconds = 0, eviction_seconds = 0;
};
TeacherForcedStats run_teacher_forced(const model::Transformer& model, const std::vector<const trace::Trace*>& batch,
                                      const evict::EvictionConfig& cfg, bool kv_f16,
                                      const std::function<void(evict::Evictor&)>& prepare);

FidelityReport run_fidelity(const model::Transformer& model, const trace::TraceSet& traces,
                            const FidelityOptions& opt);

}  // namespace fkv::harness
