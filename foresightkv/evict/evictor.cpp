#include "foresightkv/evict/evictor.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include <fmt/ostream.h>

#include "foresightkv/core/error.h"
#include "foresightkv/core/timer.h"

namespace fkv::evict {

Evictor::Evictor(const EvictionConfig& config, int64_t n_seq, int64_t n_layer, int64_t n_head, int64_t n_head_kv,
                 int64_t head_dim)
    : cfg_(config.resolved()),
      n_seq_(n_seq),
      n_layer_(n_layer),
      n_head_(n_head),
      n_head_kv_(n_head_kv),
      head_dim_(head_dim),
      qcount_(n_seq, 0),
      qhead_(n_seq, 0),
      count_(n_seq, 0),
      flag_(n_seq, 0),
      events_(n_seq, 0),
      peak_seq_(n_seq, 0),
      stream_(n_seq) {
  for (int64_t s = 0; s < n_seq; ++s) stream_[s] = static_cast<uint64_t>(s);
  FKV_CHECK_ARG(n_seq > 0 && n_layer > 0 && n_head_kv > 0 && n_head % n_head_kv == 0 && head_dim > 0,
                "Evictor: bad shape (n_seq {}, layers {}, heads {}/{}, head_dim {})", n_seq, n_layer, n_head,
                n_head_kv, head_dim);
  if (!enabled()) return;
  set_policy(make_policy(cfg_));
}

void Evictor::set_policy(std::unique_ptr<Policy> p) {
  FKV_CHECK_ARG(p != nullptr && enabled(), "Evictor::set_policy: null policy or policy 'full'");
  FKV_CHECK_ARG(std::all_of(count_.begin(), count_.end(), [](int64_t c) { return c == 0; }),
                "Evictor::set_policy: must be called before the first forward");
  policy_ = std::move(p);
  want_acc_ = policy_->needs_accumulators();
  want_attn_ = policy_->needs_attention() || want_acc_;
  qbuf_.clear();
  if (want_attn_) {
    FKV_CHECK_ARG(cfg_.query_window > 0, "policy '{}' needs observed queries: set query_window >= 1", policy_->name());
    // Intended accumulators start from every query since the beginning (spec §P.2 (i): CUM = sum over the first
    // chunk's queries), so the ring keeps up to B + L queries for the first event; later events read the newest
    // query_window of them.
    qcap_ = policy_->first_event_sees_history(cfg_.variant) ? std::max(cfg_.query_window, cfg_.budget + cfg_.window)
                                                             : cfg_.query_window;
    for (int64_t l = 0; l < n_layer_; ++l)
      qbuf_.push_back(at::zeros({n_seq_, n_head_, qcap_, head_dim_}, at::kFloat));
    qpos_ = at::full({n_seq_, qcap_}, -1, at::kLong);
  }
}

void Evictor::begin_forward(const at::Tensor& pos, const std::vector<int64_t>& n_real) {
  FKV_CHECK_ARG(pos.dim() == 2 && pos.size(0) == n_seq_ && static_cast<int64_t>(n_real.size()) == n_seq_,
                "Evictor::begin_forward: expected pos [n_seq={}, T] and {} real counts", n_seq_, n_seq_);
  for (int64_t r : n_real)
    FKV_CHECK_ARG(r >= 0 && r <= pos.size(1), "Evictor::begin_forward: real count {} outside [0, {}]", r, pos.size(1));
  chunk_pos_ = pos.to(at::kCPU, at::kLong).contiguous();
  chunk_real_ = n_real;
  if (!want_attn_) return;
  // ring buffer: the newest min(r, qcap) tokens of the chunk go to slots head, head+1, ... (mod qcap)
  for (int64_t s = 0; s < n_seq_; ++s) {
    const int64_t r = n_real[s], take = std::min(r, qcap_);
    int64_t* qp = qpos_[s].data_ptr<int64_t>();
    const int64_t* cp = chunk_pos_[s].data_ptr<int64_t>();
    for (int64_t i = 0; i < take; ++i) qp[(qhead_[s] + i) % qcap_] = cp[r - take + i];
  }
}

void Evictor::observe_queries(int64_t layer, const at::Tensor& q) {
  if (!want_attn_) return;
  FKV_CHECK_ARG(layer >= 0 && layer < n_layer_ && q.dim() == 4 && q.size(0) == n_seq_ && q.size(1) == n_head_ &&
                    q.size(3) == head_dim_ && chunk_pos_.defined() && q.size(2) == chunk_pos_.size(1),
                "Evictor::observe_queries: expected q [n_seq={}, Hq={}, T, D={}] after begin_forward, got {}", n_seq_,
                n_head_, head_dim_, fmt::streamed(q.sizes()));
  for (int64_t s = 0; s < n_seq_; ++s) {
    const int64_t r = chunk_real_[s], take = std::min(r, qcap_);
    if (take == 0) continue;
    at::Tensor buf = qbuf_[layer][s];  // [Hq, qcap, D]
    at::Tensor src = q[s].narrow(1, r - take, take);
    const int64_t first = qhead_[s] % qcap_, n1 = std::min(take, qcap_ - first);
    buf.narrow(1, first, n1).copy_(src.narrow(1, 0, n1));
    if (n1 < take) buf.narrow(1, 0, take - n1).copy_(src.narrow(1, n1, take - n1));
  }
  if (layer == n_layer_ - 1)
    for (int64_t s = 0; s < n_seq_; ++s) {
      const int64_t take = std::min(chunk_real_[s], qcap_);
      qhead_[s] = (qhead_[s] + take) % qcap_;
      qcount_[s] = std::min(qcap_, qcount_[s] + take);
    }
}

int64_t Evictor::end_forward(cache::KvCache& kv) {
  FKV_CHECK_ARG(kv.n_seq() == n_seq_ && kv.n_layer() == n_layer_ && kv.n_head_kv() == n_head_kv_,
                "Evictor::end_forward: cache shape does not match the evictor");
  // Peak before eviction: the forward just attended to this many entries.
  for (int64_t s = 0; s < n_seq_; ++s)
    for (int64_t l = 0; l < n_layer_; ++l)
      for (int64_t h = 0; h < n_head_kv_; ++h) peak_seq_[s] = std::max(peak_seq_[s], kv.length(s, l, h));
  for (int64_t s = 0; s < n_seq_; ++s) stats_.peak_entries = std::max(stats_.peak_entries, peak_seq_[s]);
  if (!enabled()) return 0;
  const double t0 = now_seconds();
  if (want_acc_) ensure_accumulators(kv.capacity());
  int64_t evicted = 0;
  const int64_t B = cfg_.budget, L = cfg_.window;
  for (int64_t s = 0; s < n_seq_; ++s) {
    const int64_t r = chunk_real_.empty() ? 0 : chunk_real_[s];
    if (r == 0) continue;  // a finished (padded) row does not advance
    count_[s] += r;
    const int64_t n = kv.length(s, 0, 0);
    bool due;
    if (cfg_.trigger == Trigger::Counter) {
      due = flag_[s] && n > B;
      flag_[s] = (count_[s] % L) == 0;
    } else {
      due = n >= B + L;
    }
    if (!due) continue;
    for (int64_t l = 0; l < n_layer_; ++l) evict_layer(kv, s, l, events_[s]);
    ++events_[s];
    ++stats_.events;
    ++evicted;
  }
  stats_.seconds += now_seconds() - t0;
  return evicted;
}

void Evictor::evict_layer(cache::KvCache& kv, int64_t s, int64_t l, int64_t event) {
  const int64_t H = n_head_kv_, G = n_head_ / n_head_kv_, D = head_dim_;
  const int64_t n = kv.length(s, l, 0);
  for (int64_t h = 1; h < H; ++h)
    FKV_CHECK(kv.length(s, l, h) == n, "Evictor: KV heads of (seq {}, layer {}) hold different lengths ({} vs {})", s,
              l, kv.length(s, l, h), n);
  if (n <= cfg_.budget) return;
  LayerView v;
  v.seq = s;
  v.stream = stream_[s];
  v.layer = l;
  v.event = event;
  v.n = n;
  v.budget = cfg_.budget;
  v.protect = cfg_.protect;
  v.group = G;
  v.k = kv.k(l)[s].narrow(1, 0, n).to(at::kCPU, at::kFloat);
  v.v = kv.v(l)[s].narrow(1, 0, n).to(at::kCPU, at::kFloat);
  v.pos = kv.pos(l)[s].narrow(1, 0, n);
  if (want_attn_ && qcount_[s] > 0) {
    const int64_t nq = std::min(qcount_[s], event == 0 ? qcap_ : cfg_.query_window);
    at::Tensor slots = (at::arange(qhead_[s] - nq, qhead_[s], at::kLong) + qcap_).remainder(qcap_);  // oldest first
    at::Tensor q = qbuf_[l][s].index_select(1, slots).view({H, G * nq, D});
    at::Tensor lg = at::matmul(q, v.k.transpose(1, 2)).mul_(1.0 / std::sqrt(static_cast<double>(D)));
    lg = lg.view({H, G, nq, n});
    at::Tensor qp = qpos_[s].index_select(0, slots).view({1, 1, nq, 1});
    at::Tensor future = v.pos.view({H, 1, 1, n}) > qp;  // causal by position
    lg.masked_fill_(future, -std::numeric_limits<float>::infinity());
    v.logits = lg;
    v.probs = at::softmax(lg, -1);
  }
  if (want_acc_) {
    at::Tensor sum = v.probs.defined() ? v.probs.sum(2) : at::zeros({H, G, n}, at::kFloat);
    at::Tensor cum = cum_[l][s].narrow(2, 0, n), dec = dec_[l][s].narrow(2, 0, n);
    cum.add_(sum);
    if (cfg_.variant == Variant::Parity)
      dec.copy_(cum);  // released eval code: DEC is a copy of CUM (spec §P.2)
    else
      dec.mul_(cfg_.decay).add_(sum);
    v.cum = cum;
    v.dec = dec;
  }
  if (cfg_.variant == Variant::Parity && cfg_.policy == "rkv" && s != 0 && kv.length(0, l, 0) == n)
    v.row0_k = kv.k(l)[0].narrow(1, 0, n).to(at::kCPU, at::kFloat);

  at::Tensor keep = policy_->select(v);
  FKV_CHECK(keep.dim() == 2 && keep.size(0) == H && keep.size(1) == cfg_.budget && keep.scalar_type() == at::kLong,
            "policy '{}' returned keep slots of shape {} (expected [{}, {}] int64)", cfg_.policy,
            fmt::streamed(keep.sizes()), H, cfg_.budget);
  keep = keep.contiguous();
  const int64_t B = cfg_.budget;
  std::vector<char> seen(static_cast<size_t>(n));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t* kp = keep[h].data_ptr<int64_t>();
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t i = 0; i < B; ++i) {
      FKV_CHECK(kp[i] >= 0 && kp[i] < n && !seen[kp[i]],
                "policy '{}' returned an invalid or repeated slot {} (layer {}, head {}, N {})", cfg_.policy, kp[i], l,
                h, n);
      seen[kp[i]] = 1;
    }
    for (int64_t i = n - cfg_.protect; i < n; ++i)
      FKV_CHECK(seen[i], "policy '{}' evicted protected slot {} (layer {}, head {}, N {}, protect {})", cfg_.policy,
                i, l, h, n, cfg_.protect);
  }
  if (observer_) {
    const at::Tensor pos = v.pos.to(at::kCPU, at::kLong).contiguous();
    observer_(EvictionRecord{stream_[s], l, event, pos, keep});
  }
  for (int64_t h = 0; h < H; ++h) {
    const int64_t* kp = keep[h].data_ptr<int64_t>();
    kv.keep_ordered(s, l, h, std::vector<int64_t>(kp, kp + B));
  }
  if (want_acc_) {
    for (at::Tensor* acc : {&cum_[l], &dec_[l]}) {
      at::Tensor a = (*acc)[s];  // [H, G, cap]
      at::Tensor idx = keep.view({H, 1, B}).expand({H, G, B});
      at::Tensor kept = a.narrow(2, 0, n).gather(2, idx);
      a.zero_();
      a.narrow(2, 0, B).copy_(kept);
    }
  }
}

