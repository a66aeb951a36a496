// KvCache storage and order-preserving compaction. CPU fp32 caches take memcpy/memmove fast paths;
// other dtypes/devices go through ATen (index_select + copy_), with identical semantics.
#include "foresightkv/cache/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

#include <fmt/ostream.h>

#include "foresightkv/core/error.h"

namespace fkv::cache {

KvCache::KvCache(const KvCacheOptions& opt) : opt_(opt) {
  FKV_CHECK_ARG(opt.n_seq > 0 && opt.n_layer > 0 && opt.n_head_kv > 0 && opt.head_dim > 0 && opt.capacity > 0,
                "KvCache: all sizes must be positive (n_seq={}, n_layer={}, n_head_kv={}, head_dim={}, capacity={})",
                opt.n_seq, opt.n_layer, opt.n_head_kv, opt.head_dim, opt.capacity);
  auto fopt = at::TensorOptions().dtype(opt.dtype).device(opt.device);
  auto iopt = at::TensorOptions().dtype(at::kLong);
  for (int64_t l = 0; l < opt.n_layer; ++l) {
    k_.push_back(at::zeros({opt.n_seq, opt.n_head_kv, opt.capacity, opt.head_dim}, fopt));
    v_.push_back(at::zeros({opt.n_seq, opt.n_head_kv, opt.capacity, opt.head_dim}, fopt));
    pos_.push_back(at::full({opt.n_seq, opt.n_head_kv, opt.capacity}, -1, iopt));
    len_.push_back(at::zeros({opt.n_seq, opt.n_head_kv}, iopt));
  }
}

int64_t KvCache::length(int64_t seq, int64_t layer, int64_t head) const {
  FKV_CHECK_ARG(seq >= 0 && seq < opt_.n_seq && layer >= 0 && layer < opt_.n_layer && head >= 0 && head < opt_.n_head_kv,
                "KvCache::length: index (seq {}, layer {}, head {}) out of range ({}, {}, {})", seq, layer, head,
                opt_.n_seq, opt_.n_layer, opt_.n_head_kv);
  return len_[layer].data_ptr<int64_t>()[seq * opt_.n_head_kv + head];
}

int64_t KvCache::max_length(int64_t layer) const {
  const int64_t* l = len_[layer].data_ptr<int64_t>();
  return *std::max_element(l, l + opt_.n_seq * opt_.n_head_kv);
}

void KvCache::append(int64_t layer, const at::Tensor& k_new, const at::Tensor& v_new, const at::Tensor& pos_new) {
  FKV_CHECK_ARG(layer >= 0 && layer < opt_.n_layer, "KvCache::append: layer {} out of range [0, {})", layer, opt_.n_layer);
  FKV_CHECK_ARG(k_new.dim() == 4 && k_new.size(0) == opt_.n_seq && k_new.size(1) == opt_.n_head_kv &&
                    k_new.size(3) == opt_.head_dim && v_new.sizes() == k_new.sizes(),
                "KvCache::append: expected k/v [n_seq={}, Hkv={}, T, D={}], got k {} v {}", opt_.n_seq, opt_.n_head_kv,
                opt_.head_dim, fmt::streamed(k_new.sizes()), fmt::streamed(v_new.sizes()));
  const int64_t T = k_new.size(2);
  FKV_CHECK_ARG(pos_new.dim() == 2 && pos_new.size(0) == opt_.n_seq && pos_new.size(1) == T,
                "KvCache::append: expected pos [n_seq={}, T={}], got {}", opt_.n_seq, T, fmt::streamed(pos_new.sizes()));
  int64_t* len = len_[layer].data_ptr<int64_t>();
  for (int64_t i = 0; i < opt_.n_seq * opt_.n_head_kv; ++i)
    FKV_CHECK_ARG(len[i] + T <= opt_.capacity,
                  "KvCache::append: layer {} (seq {}, head {}) holds {} entries; {} more exceed capacity {}. Evict "
                  "first or create the cache with a larger capacity",
                  layer, i / opt_.n_head_kv, i % opt_.n_head_kv, len[i], T, opt_.capacity);
  at::Tensor pos_cpu = pos_new.to(at::kCPU, at::kLong).contiguous();
  const int64_t* pn = pos_cpu.data_ptr<int64_t>();
  int64_t* pc = pos_[layer].data_ptr<int64_t>();
  const int64_t S = opt_.capacity, D = opt_.head_dim, H = opt_.n_head_kv;
  // CPU storage: convert the chunk once to the storage dtype, then memcpy rows (any element size).
  const bool fast = opt_.device.is_cpu();
  const size_t es = c10::elementSize(opt_.dtype);
  at::Tensor kc, vc;
  if (fast) {
    kc = k_new.to(at::kCPU, opt_.dtype).contiguous();
    vc = v_new.to(at::kCPU, opt_.dtype).contiguous();
  }
  for (int64_t s = 0; s < opt_.n_seq; ++s)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t l0 = len[s * H + h];
      if (fast) {
        auto* kd = static_cast<uint8_t*>(k_[layer].data_ptr()) + ((s * H + h) * S + l0) * D * es;
        auto* vd = static_cast<uint8_t*>(v_[layer].data_ptr()) + ((s * H + h) * S + l0) * D * es;
        std::memcpy(kd, static_cast<const uint8_t*>(kc.data_ptr()) + (s * H + h) * T * D * es, es * T * D);
        std::memcpy(vd, static_cast<const uint8_t*>(vc.data_ptr()) + (s * H + h) * T * D * es, es * T * D);
      } else {
        k_[layer][s][h].narrow(0, l0, T).copy_(k_new[s][h]);
        v_[layer][s][h].narrow(0, l0, T).copy_(v_new[s][h]);
      }
      std::memcpy(pc + (s * H + h) * S + l0, pn + s * T, sizeof(int64_t) * T);
      len[s * H + h] = l0 + T;
    }
}

