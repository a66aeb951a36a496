#include "foresightkv/judge/features.h"

#include <ATen/ATen.h>

#include <fmt/ostream.h>

#include "foresightkv/core/error.h"

namespace fkv::judge {

at::Tensor attention_features(const evict::LayerView& v, int64_t n_cand, const FeatureOptions& o) {
  FKV_CHECK(v.probs.defined() && v.cum.defined() && v.dec.defined() && v.probs.size(2) > 0,
            "judge features: the eviction event has no attention statistics (the judge policy needs observed "
            "queries and accumulators: query_window >= 1)");
  const int64_t H = v.probs.size(0), G = v.probs.size(1), nq = v.probs.size(2);
  FKV_CHECK(n_cand >= 0 && n_cand <= v.probs.size(3), "judge features: {} candidates of {} entries", n_cand,
            v.probs.size(3));
  at::Tensor P = v.probs.narrow(3, 0, n_cand);  // [H, G, nq, C]
  if (o.parity) P = P.to(at::kBFloat16).to(at::kFloat);
  at::Tensor seg = P;
  if (!o.parity && o.segment > 0 && o.segment < nq) seg = P.narrow(2, nq - o.segment, o.segment);
  const int64_t ns = seg.size(2);
  at::Tensor mx = seg.amax(2), mn = seg.amin(2), sum = seg.sum(2);  // [H, G, C]
  auto last_sum = [&](int64_t w) { return w >= ns ? sum : seg.narrow(2, ns - w, w).sum(2); };
  at::Tensor s16 = o.parity ? sum : last_sum(16), s8 = o.parity ? sum : last_sum(8), s32 = o.parity ? sum : last_sum(32);
  at::Tensor cum = v.cum.narrow(2, 0, n_cand), dec = v.dec.narrow(2, 0, n_cand);
  at::Tensor st = at::stack({mx, mn, sum, s16, s8, s32, cum, dec}, 1);  // [H, 8, G, C]
  return st.reshape({H, 8 * G, n_cand}).transpose(1, 2).contiguous();  // [H, C, 8G], index f*G + g
}

at::Tensor build_features(const evict::LayerView& v, int64_t n_cand, const FeatureOptions& o) {
  at::Tensor a = attention_features(v, n_cand, o);
  return at::cat({v.k.narrow(1, 0, n_cand), v.v.narrow(1, 0, n_cand), a}, 2);
}

}  // namespace fkv::judge