void Evictor::ensure_accumulators(int64_t capacity) {
  if (cum_.empty()) {
    const int64_t G = n_head_ / n_head_kv_;
    for (int64_t l = 0; l < n_layer_; ++l) {
      cum_.push_back(at::zeros({n_seq_, n_head_kv_, G, capacity}, at::kFloat));
      dec_.push_back(at::zeros({n_seq_, n_head_kv_, G, capacity}, at::kFloat));
    }
  }
  FKV_CHECK_ARG(cum_[0].size(3) == capacity, "Evictor: accumulators hold {} slots, the cache {}", cum_[0].size(3),
                capacity);
}

void Evictor::reset(int64_t seq) {
  FKV_CHECK_ARG(seq >= 0 && seq < n_seq_, "Evictor::reset: bad sequence {}", seq);
  qcount_[seq] = 0;
  qhead_[seq] = 0;
  count_[seq] = 0;
  peak_seq_[seq] = 0;
  flag_[seq] = 0;
  events_[seq] = 0;
  if (qpos_.defined()) qpos_[seq].fill_(-1);
  for (auto& a : cum_) a[seq].zero_();
  for (auto& a : dec_) a[seq].zero_();
  stream_[seq] = static_cast<uint64_t>(seq);
}

void Evictor::set_stream(int64_t seq, uint64_t stream) {
  FKV_CHECK_ARG(seq >= 0 && seq < n_seq_, "Evictor::set_stream: bad sequence {}", seq);
  stream_[seq] = stream;
}

