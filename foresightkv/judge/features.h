// The judge's per-token inputs (foresightkv-spec.md §B.2), built from an eviction event's LayerView (the
// Evictor's post-RoPE keys/values, the observed queries' attention probabilities and the cum/dec accumulators
// that follow entries through compaction). The judge never touches the model.
//
//   x[i] = [ k_i (d) | v_i (d) | MAX_g | MIN_g | SUM_g | SUM16_g | SUM8_g | SUM32_g | CUM_g | DEC_g ]
//
// feature-major statistics: the G values of MAX (query heads h = j*G + g), then the G values of MIN, ...; F = 2d + 8G.
// The order SUM, SUM16, SUM8, SUM32 is the official code's.
//
// Variants (EvictionConfig::variant; say which one a result used):
//   intended  MAX/MIN/SUM over the last segment's queries (the last min(nq, segment) observed queries: the chunk
//             that triggered the event, as in training, §P.2 (iii)); SUM8/16/32 over the last 8/16/32 of them;
//             DEC = the 0.9-decayed accumulator (the Evictor's intended dec).
//   parity    the released code: probabilities rounded to bf16; MAX/MIN/SUM over every query the event observed
//             (at the first event: all of them); SUM8 = SUM16 = SUM32 = SUM (the slicing bug, §B.2); DEC = CUM
//             (the Evictor's parity dec is a copy of cum).
#pragma once
#include <ATen/core/Tensor.h>

#include "foresightkv/evict/policy.h"

namespace fkv::judge {

struct FeatureOptions {
  bool parity = false;
  int64_t segment = 0;  // L: queries of the last segment (intended MAX/MIN/SUM); 0 = every observed query
};

/// Statistics [Hkv, n_cand, 8G] (fp32) of candidate slots [0, n_cand) of `view` (needs probs, cum, dec).
at::Tensor attention_features(const evict::LayerView& view, int64_t n_cand, const FeatureOptions& opt);

/// Full judge input [Hkv, n_cand, 2d + 8G] (fp32): keys, values, attention_features.
at::Tensor build_features(const evict::LayerView& view, int64_t n_cand, const FeatureOptions& opt);

}  // namespace fkv::judge
