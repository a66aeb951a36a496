// Decode attention kernel: per (sequence, KV head, query) one pass for scores, a max/exp/sum pass
// and a weighted sum of V. The G query heads of a KV head are processed together so each cached
// key/value row is read once from memory per query token. On AVX2 builds a key row is also loaded
// (and converted from fp16) once for up to 4 heads, and the weighted sum keeps 16 output columns of
// up to 6 heads in registers over all keys; both reproduce the per-head loops bit for bit (same FMA
// chains), measured 1.7x (fp32 KV) and 2.1x (fp16 KV) faster on the Qwen2.5-0.5B shape at 1024 keys.
#include "foresightkv/ops/attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "foresightkv/core/error.h"
#include "foresightkv/io/quant.h"

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

namespace fkv::ops {
namespace {

#if defined(__AVX2__) || defined(__F16C__)
/// Sum of the 8 lanes of an AVX register.
inline float hsum256(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}
#endif

inline float dot(const float* a, const float* b, int64_t n) {
#ifdef __AVX512F__
  if (n % 16 == 0) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    return _mm512_reduce_add_ps(acc);
  }
#elif defined(__AVX2__) && defined(__FMA__)
  if (n % 8 == 0) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    if (i < n) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    const __m256 acc = _mm256_add_ps(acc0, acc1);
    return hsum256(acc);
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
#elif defined(__AVX2__) && defined(__FMA__)
  if (n % 8 == 0) {
    const __m256 va = _mm256_set1_ps(a);
    for (int64_t i = 0; i < n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

/// fp16 row variants: K/V rows stored as IEEE half, converted to fp32 in registers (F16C).
inline float dot(const float* a, const uint16_t* b, int64_t n) {
#if defined(__F16C__) && defined(__FMA__)
  if (n % 8 == 0) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8)
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i),
                            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i))), acc);
    return hsum256(acc);
  }
#endif
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * io::fp16_to_fp32(b[i]);
  return s;
}

inline void axpy(float* y, float a, const uint16_t* x, int64_t n) {
#if defined(__F16C__) && defined(__FMA__)
  if (n % 8 == 0) {
    const __m256 va = _mm256_set1_ps(a);
    for (int64_t i = 0; i < n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))),
                                              _mm256_loadu_ps(y + i)));
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) y[i] += a * io::fp16_to_fp32(x[i]);
}

#ifdef __AVX512F__
/// exp(x) for 16 lanes, x <= 0 (softmax after max subtraction): 2^(x log2 e) = 2^n * 2^f with
/// n = round(x log2 e), f in [-0.5, 0.5], 2^f by a degree-6 polynomial (relative error < 2e-7,
/// below fp32 rounding of the subsequent sums). Inputs below -87 flush to 0, like expf's underflow.
inline __m512 exp_neg_ps(__m512 x) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);  // -inf (masked) -> 0
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 t = _mm512_mul_ps(x, log2e);
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  // 2^f = e^(f ln2): Taylor coefficients of e^y in y = f ln 2, |y| <= 0.347
  const __m512 y = _mm512_mul_ps(f, _mm512_set1_ps(0.693147180559945309f));
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, y, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, y, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, y, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, y, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, y, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, y, _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(p, n));
}
#elif defined(__AVX2__) && defined(__FMA__)
/// 8-lane version of exp_neg_ps (same polynomial); 2^n is built in the exponent field.
inline __m256 exp_neg_ps(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 live = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);  // -inf (masked) -> 0
  x = _mm256_max_ps(x, lo);
  const __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 y = _mm256_mul_ps(_mm256_sub_ps(t, n), _mm256_set1_ps(0.693147180559945309f));
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, y, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, y, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, y, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, y, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, y, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, y, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), live);
}
#endif

