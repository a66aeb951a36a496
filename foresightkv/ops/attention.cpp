// Decode attention kernel: per (sequence, KV head, query) one pass for scores, a max/exp/sum pass
// and a weighted sum of V. The G query heads of a KV head are processed together so each cached
// key/value row is read once from memory per query token.
#include "foresightkv/ops/attention.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

#include "foresightkv/core/error.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace fkv::ops {
namespace {

inline float dot(const float* a, const float* b, int64_t n) {
#ifdef __AVX512F__
  if (n % 16 == 0) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    return _mm512_reduce_add_ps(acc);
  }
#endif
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float* y, float a, const float* x, int64_t n) {
#ifdef __AVX512F__
  if (n % 16 == 0) {
    const __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16)
      _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

void attention_decode_f32(const AttentionArgs& a) {
  FKV_CHECK_ARG(a.n_head_q % a.n_head_kv == 0, "attention: Hq {} not a multiple of Hkv {}", a.n_head_q, a.n_head_kv);
  const int64_t G = a.n_head_q / a.n_head_kv, D = a.head_dim, S = a.capacity;
  const int64_t Hq = a.n_head_q, Hkv = a.n_head_kv, T = a.n_tok;
  // One work item = (sequence, query token, query head): Hq items per token balance 2 threads well
  // (SmolLM2 9, Qwen2.5-0.5B 14); a KV head's rows are re-read by its G heads from L2.
  const int64_t n_items = a.n_seq * T * Hq;
  at::parallel_for(0, n_items, 1, [&](int64_t b, int64_t e) {
    std::vector<float> scores;
    for (int64_t it = b; it < e; ++it) {
      const int64_t h = it % Hq, t = (it / Hq) % T, s = it / (Hq * T);
      const int64_t g = h / G;
      const int64_t len = a.len[s * Hkv + g];
      const int64_t qp = a.qpos[s * T + t];
      const float* kb = a.k + (s * Hkv + g) * S * D;
      const float* vb = a.v + (s * Hkv + g) * S * D;
      const int64_t* pb = a.pos + (s * Hkv + g) * S;
      const float* qh = a.q + ((s * T + t) * Hq + h) * D;
      float* o = a.out + ((s * T + t) * Hq + h) * D;
      for (int64_t d = 0; d < D; ++d) o[d] = 0.f;
      scores.resize(static_cast<size_t>(len));
      float* r = scores.data();
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < len; ++j) {
        r[j] = pb[j] <= qp ? dot(qh, kb + j * D, D) * a.scale : -std::numeric_limits<float>::infinity();
        mx = std::max(mx, r[j]);
      }
      if (mx == -std::numeric_limits<float>::infinity()) continue;  // nothing visible: zero output
      float sum = 0.f;
      for (int64_t j = 0; j < len; ++j) {
        r[j] = std::exp(r[j] - mx);
        sum += r[j];
      }
      const float inv = 1.f / sum;
      for (int64_t j = 0; j < len; ++j)
        if (r[j] != 0.f) axpy(o, r[j] * inv, vb + j * D, D);
    }
  });
}

}  // namespace fkv::ops