void KvCache::compact(int64_t seq, int64_t layer, int64_t head, const std::vector<int64_t>& keep) {
  const int64_t S = opt_.capacity, D = opt_.head_dim, H = opt_.n_head_kv;
  int64_t* len = len_[layer].data_ptr<int64_t>() + seq * H + head;
  int64_t* pc = pos_[layer].data_ptr<int64_t>() + (seq * H + head) * S;
  const int64_t n = static_cast<int64_t>(keep.size());
  if (opt_.device.is_cpu()) {
    const size_t row = c10::elementSize(opt_.dtype) * D;
    auto* kd = static_cast<uint8_t*>(k_[layer].data_ptr()) + (seq * H + head) * S * row;
    auto* vd = static_cast<uint8_t*>(v_[layer].data_ptr()) + (seq * H + head) * S * row;
    // keep is strictly increasing, so keep[i] >= i: moving forward in order never overwrites a source not yet read.
    for (int64_t i = 0; i < n; ++i) {
      const int64_t src = keep[i];
      if (src != i) {
        std::memcpy(kd + i * row, kd + src * row, row);
        std::memcpy(vd + i * row, vd + src * row, row);
      }
    }
  } else if (n > 0) {
    at::Tensor idx = at::from_blob(const_cast<int64_t*>(keep.data()), {n}, at::kLong).to(opt_.device);
    at::Tensor ks = k_[layer][seq][head], vs = v_[layer][seq][head];
    at::Tensor kk = ks.index_select(0, idx), vv = vs.index_select(0, idx);
    ks.narrow(0, 0, n).copy_(kk);
    vs.narrow(0, 0, n).copy_(vv);
  }
  for (int64_t i = 0; i < n; ++i) pc[i] = pc[keep[i]];
  for (int64_t i = n; i < *len; ++i) pc[i] = -1;
  *len = n;
}