/// r[j] = exp(r[j] - mx) for all j; returns the sum.
inline float exp_sum(float* r, int64_t len, float mx) {
  float sum = 0.f;
  int64_t j = 0;
#ifdef __AVX512F__
  const __m512 vmx = _mm512_set1_ps(mx);
  __m512 acc = _mm512_setzero_ps();
  for (; j + 16 <= len; j += 16) {
    const __m512 e = exp_neg_ps(_mm512_sub_ps(_mm512_loadu_ps(r + j), vmx));
    _mm512_storeu_ps(r + j, e);
    acc = _mm512_add_ps(acc, e);
  }
  sum = _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  for (; j + 8 <= len; j += 8) {
    const __m256 e = exp_neg_ps(_mm256_sub_ps(_mm256_loadu_ps(r + j), vmx));
    _mm256_storeu_ps(r + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  sum = hsum256(acc);
#endif
  for (; j < len; ++j) {
    r[j] = std::exp(r[j] - mx);
    sum += r[j];
  }
  return sum;
}


#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(__AVX512F__)
#define FKV_ATTN_BLOCKED 1
// Blocked forms of dot/axpy for the G query heads of one KV head (AVX2): each K/V row is loaded (and
// converted from fp16) once for several heads. They reproduce dot()/axpy() above operation for
// operation, per head: the same lane-wise FMA chains (two accumulators per 16 columns for fp32 rows,
// one for fp16 rows), the same final reduction, the same skip of zero weights; so results are bitwise
// those of the per-head calls.
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// out[h] = dot(q + h * D, k, D) for h < HB; D % 8 == 0.
template <int HB>
inline void dots(const float* q, const float* k, int64_t D, float* out) {
  __m256 a0[HB], a1[HB];
  for (int h = 0; h < HB; ++h) a0[h] = _mm256_setzero_ps(), a1[h] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= D; i += 16) {
    const __m256 k0 = load8(k + i), k1 = load8(k + i + 8);
    for (int h = 0; h < HB; ++h) {
      a0[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * D + i), k0, a0[h]);
      a1[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * D + i + 8), k1, a1[h]);
    }
  }
  if (i < D) {
    const __m256 k0 = load8(k + i);
    for (int h = 0; h < HB; ++h) a0[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * D + i), k0, a0[h]);
  }
  for (int h = 0; h < HB; ++h) out[h] = hsum256(_mm256_add_ps(a0[h], a1[h]));
}
template <int HB>
inline void dots(const float* q, const uint16_t* k, int64_t D, float* out) {
  __m256 a[HB];
  for (int h = 0; h < HB; ++h) a[h] = _mm256_setzero_ps();
  for (int64_t i = 0; i < D; i += 8) {
    const __m256 kv = load8(k + i);
    for (int h = 0; h < HB; ++h) a[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * D + i), kv, a[h]);
  }
  for (int h = 0; h < HB; ++h) out[h] = hsum256(a[h]);
}
constexpr int kDotHeads = 4;  // fp32: 8 accumulators + 2 key vectors

// o[h][d0 + 0..8 NV) += sum over j of p[h * ldp + j] * v[j * D + d0 + 0..8 NV) (j in order, zero weights
// skipped), for h < HB: the accumulators of 8 NV output columns (NV = 1 or 2) of HB heads stay in registers
// over all keys.
template <int HB, int NV, typename KV>
inline void pv_block(const float* p, int64_t ldp, const KV* v, int64_t n, int64_t D, int64_t d0, float* o) {
  __m256 acc[HB][NV];
  for (int h = 0; h < HB; ++h)
    for (int c = 0; c < NV; ++c) acc[h][c] = _mm256_loadu_ps(o + h * D + d0 + 8 * c);
  for (int64_t j = 0; j < n; ++j) {
    __m256 vv[NV];
    for (int c = 0; c < NV; ++c) vv[c] = load8(v + j * D + d0 + 8 * c);
    for (int h = 0; h < HB; ++h) {
      const float w = p[h * ldp + j];
      if (w == 0.f) continue;
      const __m256 wv = _mm256_set1_ps(w);
      for (int c = 0; c < NV; ++c) acc[h][c] = _mm256_fmadd_ps(wv, vv[c], acc[h][c]);
    }
  }
  for (int h = 0; h < HB; ++h)
    for (int c = 0; c < NV; ++c) _mm256_storeu_ps(o + h * D + d0 + 8 * c, acc[h][c]);
}
constexpr int kPvHeads = 6;  // 12 accumulators + 2 value vectors + 1 weight