void Evictor::import_sequence(int64_t seq, const Evictor& src, int64_t src_seq) {
  FKV_CHECK_ARG(seq >= 0 && seq < n_seq_ && src_seq >= 0 && src_seq < src.n_seq_,
                "Evictor::import_sequence: sequence {} (of {}) or source sequence {} (of {}) out of range", seq, n_seq_,
                src_seq, src.n_seq_);
  FKV_CHECK_ARG(src.cfg_.to_json() == cfg_.to_json() && src.n_layer_ == n_layer_ && src.n_head_ == n_head_ &&
                    src.n_head_kv_ == n_head_kv_ && src.head_dim_ == head_dim_ && src.qcap_ == qcap_ &&
                    src.want_attn_ == want_attn_ && src.want_acc_ == want_acc_,
                "Evictor::import_sequence: the source evictor has another config or shape");
  reset(seq);
  if (want_attn_) {
    for (int64_t l = 0; l < n_layer_; ++l) qbuf_[l][seq].copy_(src.qbuf_[l][src_seq]);
    qpos_[seq].copy_(src.qpos_[src_seq]);
  }
  if (!src.cum_.empty()) {
    ensure_accumulators(src.cum_[0].size(3));
    for (int64_t l = 0; l < n_layer_; ++l) {
      cum_[l][seq].copy_(src.cum_[l][src_seq]);
      dec_[l][seq].copy_(src.dec_[l][src_seq]);
    }
  }
  qcount_[seq] = src.qcount_[src_seq];
  qhead_[seq] = src.qhead_[src_seq];
  count_[seq] = src.count_[src_seq];
  flag_[seq] = src.flag_[src_seq];
  events_[seq] = src.events_[src_seq];
  peak_seq_[seq] = src.peak_seq_[src_seq];
  stream_[seq] = src.stream_[src_seq];
}

}  // namespace fkv::evict
