// Naive ATen references for the attention (fkv_cuda/attention.h) and compaction (fkv_cuda/compact.h) kernels, plus an
// element-wise closeness check. Written for readability: per-row loops, fp64 math. Each reference is itself checked
// against fkv's CPU implementation in the [cpu] cases (ops::attention_decode_f32, the Evictor's statistics,
// KvCache::keep_mask), so the GPU parity tests compare against something verified in CI.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "support/catch.h"

namespace fkv::test {

/// Every element of `actual` within atol + rtol * |expected| of `expected` (both converted to fp64 on the CPU; a NaN
/// or Inf in either counts as a violation unless both are the same non-finite value). Prints the count of violations,
/// the worst element and the NMSE before failing.
inline void require_close(const at::Tensor& actual, const at::Tensor& expected, double atol, double rtol,
                          const std::string& name) {
  INFO(name);
  REQUIRE(actual.sizes() == expected.sizes());
  at::Tensor a = actual.to(at::kCPU, at::kDouble).contiguous().flatten();
  at::Tensor e = expected.to(at::kCPU, at::kDouble).contiguous().flatten();
  const double* ap = a.data_ptr<double>();
  const double* ep = e.data_ptr<double>();
  int64_t bad = 0, worst = -1;
  double worst_excess = 0, se = 0, sr = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = ap[i], y = ep[i];
    bool ok;
    double excess = 0;
    if (!std::isfinite(x) || !std::isfinite(y)) {
      ok = (std::isnan(x) && std::isnan(y)) || x == y;
      excess = ok ? 0 : std::numeric_limits<double>::infinity();
    } else {
      const double d = std::abs(x - y), lim = atol + rtol * std::abs(y);
      ok = d <= lim;
      excess = d - lim;
      se += d * d;
      sr += y * y;
    }
    if (!ok) {
      ++bad;
      if (worst < 0 || excess > worst_excess) worst = i, worst_excess = excess;
    }
  }
  if (bad > 0) {
    UNSCOPED_INFO(name << ": " << bad << " of " << a.numel() << " elements outside atol " << atol << " + rtol " << rtol
                       << "; worst flat index " << worst << ": got " << ap[worst] << ", expected " << ep[worst]
                       << "; NMSE " << (sr > 0 ? se / sr : se));
  }
  REQUIRE(bad == 0);
}

// ---- attention --------------------------------------------------------------------------------------------------

struct AttentionRef {
  at::Tensor out;    // [n_seq, T, Hq, D] fp64; zeros for a query that sees no entry
  at::Tensor probs;  // [n_seq, Hkv, G, T, S] fp64: softmax probability of slot j for query t of head kvh*G+g;
                     // 0 for invisible slots (pos > qpos), slots >= len and queries that see nothing
};

/// Attention of queries q [n_seq, T, Hq, D] over the cache k/v [n_seq, Hkv, S, D] (any float dtype: the stored
/// values, converted exactly to fp64), pos [n_seq, Hkv, S] int64, len [n_seq, Hkv] int64, qpos [n_seq, T] int64:
/// query t of head h sees slot j < len[s, h/G] iff pos[s, h/G, j] <= qpos[s, t]; softmax of q.k * scale over the
/// visible slots, weighted sum of v. The rule of ops/attention.h and model/transformer.cpp (attention_general).
inline AttentionRef reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& pos, const at::Tensor& len, const at::Tensor& qpos,
                                        double scale) {
  const int64_t n_seq = q.size(0), T = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), S = k.size(2), G = Hq / Hkv;
  at::Tensor qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  AttentionRef r;
  r.out = at::zeros({n_seq, T, Hq, D}, at::kDouble);
  r.probs = at::zeros({n_seq, Hkv, G, T, S}, at::kDouble);
  for (int64_t s = 0; s < n_seq; ++s)
    for (int64_t kh = 0; kh < Hkv; ++kh) {
      const int64_t n = len[s][kh].item<int64_t>();
      if (n == 0) continue;
      at::Tensor K = kd[s][kh].narrow(0, 0, n), V = vd[s][kh].narrow(0, 0, n);  // [n, D]
      at::Tensor P = pos[s][kh].narrow(0, 0, n);
      for (int64_t t = 0; t < T; ++t) {
        at::Tensor vis = P <= qpos[s][t].item<int64_t>();  // [n]
        if (!vis.any().item<bool>()) continue;
        for (int64_t g = 0; g < G; ++g) {
          const int64_t h = kh * G + g;
          at::Tensor sc = at::matmul(K, qd[s][t][h]) * scale;  // [n]
          sc = sc.masked_fill(vis.logical_not(), -std::numeric_limits<double>::infinity());
          at::Tensor p = at::softmax(sc, 0);
          r.out[s][t][h].copy_(at::matmul(p, V));
          r.probs[s][kh][g][t].narrow(0, 0, n).copy_(p);
        }
      }
    }
  return r;
}