void KvCache::keep(int64_t seq, int64_t layer, int64_t head, const std::vector<int64_t>& slots) {
  const int64_t len = length(seq, layer, head);
  for (size_t i = 0; i < slots.size(); ++i) {
    FKV_CHECK_ARG(slots[i] >= 0 && slots[i] < len,
                  "KvCache::keep: slot {} out of range [0, {}) for (seq {}, layer {}, head {})", slots[i], len, seq,
                  layer, head);
    FKV_CHECK_ARG(i == 0 || slots[i] > slots[i - 1], "KvCache::keep: slots must be strictly increasing ({} after {})",
                  slots[i], i ? slots[i - 1] : 0);
  }
  compact(seq, layer, head, slots);
}

void KvCache::keep_ordered(int64_t seq, int64_t layer, int64_t head, const std::vector<int64_t>& slots) {
  const int64_t len = length(seq, layer, head);
  std::vector<char> seen(static_cast<size_t>(len), 0);
  bool increasing = true;
  for (size_t i = 0; i < slots.size(); ++i) {
    FKV_CHECK_ARG(slots[i] >= 0 && slots[i] < len,
                  "KvCache::keep_ordered: slot {} out of range [0, {}) for (seq {}, layer {}, head {})", slots[i], len,
                  seq, layer, head);
    FKV_CHECK_ARG(!seen[slots[i]], "KvCache::keep_ordered: slot {} listed twice", slots[i]);
    seen[slots[i]] = 1;
    increasing = increasing && (i == 0 || slots[i] > slots[i - 1]);
  }
  if (increasing) return compact(seq, layer, head, slots);
  const int64_t S = opt_.capacity, H = opt_.n_head_kv, n = static_cast<int64_t>(slots.size());
  // Arbitrary order: gather through a copy (a permutation cannot be done in place by forward moves).
  at::Tensor idx = at::from_blob(const_cast<int64_t*>(slots.data()), {n}, at::kLong).clone();
  at::Tensor ks = k_[layer][seq][head], vs = v_[layer][seq][head];
  at::Tensor kk = ks.index_select(0, idx.to(opt_.device)), vv = vs.index_select(0, idx.to(opt_.device));
  ks.narrow(0, 0, n).copy_(kk);
  vs.narrow(0, 0, n).copy_(vv);
  int64_t* lp = len_[layer].data_ptr<int64_t>() + seq * H + head;
  int64_t* pc = pos_[layer].data_ptr<int64_t>() + (seq * H + head) * S;
  std::vector<int64_t> old(pc, pc + len);
  for (int64_t i = 0; i < n; ++i) pc[i] = old[slots[i]];
  for (int64_t i = n; i < len; ++i) pc[i] = -1;
  *lp = n;
}

void KvCache::remove(int64_t seq, int64_t layer, int64_t head, const std::vector<int64_t>& slots) {
  const int64_t len = length(seq, layer, head);
  std::vector<char> drop(static_cast<size_t>(len), 0);
  for (int64_t s : slots) {
    FKV_CHECK_ARG(s >= 0 && s < len, "KvCache::remove: slot {} out of range [0, {}) for (seq {}, layer {}, head {})", s,
                  len, seq, layer, head);
    FKV_CHECK_ARG(!drop[s], "KvCache::remove: slot {} listed twice", s);
    drop[s] = 1;
  }
  std::vector<int64_t> keep;
  keep.reserve(len - slots.size());
  for (int64_t i = 0; i < len; ++i)
    if (!drop[i]) keep.push_back(i);
  compact(seq, layer, head, keep);
}

void KvCache::keep_mask(int64_t layer, const at::Tensor& mask) {
  FKV_CHECK_ARG(layer >= 0 && layer < opt_.n_layer, "KvCache::keep_mask: layer {} out of range", layer);
  FKV_CHECK_ARG(mask.dim() == 3 && mask.size(0) == opt_.n_seq && mask.size(1) == opt_.n_head_kv &&
                    mask.size(2) >= max_length(layer),
                "KvCache::keep_mask: expected mask [n_seq={}, Hkv={}, >= {}], got {}", opt_.n_seq, opt_.n_head_kv,
                max_length(layer), fmt::streamed(mask.sizes()));
  at::Tensor m = mask.to(at::kCPU, at::kBool).contiguous();
  const bool* mp = m.data_ptr<bool>();
  const int64_t W = m.size(2);
  for (int64_t s = 0; s < opt_.n_seq; ++s)
    for (int64_t h = 0; h < opt_.n_head_kv; ++h) {
      const int64_t len = length(s, layer, h);
      std::vector<int64_t> keep;
      for (int64_t i = 0; i < len; ++i)
        if (mp[(s * opt_.n_head_kv + h) * W + i]) keep.push_back(i);
      if (static_cast<int64_t>(keep.size()) != len) compact(s, layer, h, keep);
    }
}