template <typename KV>
void dots_heads(const float* q, const KV* k, int64_t D, int64_t G, float* out) {
  for (int64_t h0 = 0; h0 < G; h0 += kDotHeads) {
    switch (std::min<int64_t>(kDotHeads, G - h0)) {
      case 1: dots<1>(q + h0 * D, k, D, out + h0); break;
      case 2: dots<2>(q + h0 * D, k, D, out + h0); break;
      case 3: dots<3>(q + h0 * D, k, D, out + h0); break;
      default: dots<4>(q + h0 * D, k, D, out + h0); break;
    }
  }
}

template <int HB, typename KV>
void pv_heads_n(const float* p, int64_t ldp, const KV* v, int64_t n, int64_t D, float* o) {
  int64_t d0 = 0;
  for (; d0 + 16 <= D; d0 += 16) pv_block<HB, 2>(p, ldp, v, n, D, d0, o);
  if (d0 < D) pv_block<HB, 1>(p, ldp, v, n, D, d0, o);
}

template <typename KV>
void pv_heads(const float* p, int64_t ldp, const KV* v, int64_t n, int64_t D, int64_t G, float* o) {
  for (int64_t h0 = 0; h0 < G; h0 += kPvHeads) {
    const float* ph = p + h0 * ldp;
    float* oh = o + h0 * D;
    switch (std::min<int64_t>(kPvHeads, G - h0)) {
      case 1: pv_heads_n<1>(ph, ldp, v, n, D, oh); break;
      case 2: pv_heads_n<2>(ph, ldp, v, n, D, oh); break;
      case 3: pv_heads_n<3>(ph, ldp, v, n, D, oh); break;
      case 4: pv_heads_n<4>(ph, ldp, v, n, D, oh); break;
      case 5: pv_heads_n<5>(ph, ldp, v, n, D, oh); break;
      default: pv_heads_n<6>(ph, ldp, v, n, D, oh); break;
    }
  }
}
#endif

}  // namespace

