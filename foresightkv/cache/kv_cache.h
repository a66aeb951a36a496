// Evictable KV cache. Per layer: keys (post-RoPE) and values, each (sequence, KV head) with its own
// live length and the absolute position of every live entry. Capacity is fixed at creation
// (budget + chunk for evicting runs, full length otherwise): memory is proportional to capacity,
// never to the sequence length. Entries stay in insertion order; keep/remove compact in place,
// preserving order. The model appends and reads; policies never touch storage (the runtime calls
// keep()/remove() with their decisions). Layout and protocol: docs/kv_cache.md.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace fkv::cache {

struct KvCacheOptions {
  int64_t n_seq = 1;
  int64_t n_layer = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int64_t capacity = 0;                    // slots per (sequence, layer, KV head)
  at::ScalarType dtype = at::kFloat;       // storage dtype of K/V
  at::Device device = at::kCPU;
};

class KvCache {
 public:
  explicit KvCache(const KvCacheOptions& opt);

  const KvCacheOptions& options() const { return opt_; }
  int64_t n_seq() const { return opt_.n_seq; }
  int64_t n_layer() const { return opt_.n_layer; }
  int64_t n_head_kv() const { return opt_.n_head_kv; }
  int64_t head_dim() const { return opt_.head_dim; }
  int64_t capacity() const { return opt_.capacity; }

  /// Storage of one layer. k/v: [n_seq, Hkv, capacity, D]; slots >= length are garbage.
  const at::Tensor& k(int64_t layer) const { return k_[layer]; }
  const at::Tensor& v(int64_t layer) const { return v_[layer]; }
  /// Absolute positions of the entries: [n_seq, Hkv, capacity] int64 (CPU), -1 past the live length.
  const at::Tensor& pos(int64_t layer) const { return pos_[layer]; }
  /// Live lengths: [n_seq, Hkv] int64 (CPU).
  const at::Tensor& lengths(int64_t layer) const { return len_[layer]; }
  int64_t length(int64_t seq, int64_t layer, int64_t head) const;
  int64_t max_length(int64_t layer) const;

  /// Append a chunk for every (sequence, KV head) of `layer`.
  /// k_new/v_new: [n_seq, Hkv, T, D] (any float dtype, converted); pos_new: [n_seq, T] int64.
  /// Throws when any (sequence, head) would exceed capacity.
  void append(int64_t layer, const at::Tensor& k_new, const at::Tensor& v_new, const at::Tensor& pos_new);

  /// Keep exactly `slots` (strictly increasing, each < length) of (seq, layer, head); compact in order.
  void keep(int64_t seq, int64_t layer, int64_t head, const std::vector<int64_t>& slots);
  /// Keep exactly `slots` (distinct, each < length, any order) and lay them out in that order
  /// (slot i of the result is old slot slots[i]). Baselines whose official code stores survivors in
  /// score order use this (foresightkv-spec.md §F.1); increasing slots behave exactly like keep().
  void keep_ordered(int64_t seq, int64_t layer, int64_t head, const std::vector<int64_t>& slots);
  /// Remove `slots` (any order, no duplicates, each < length) of (seq, layer, head); compact in order.
  void remove(int64_t seq, int64_t layer, int64_t head, const std::vector<int64_t>& slots);
  /// Keep by mask for a whole layer: keep_mask [n_seq, Hkv, capacity] bool (entries past length ignored).
  void keep_mask(int64_t layer, const at::Tensor& keep_mask);

  /// Drop the newest `n` entries of every (layer, KV head) of `seq` (undo an append, e.g. padding).
  /// Precondition: every head of the sequence holds at least n entries appended after any eviction.
  void pop_back(int64_t seq, int64_t n);

  /// Drop everything (all layers) of one sequence / of all sequences.
  void clear(int64_t seq);
  void clear();

  /// Replace sequence `seq` (all layers) with sequence `src_seq` of `src`: entries, positions and lengths.
  /// `src` must have the same layers, KV heads, head_dim, capacity, dtype and device. The runtime prefills a
  /// newly admitted sequence in a small cache and moves it into a free slot of the running batch this way.
  void copy_sequence(int64_t seq, const KvCache& src, int64_t src_seq);

  /// Bytes of K/V storage (capacity-based) and of the live entries.
  int64_t storage_bytes() const;
  int64_t live_bytes() const;

 private:
  void compact(int64_t seq, int64_t layer, int64_t head, const std::vector<int64_t>& keep_sorted);

  KvCacheOptions opt_;
  std::vector<at::Tensor> k_, v_;      // per layer [n_seq, Hkv, S, D]
  std::vector<at::Tensor> pos_;        // per layer [n_seq, Hkv, S] int64 CPU
  std::vector<at::Tensor> len_;        // per layer [n_seq, Hkv] int64 CPU
};

}  // namespace fkv::cache
