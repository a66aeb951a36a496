// Eviction policies. A policy sees a read-only view of one (sequence, layer) of the cache at an
// eviction event plus the shared statistics, and returns for every KV head the slots to keep, in
// the physical order they should have afterwards. The runtime (evict/evictor.h) compacts the cache
// and the accumulators; a policy never touches storage. Policy semantics: docs/eviction.md and
// foresightkv-spec.md §F.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>

#include "foresightkv/evict/config.h"

namespace fkv::evict {

/// One (sequence, layer) at an eviction event. Every KV head holds N live entries (the runtime keeps
/// heads of a sequence in lockstep: equal appends, equal budgets). Tensors are fp32/int64 on CPU.
struct LayerView {
  int64_t seq = 0, layer = 0;  // seq: the cache row (batch slot)
  uint64_t stream = 0;     // the sequence's identity (Evictor::set_stream; default: its row): seeds random choices,
                           // so they do not depend on which slot or batch the sequence ran in
  int64_t event = 0;       // index of this (sequence, layer)'s eviction event, from 0
  int64_t n = 0;           // N: live entries per KV head
  int64_t budget = 0;      // B: entries to keep per head (< N)
  int64_t protect = 0;     // the newest `protect` slots must be kept (protect <= B)
  int64_t group = 1;       // G: query heads per KV head
  at::Tensor k, v;         // [Hkv, N, D] post-RoPE keys, values
  at::Tensor pos;          // [Hkv, N] absolute positions
  // Statistics (defined when the policy asked for them):
  at::Tensor logits;       // [Hkv, G, nq, N] q.k/sqrt(D) of the observed queries, -inf where key pos > query pos
  at::Tensor probs;        // [Hkv, G, nq, N] fp32 softmax of `logits` over all N entries, per query head
  at::Tensor cum;          // [Hkv, G, N] cumulative sum of observed attention (follows entries through evictions)
  at::Tensor dec;          // [Hkv, G, N] decayed accumulator (parity: a copy of cum, spec §P.2)
  at::Tensor row0_k;       // [Hkv, N0, D] keys of sequence 0 of this layer (parity R-KV batch-row behaviour)
};

class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string name() const = 0;
  /// Needs logits/probs of the observed queries at each event.
  virtual bool needs_attention() const { return false; }
  /// Needs the cum/dec accumulators (implies needs_attention).
  virtual bool needs_accumulators() const { return false; }
  /// The first event observes every query since the start (up to B + L), not only the last query_window:
  /// accumulators that start from the whole history (spec §P.2 (i)). Default: intended accumulator policies.
  virtual bool first_event_sees_history(Variant v) const { return v == Variant::Intended && needs_accumulators(); }
  /// Keep slots: [Hkv, B] int64, distinct per row, each < N, every one of the newest `protect` slots
  /// present. Row order is the physical order after compaction.
  virtual at::Tensor select(const LayerView& view) = 0;
};

/// Golden labels of one sequence: drop slots [layers, steps, Hkv, W] (int64) from the trace's oracle
/// (foresightkv-spec.md §C). At event s of layer l, head j drops slots drops[l][s][j] among the first
/// B (the candidates); the W newest are protected. Events past the last step keep the newest B.
class GoldenPolicy : public Policy {
 public:
  std::string name() const override { return "golden"; }
  void set_labels(int64_t seq, const at::Tensor& drops);
  at::Tensor select(const LayerView& view) override;

 private:
  std::vector<at::Tensor> labels_;  // per sequence
};

/// Build a policy by name for a resolved config. Throws InvalidArgument listing the valid names.
/// Policies defined above evict/ (the learned judge, foresightkv/judge/) come from the registry below.
std::unique_ptr<Policy> make_policy(const EvictionConfig& resolved);

/// Factories for policies that live in modules above evict/ (dependencies point downward, so evict/ cannot
/// construct them itself). fkv::judge::register_policies() adds "foresightkv" and "foresightkv_topk".
using PolicyFactory = std::function<std::unique_ptr<Policy>(const EvictionConfig& resolved)>;
void register_policy(const std::string& name, PolicyFactory factory);

/// SplitMix64 finaliser: the key mixer of every seeded eviction choice (random, foresightkv's sampled drop sets,
/// fkv-train's data order), so their streams are portable and independent of the standard library.
uint64_t splitmix64(uint64_t x);
/// The seed of one seeded eviction choice: splitmix64 chained over (seed, sequence stream, layer, event, KV head), so a
/// sequence's choices do not depend on its batch slot, the batch composition or the thread schedule.
uint64_t choice_key(uint64_t seed, uint64_t stream, int64_t layer, int64_t event, int64_t head);

/// Max-pool along the last axis with stride 1 and same-size output (padding kernel/2 with -inf), as
/// torch.nn.functional.max_pool1d(kernel, 1, kernel // 2).
at::Tensor max_pool_last(const at::Tensor& x, int64_t kernel);

}  // namespace fkv::evict