namespace {
template <typename KV>
void attention_decode_impl(const AttentionArgs& a) {
  FKV_CHECK_ARG(a.n_head_q % a.n_head_kv == 0, "attention: Hq {} not a multiple of Hkv {}", a.n_head_q, a.n_head_kv);
  const int64_t G = a.n_head_q / a.n_head_kv, D = a.head_dim, S = a.capacity;
  const int64_t Hq = a.n_head_q, Hkv = a.n_head_kv, T = a.n_tok;
  // Work item = (sequence, token, KV head, key split). The G query heads of a KV head are processed
  // together so every cached K/V row is read from memory once per token (decode is bound by reading
  // the cache). Long caches are split into key ranges (flash-decoding) so both threads stay busy even
  // with few KV heads; each split keeps a running max m, sum l and unnormalized output o per head,
  // merged afterwards: out = sum_i e^(m_i - M) o_i / sum_i e^(m_i - M) l_i.
  const int64_t n_units = a.n_seq * T * Hkv;
  int64_t max_len = 0;
  for (int64_t i = 0; i < a.n_seq * Hkv; ++i) max_len = std::max(max_len, a.len[i]);
  const int64_t threads = at::get_num_threads();
  constexpr int64_t kMinKeysPerSplit = 256;  // below this, merge overhead beats the parallelism gained
  int64_t n_split = 1;
  if (n_units < 2 * threads) n_split = std::max<int64_t>(1, std::min<int64_t>((2 * threads + n_units - 1) / n_units,
                                                                               max_len / kMinKeysPerSplit));
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // partials per (unit, split, head-in-group): m, l and o[D]
  std::vector<float> part_m(static_cast<size_t>(n_units * n_split * G), neg_inf);
  std::vector<float> part_l(static_cast<size_t>(n_units * n_split * G), 0.f);
  std::vector<float> part_o(static_cast<size_t>(n_units * n_split * G * D), 0.f);
#ifdef FKV_ATTN_BLOCKED
  const bool blocked = D % 8 == 0 && G <= 64;  // else the per-head dot/axpy below
#endif
  at::parallel_for(0, n_units * n_split, 1, [&](int64_t b, int64_t e) {
    std::vector<float> scores;
    for (int64_t it = b; it < e; ++it) {
      const int64_t split = it % n_split, unit = it / n_split;
      const int64_t g = unit % Hkv, t = (unit / Hkv) % T, s = unit / (Hkv * T);
      const int64_t len = a.len[s * Hkv + g];
      const int64_t j0 = len * split / n_split, j1 = len * (split + 1) / n_split, n = j1 - j0;
      if (n <= 0) continue;
      const int64_t qp = a.qpos[s * T + t];
      const KV* kb = static_cast<const KV*>(a.k) + (s * Hkv + g) * S * D;
      const KV* vb = static_cast<const KV*>(a.v) + (s * Hkv + g) * S * D;
      const int64_t* pb = a.pos + (s * Hkv + g) * S;
      const float* qg = a.q + ((s * T + t) * Hq + g * G) * D;  // the G query heads of KV head g
      scores.resize(static_cast<size_t>(G * n));
      float* sc = scores.data();
      for (int64_t j = 0; j < n; ++j) {
        const KV* kr = kb + (j0 + j) * D;
        const bool visible = pb[j0 + j] <= qp;
#ifdef FKV_ATTN_BLOCKED
        if (blocked) {
          float d[64];  // G <= 64 when blocked
          if (visible) dots_heads(qg, kr, D, G, d);
          for (int64_t h = 0; h < G; ++h) sc[h * n + j] = visible ? d[h] * a.scale : neg_inf;
          continue;
        }
#endif
        for (int64_t h = 0; h < G; ++h) sc[h * n + j] = visible ? dot(qg + h * D, kr, D) * a.scale : neg_inf;
      }
      float* pm = part_m.data() + it * G;
      float* pl = part_l.data() + it * G;
      float* po = part_o.data() + it * G * D;
      bool any = false;
      for (int64_t h = 0; h < G; ++h) {
        float mx = neg_inf;
        for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sc[h * n + j]);
        pm[h] = mx;
        if (mx == neg_inf) continue;
        pl[h] = exp_sum(sc + h * n, n, mx);
        any = true;
      }
      if (!any) continue;
#ifdef FKV_ATTN_BLOCKED
      if (blocked) {
        pv_heads(sc, n, vb + j0 * D, n, D, G, po);
        continue;
      }
#endif
      for (int64_t j = 0; j < n; ++j) {
        const KV* vr = vb + (j0 + j) * D;
        for (int64_t h = 0; h < G; ++h) {
          const float p = sc[h * n + j];
          if (p != 0.f) axpy(po + h * D, p, vr, D);
        }
      }
    }
  });
  // merge splits
  for (int64_t unit = 0; unit < n_units; ++unit) {
    const int64_t g = unit % Hkv, t = (unit / Hkv) % T, s = unit / (Hkv * T);
    for (int64_t h = 0; h < G; ++h) {
      float* o = a.out + ((s * T + t) * Hq + g * G + h) * D;
      float M = neg_inf;
      for (int64_t sp = 0; sp < n_split; ++sp) M = std::max(M, part_m[(unit * n_split + sp) * G + h]);
      for (int64_t d = 0; d < D; ++d) o[d] = 0.f;
      if (M == neg_inf) continue;  // nothing visible: zero output
      float L = 0.f;
      for (int64_t sp = 0; sp < n_split; ++sp) {
        const int64_t idx = (unit * n_split + sp) * G + h;
        if (part_m[idx] == neg_inf) continue;
        const float w = std::exp(part_m[idx] - M);
        L += w * part_l[idx];
        axpy(o, w, part_o.data() + idx * D, D);
      }
      const float inv = 1.f / L;
      for (int64_t d = 0; d < D; ++d) o[d] *= inv;
    }
  }
}
}  // namespace

void attention_decode_f32(const AttentionArgs& a) {
  if (a.kv_f16) {
    attention_decode_impl<uint16_t>(a);
  } else {
    attention_decode_impl<float>(a);
  }
}

}  // namespace fkv::ops