void KvCache::pop_back(int64_t seq, int64_t n) {
  FKV_CHECK_ARG(seq >= 0 && seq < opt_.n_seq && n >= 0, "KvCache::pop_back: bad seq {} or count {}", seq, n);
  for (int64_t l = 0; l < opt_.n_layer; ++l)
    for (int64_t h = 0; h < opt_.n_head_kv; ++h) {
      int64_t* len = len_[l].data_ptr<int64_t>() + seq * opt_.n_head_kv + h;
      FKV_CHECK_ARG(*len >= n, "KvCache::pop_back: (seq {}, layer {}, head {}) holds {} < {} entries", seq, l, h, *len, n);
      int64_t* pc = pos_[l].data_ptr<int64_t>() + (seq * opt_.n_head_kv + h) * opt_.capacity;
      for (int64_t i = *len - n; i < *len; ++i) pc[i] = -1;
      *len -= n;
    }
}

void KvCache::clear(int64_t seq) {
  FKV_CHECK_ARG(seq >= 0 && seq < opt_.n_seq, "KvCache::clear: seq {} out of range [0, {})", seq, opt_.n_seq);
  for (int64_t l = 0; l < opt_.n_layer; ++l) {
    len_[l][seq].zero_();
    pos_[l][seq].fill_(-1);
  }
}

void KvCache::clear() {
  for (int64_t l = 0; l < opt_.n_layer; ++l) {
    len_[l].zero_();
    pos_[l].fill_(-1);
  }
}

void KvCache::copy_sequence(int64_t seq, const KvCache& src, int64_t src_seq) {
  const KvCacheOptions& o = src.opt_;
  FKV_CHECK_ARG(seq >= 0 && seq < opt_.n_seq && src_seq >= 0 && src_seq < o.n_seq,
                "KvCache::copy_sequence: sequence {} (of {}) or source sequence {} (of {}) out of range", seq,
                opt_.n_seq, src_seq, o.n_seq);
  FKV_CHECK_ARG(o.n_layer == opt_.n_layer && o.n_head_kv == opt_.n_head_kv && o.head_dim == opt_.head_dim &&
                    o.capacity == opt_.capacity && o.dtype == opt_.dtype && o.device == opt_.device,
                "KvCache::copy_sequence: source cache (layers {}, KV heads {}, head_dim {}, capacity {}) differs from "
                "this one (layers {}, KV heads {}, head_dim {}, capacity {}) or in dtype/device",
                o.n_layer, o.n_head_kv, o.head_dim, o.capacity, opt_.n_layer, opt_.n_head_kv, opt_.head_dim,
                opt_.capacity);
  if (&src == this && seq == src_seq) return;
  for (int64_t l = 0; l < opt_.n_layer; ++l) {
    k_[l][seq].copy_(src.k_[l][src_seq]);
    v_[l][seq].copy_(src.v_[l][src_seq]);
    pos_[l][seq].copy_(src.pos_[l][src_seq]);
    len_[l][seq].copy_(src.len_[l][src_seq]);
  }
}

int64_t KvCache::storage_bytes() const {
  int64_t b = 0;
  for (int64_t l = 0; l < opt_.n_layer; ++l) b += k_[l].nbytes() + v_[l].nbytes();
  return b;
}

int64_t KvCache::live_bytes() const {
  const int64_t per = 2 * opt_.head_dim * static_cast<int64_t>(c10::elementSize(opt_.dtype));
  int64_t n = 0;
  for (int64_t l = 0; l < opt_.n_layer; ++l) n += len_[l].sum().item<int64_t>();
  return n * per;
}

}  // namespace fkv::cache
