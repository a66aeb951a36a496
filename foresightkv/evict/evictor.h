// The runtime side of eviction: decides when a sequence is due (trigger), keeps the shared statistics
// (a buffer of recent post-RoPE queries per layer, cumulative and decayed accumulators that follow their
// entries through compaction), builds each policy's LayerView, validates its decision and compacts the
// cache. One Evictor serves one KvCache for the life of a batch. Protocol per forward:
//   begin_forward(pos, n_real) -> model.forward(..., taps calling observe_queries) -> pop padding ->
//   end_forward(cache)
// The token (chunk) that triggers an eviction has already attended to the full cache: eviction happens in
// end_forward, after the model ran (spec §A.2). Keys keep their original positions.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <vector>

#include "foresightkv/cache/kv_cache.h"
#include "foresightkv/evict/config.h"
#include "foresightkv/evict/policy.h"

namespace fkv::evict {

struct EvictionStats {
  int64_t events = 0;        // (sequence) eviction events (all layers of a sequence count once)
  double seconds = 0;        // wall time inside eviction (statistics + policy + compaction)
  int64_t peak_entries = 0;  // max live entries of any (sequence, layer, head) seen at end_forward, before evicting
};

/// One eviction decision of one (sequence, layer), for inspection (fkv-eval generate --eviction-log): the
/// sequence's stream (identity), the layer, the sequence's event index, the original positions of its live
/// entries before eviction `pos` [Hkv, n] (int64, CPU) and the kept slots `keep` [Hkv, B] (int64, indices into
/// pos's columns). Valid only during the call.
struct EvictionRecord {
  uint64_t stream;
  int64_t layer;
  int64_t event;
  const at::Tensor& pos;
  const at::Tensor& keep;
};
using EvictionObserver = std::function<void(const EvictionRecord&)>;

class Evictor {
 public:
  /// `config` is resolved here (defaults filled, validated); n_head: query heads.
  Evictor(const EvictionConfig& config, int64_t n_seq, int64_t n_layer, int64_t n_head, int64_t n_head_kv,
          int64_t head_dim);

  const EvictionConfig& config() const { return cfg_; }
  bool enabled() const { return !cfg_.is_full(); }
  Policy* policy() { return policy_.get(); }
  /// Replace the policy built from config().policy (custom or learned policies; tests). Must be called
  /// before the first forward; the config's needs (statistics) follow the new policy.
  void set_policy(std::unique_ptr<Policy> p);

  /// Positions [n_seq, T] of the coming chunk and the number of real (non-padding) leading tokens per row.
  void begin_forward(const at::Tensor& pos, const std::vector<int64_t>& n_real);
  /// Tap: post-RoPE queries of `layer` for the chunk, [n_seq, Hq, T, D].
  void observe_queries(int64_t layer, const at::Tensor& q);
  /// After the forward (padding already popped): evict every sequence that is due. Returns the number of
  /// sequences evicted.
  int64_t end_forward(cache::KvCache& kv);
  /// Forget a sequence's statistics (its cache slot is being reused for a new sequence); its stream
  /// becomes its row again.
  void reset(int64_t seq);
  /// The identity of the sequence in row `seq` (LayerView::stream; default: the row index).
  void set_stream(int64_t seq, uint64_t stream);
  /// Replace row `seq`'s state (query ring, accumulators, trigger counters, events, peak, stream) with row
  /// `src_seq` of `src`, an evictor of the same config and shape whose cache has this one's capacity. With
  /// KvCache::copy_sequence this moves a sequence prefilled in a separate batch into a running batch.
  void import_sequence(int64_t seq, const Evictor& src, int64_t src_seq);

  /// Called after every validated eviction decision, before the cache is compacted (inspection only: it does not
  /// change what is evicted). Not moved by import_sequence: each evictor has its own.
  void set_observer(EvictionObserver o) { observer_ = std::move(o); }

  const EvictionStats& stats() const { return stats_; }
  int64_t events(int64_t seq) const { return events_.at(seq); }
  /// Max live entries of any (layer, KV head) of `seq` seen at end_forward (before evicting: what a forward attended to).
  int64_t peak_entries(int64_t seq) const { return peak_seq_.at(seq); }

 private:
  void evict_layer(cache::KvCache& kv, int64_t seq, int64_t layer, int64_t event);
  /// Allocate the zeroed cum/dec accumulators for `capacity` slots on first use; later calls check the size.
  void ensure_accumulators(int64_t capacity);

  EvictionConfig cfg_;
  std::unique_ptr<Policy> policy_;
  EvictionObserver observer_;
  int64_t n_seq_, n_layer_, n_head_, n_head_kv_, head_dim_;
  bool want_attn_ = false, want_acc_ = false;
  // query ring per layer: [n_seq, Hq, qcap, D], positions [n_seq, qcap] (shared by the layers)
  std::vector<at::Tensor> qbuf_;
  at::Tensor qpos_;
  std::vector<int64_t> qcount_;     // valid queries in the ring (<= qcap_)
  std::vector<int64_t> qhead_;      // next ring slot to write
  int64_t qcap_ = 0;                // ring capacity
  // accumulators per layer: [n_seq, Hkv, G, capacity] fp32, zero past the live length
  std::vector<at::Tensor> cum_, dec_;
  at::Tensor chunk_pos_;            // current forward's positions
  std::vector<int64_t> chunk_real_;
  std::vector<int64_t> count_;      // tokens processed per sequence
  std::vector<char> flag_;          // counter trigger: evict after the next forward
  std::vector<int64_t> events_;     // eviction events per sequence
  std::vector<int64_t> peak_seq_;   // peak live entries per sequence
  std::vector<uint64_t> stream_;    // identity per row (LayerView::stream)
  EvictionStats stats_;
};

}  // namespace fkv::evict