/// Per-key statistics over the T queries of `probs` [n_seq, Hkv, G, T, S]: sum, max, min -> [n_seq, Hkv, G, S].
/// bf16: round each probability to bf16 first (the judge's parity features, judge/features.cpp).
struct StatsRef {
  at::Tensor sum, max, min;
};
inline StatsRef reference_stats(const at::Tensor& probs, bool bf16) {
  at::Tensor p = bf16 ? probs.to(at::kFloat).to(at::kBFloat16).to(at::kDouble) : probs;
  return {p.sum(3), p.amax(3), p.amin(3)};
}

/// `live` [n_seq, Hkv, G, S] bool: slot < len of its row (the slots the statistics kernels write).
inline at::Tensor live_slots(const at::Tensor& len, int64_t G, int64_t S) {
  at::Tensor slot = at::arange(S, at::kLong).view({1, 1, 1, S});
  return (slot < len.unsqueeze(-1).unsqueeze(-1)).expand({len.size(0), len.size(1), G, S});
}

// ---- compaction -------------------------------------------------------------------------------------------------

struct CompactRef {
  at::Tensor k, v, pos, len;    // as the inputs; k/v rows past the new length keep their old contents
  std::vector<at::Tensor> acc;  // each [n_seq, Hkv, G, S]
};

/// Order-preserving compaction by index_select: row (s, h) keeps the slots j < len[s, h] with keep[s, h, j] != 0, in
/// order, at the front; positions past the new length are -1, accumulators 0.
inline CompactRef reference_compact(const at::Tensor& k, const at::Tensor& v, const at::Tensor& pos,
                                    const at::Tensor& len, const std::vector<at::Tensor>& acc, const at::Tensor& keep) {
  CompactRef r{k.clone(), v.clone(), pos.clone(), len.clone(), {}};
  for (const auto& a : acc) r.acc.push_back(a.clone());
  for (int64_t s = 0; s < k.size(0); ++s)
    for (int64_t h = 0; h < k.size(1); ++h) {
      const int64_t n = len[s][h].item<int64_t>();
      at::Tensor idx = keep[s][h].narrow(0, 0, n).to(at::kBool).nonzero().view({-1});
      const int64_t m = idx.numel();
      r.k[s][h].narrow(0, 0, m).copy_(k[s][h].index_select(0, idx));
      r.v[s][h].narrow(0, 0, m).copy_(v[s][h].index_select(0, idx));
      r.pos[s][h].fill_(-1);
      r.pos[s][h].narrow(0, 0, m).copy_(pos[s][h].index_select(0, idx));
      for (size_t a = 0; a < acc.size(); ++a) {
        r.acc[a][s][h].zero_();
        r.acc[a][s][h].narrow(1, 0, m).copy_(acc[a][s][h].index_select(1, idx));
      }
      r.len[s][h] = m;
    }
  return r;
}

}  // namespace fkv::test
