// Opt-in activation-quantized decode products (ops/qmatmul.h, matmul_rows_q8): llama.cpp's scheme on
// AVX2. Each activation row is quantized per 32 columns to int8 (dx = max|x| / 127, q = round(x / dx),
// round-half-even, via x * (1 / dx)); each 32-element chunk of a weight row is expanded to signed int8
// levels; the 32 integer products are summed exactly with maddubs/madd (|level| <= 128, |q| <= 127, so
// a pair sum is at most 32,512 and fits int16), then scaled by d * dx in fp32:
//     y[t, r] = sum_chunks  d_chunk * dx_chunk * sum_j level_j * q_j   (+ m_chunk * dx_chunk * sum_j q_j)
// (Q6_K: its int8 sub-block scale multiplies the integer sums in madd, |4 * 32 * 127 * 128| < 2^24, and
// d_chunk is the block's fp16 d; K-quant scales are unpacked once per 256-element block), which equals
//     sum_c deq(W)[r, c] * xq[t, c]  with xq = dx * q,
// up to fp32 summation order (the integer parts are exact). The deviation from the fp32 path is the
// activation rounding only (at most dx / 2 = max|x| / 254 per element); tests/unit/quant/qmatmul_test.cpp
// checks the identity above, and the model tests report the logit deviation on real models.
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "foresightkv/core/error.h"
#include "foresightkv/ops/qmatmul.h"
#include "foresightkv/ops/qmatmul_internal.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define FKV_Q8_SIMD 1
#endif

namespace fkv::ops {

using io::GgmlType;

bool matmul_q8_supported(GgmlType t) {
#ifdef FKV_Q8_SIMD
  switch (t) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::IQ4_NL: case GgmlType::IQ4_XS:
      return true;
    default:
      return false;
  }
#else
  (void)t;
  return false;
#endif
}

void quantize_activations_q8(const float* x, int64_t n, int8_t* q, float* dx) {
  FKV_CHECK_ARG(n % 32 == 0, "quantize_activations_q8: {} columns are not a multiple of 32", n);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* p = x + b * 32;
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(p[j]));
    const float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
    dx[b] = d;
    for (int j = 0; j < 32; ++j) q[b * 32 + j] = static_cast<int8_t>(std::nearbyint(p[j] * id));
  }
}

#ifdef FKV_Q8_SIMD
namespace {

constexpr int kMaxTok = 8;
constexpr int64_t kMinBytesPerTask = 32 * 1024;

using detail::half2_to_float;
using detail::half_to_float;

// 32 bits -> 32 bytes: 0xFF where the bit is set (llama.cpp's bytes_from_bits_32).
inline __m256i bytes_from_bits(const uint8_t* p) {
  uint32_t x;
  std::memcpy(&x, p, 4);
  const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202,
                                          0x0303030303030303);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(int(x)), shuf);
  const __m256i mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
  v = _mm256_or_si256(v, mask);
  return _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
}

// 16 bytes of nibbles -> 32 levels: element j = low nibble of byte j, element j + 16 = its high nibble.
inline __m256i nibbles(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

// Each decoder: kBlock elements in kBytes bytes, kChunks = kBlock / 32 chunks of 32 elements. prep(blk, p)
// reads what the block's chunks share (fp16 scales, packed sub-block scales) once per block; levels(blk, c,
// p) returns chunk c's 32 signed levels; scale(p, c) its float scale and min(p, c) its additive min (kMin),
// so that element = scale * level + min. kIntScale formats (Q2_K, Q3_K, Q6_K) keep a per-16 integer scale that
// iscale(blk, c) returns as int16 lanes (0..7: elements 0..15, 8..15: elements 16..31) for the madd step;
// their scale(p, c) is the block's fp16 d alone. kMin16 formats (Q2_K) have a min per 16 elements instead of
// per chunk: min16(p, blk, c, s) is chunk c's min term divided by dx, given the integer sums s[0], s[1] of
// the quantized activations over its two halves.
struct Q4_0 {
  static constexpr int kBlock = 32, kBytes = 18;
  static constexpr bool kMin = false, kIntScale = false, kMin16 = false;
  struct Prep { float d; };
  static void prep(const uint8_t* b, Prep& p) { p.d = half_to_float(b); }
  static __m256i levels(const uint8_t* b, int, const Prep&) { return _mm256_sub_epi8(nibbles(b + 2), _mm256_set1_epi8(8)); }
  static float scale(const Prep& p, int) { return p.d; }
};
struct Q4_1 {
  static constexpr int kBlock = 32, kBytes = 20;
  static constexpr bool kMin = true, kIntScale = false, kMin16 = false;
  struct Prep { float d, m; };
  static void prep(const uint8_t* b, Prep& p) { half2_to_float(b, p.d, p.m); }
  static __m256i levels(const uint8_t* b, int, const Prep&) { return nibbles(b + 4); }
  static float scale(const Prep& p, int) { return p.d; }
  static float min(const Prep& p, int) { return p.m; }
};
struct Q5_0 {
  static constexpr int kBlock = 32, kBytes = 22;
  static constexpr bool kMin = false, kIntScale = false, kMin16 = false;
  struct Prep { float d; };
  static void prep(const uint8_t* b, Prep& p) { p.d = half_to_float(b); }
  static __m256i levels(const uint8_t* b, int, const Prep&) {
    // nibble - 16 where the fifth bit is clear is the byte 0xF0 | nibble (llama.cpp's form)
    return _mm256_or_si256(nibbles(b + 6), _mm256_andnot_si256(bytes_from_bits(b + 2), _mm256_set1_epi8(char(0xF0))));
  }
  static float scale(const Prep& p, int) { return p.d; }
};
struct Q5_1 {
  static constexpr int kBlock = 32, kBytes = 24;
  static constexpr bool kMin = true, kIntScale = false, kMin16 = false;
  struct Prep { float d, m; };
  static void prep(const uint8_t* b, Prep& p) { half2_to_float(b, p.d, p.m); }
  static __m256i levels(const uint8_t* b, int, const Prep&) {
    const __m256i hb = _mm256_and_si256(bytes_from_bits(b + 4), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(nibbles(b + 8), hb);
  }
  static float scale(const Prep& p, int) { return p.d; }
  static float min(const Prep& p, int) { return p.m; }
};
struct Q8_0 {
  static constexpr int kBlock = 32, kBytes = 34;
  static constexpr bool kMin = false, kIntScale = false, kMin16 = false;
  struct Prep { float d; };
  static void prep(const uint8_t* b, Prep& p) { p.d = half_to_float(b); }
  static __m256i levels(const uint8_t* b, int, const Prep&) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
  }
  static float scale(const Prep& p, int) { return p.d; }
};
// Q4_K: 8 chunks of 32 with 6-bit scales/mins (see io/quant.cpp and DecQ4_K in qmatmul.cpp), unpacked once
// per block.
struct Q4_K {
  static constexpr int kBlock = 256, kBytes = 144;
  static constexpr bool kMin = true, kIntScale = false, kMin16 = false;
  struct Prep { float d[8], m[8]; };
  static void prep(const uint8_t* b, Prep& p) {
    float d, dmin;
    half2_to_float(b, d, dmin);
    for (int g = 0; g < 8; ++g) detail::q4k_group_scale(b, g, d, dmin, p.d[g], p.m[g]);
  }
  static __m256i levels(const uint8_t* b, int g, const Prep&) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + 32 * (g / 2)));
    return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(4 * (g & 1))), _mm256_set1_epi8(0x0F));
  }
  static float scale(const Prep& p, int g) { return p.d[g]; }
  static float min(const Prep& p, int g) { return p.m[g]; }
};
// Q5_K: Q4_K's scales and nibbles (at b + 48) plus a fifth bit, bit g of each qh[l] byte (qh at b + 16) for chunk g.
struct Q5_K {
  static constexpr int kBlock = 256, kBytes = 176;
  static constexpr bool kMin = true, kIntScale = false, kMin16 = false;
  using Prep = Q4_K::Prep;
  static void prep(const uint8_t* b, Prep& p) { Q4_K::prep(b, p); }
  static __m256i levels(const uint8_t* b, int g, const Prep& p) {
    const __m256i lo = Q4_K::levels(b + 32, g, p);  // Q4_K's nibbles sit at b + 16, Q5_K's at b + 48
    // 16-bit shifts by g <= 7 keep each byte's bit g in that byte's bit 0
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
    const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(g)), _mm256_set1_epi8(1));
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
  }
  static float scale(const Prep& p, int g) { return p.d[g]; }
  static float min(const Prep& p, int g) { return p.m[g]; }
};
// Q2_K and Q3_K: chunk c (elements 32c..32c + 31, the 16-element groups 2c and 2c + 1) is the 2-bit field
// c % 4 of the 32 qs bytes of half c / 4 (see DecQ2_K / DecQ3_K in qmatmul.cpp and io/quant.cpp).
inline __m256i two_bit_field(const uint8_t* qs, int c) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * (c / 4)));
  return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * (c % 4))), _mm256_set1_epi8(3));
}
// Q2_K: integer scales scales[s] & 15 on d, mins scales[s] >> 4 on dmin, both per 16 elements.
struct Q2_K {
  static constexpr int kBlock = 256, kBytes = 84;
  static constexpr bool kMin = false, kIntScale = true, kMin16 = true;
  struct Prep { float d, mneg; };
  static void prep(const uint8_t* b, Prep& p) {
    half2_to_float(b + 80, p.d, p.mneg);
    p.mneg = -p.mneg;
  }
  static __m256i levels(const uint8_t* b, int c, const Prep&) { return two_bit_field(b + 16, c); }
  static float scale(const Prep& p, int) { return p.d; }
  static __m256i iscale(const uint8_t* b, int c) {
    return _mm256_set_m128i(_mm_set1_epi16(b[2 * c + 1] & 0xF), _mm_set1_epi16(b[2 * c] & 0xF));
  }
  static float min16(const Prep& p, const uint8_t* b, int c, const int32_t* s) {
    return p.mneg * float((b[2 * c] >> 4) * s[0] + (b[2 * c + 1] >> 4) * s[1]);
  }
};
// Q3_K: levels = 2-bit field + 4 * (bit c of hmask[l]) - 4, signed 6-bit scales per 16 (io::q3k_scale) on d.
struct Q3_K {
  static constexpr int kBlock = 256, kBytes = 110;
  static constexpr bool kMin = false, kIntScale = true, kMin16 = false;
  struct Prep { float d; };
  static void prep(const uint8_t* b, Prep& p) { p.d = half_to_float(b + 108); }
  static __m256i levels(const uint8_t* b, int c, const Prep&) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(c)), _mm256_set1_epi8(1));
    const __m256i v = _mm256_or_si256(two_bit_field(b + 32, c), _mm256_slli_epi16(hb, 2));
    return _mm256_sub_epi8(v, _mm256_set1_epi8(4));
  }
  static float scale(const Prep& p, int) { return p.d; }
  static __m256i iscale(const uint8_t* b, int c) {
    return _mm256_set_m128i(_mm_set1_epi16(int16_t(io::q3k_scale(b + 96, 2 * c + 1))),
                            _mm_set1_epi16(int16_t(io::q3k_scale(b + 96, 2 * c))));
  }
};
// Q6_K: chunk c holds the 16-element groups 2c and 2c + 1, the two slices of quadrant c % 4 of half c / 4:
// 32 consecutive bytes of ql and of qh each (detail::q6k_levels32).
struct Q6_K {
  static constexpr int kBlock = 256, kBytes = 210;
  static constexpr bool kMin = false, kIntScale = true, kMin16 = false;
  struct Prep { float d; };
  static void prep(const uint8_t* b, Prep& p) { p.d = half_to_float(b + 208); }
  static __m256i levels(const uint8_t* b, int c, const Prep&) { return detail::q6k_levels32(b, c); }
  static float scale(const Prep& p, int) { return p.d; }
  static __m256i iscale(const uint8_t* b, int c) {
    return _mm256_set_m128i(_mm_set1_epi16(int8_t(b[192 + 2 * c + 1])), _mm_set1_epi16(int8_t(b[192 + 2 * c])));
  }
};

// IQ4_NL / IQ4_XS: table levels in [-127, 113] (detail::iq4_levels), so |level| * |q| pairs still fit int16.
inline __m256i iq4_levels32(const uint8_t* qs) {
  __m128i lo, hi;
  detail::iq4_levels(qs, lo, hi);
  return _mm256_set_m128i(hi, lo);
}
struct IQ4_NL {
  static constexpr int kBlock = 32, kBytes = 18;
  static constexpr bool kMin = false, kIntScale = false, kMin16 = false;
  struct Prep { float d; };
  static void prep(const uint8_t* b, Prep& p) { p.d = half_to_float(b); }
  static __m256i levels(const uint8_t* b, int, const Prep&) { return iq4_levels32(b + 2); }
  static float scale(const Prep& p, int) { return p.d; }
};
struct IQ4_XS {
  static constexpr int kBlock = 256, kBytes = 136;
  static constexpr bool kMin = false, kIntScale = false, kMin16 = false;
  struct Prep { float d[8]; };
  static void prep(const uint8_t* b, Prep& p) {
    const float d = half_to_float(b);
    for (int g = 0; g < 8; ++g) p.d[g] = d * float(io::iq4xs_scale(b, g));
  }
  static __m256i levels(const uint8_t* b, int g, const Prep&) { return iq4_levels32(b + 8 + 16 * g); }
  static float scale(const Prep& p, int g) { return p.d[g]; }
};

struct QuantX {
  std::vector<int8_t> q;   // [n_tok][cols]
  std::vector<float> d;    // [n_tok][cols / 32]
  std::vector<float> sum;  // [n_tok][cols / 32]: dx * sum(q) (the min term)
  std::vector<int32_t> isum16;  // [n_tok][cols / 16]: sum(q) per 16 columns (kMin16 formats only)
};

// x [n_tok][cols] quantized per 32 columns, with the per-chunk sums (and per-16 sums when per16). One
// thread-local buffer reused across calls: no allocation per matrix in the decode loop.
const QuantX& quantize_x(const float* x, int64_t n_tok, int64_t cols, bool per16) {
  thread_local QuantX qx;
  const int64_t nc = cols / 32;
  qx.q.resize(size_t(n_tok * cols));
  qx.d.resize(size_t(n_tok * nc));
  qx.sum.resize(size_t(n_tok * nc));
  qx.isum16.resize(per16 ? size_t(2 * n_tok * nc) : 0);
  for (int64_t t = 0; t < n_tok; ++t) {
    quantize_activations_q8(x + t * cols, cols, qx.q.data() + t * cols, qx.d.data() + t * nc);
    for (int64_t c = 0; c < nc; ++c) {
      int s[2] = {0, 0};
      for (int j = 0; j < 32; ++j) s[j / 16] += qx.q[size_t(t * cols + c * 32 + j)];
      qx.sum[size_t(t * nc + c)] = qx.d[size_t(t * nc + c)] * float(s[0] + s[1]);
      if (per16) {
        qx.isum16[size_t(2 * (t * nc + c))] = s[0];
        qx.isum16[size_t(2 * (t * nc + c) + 1)] = s[1];
      }
    }
  }
  return qx;
}

// y[t, r] for rows [r0, r1): per chunk, the 32 level x activation products are summed exactly in int32
// (maddubs on |level| and sign-adjusted x, then madd with 1 or with the per-16 integer scales), converted
// to float and accumulated with the chunk's scale * dx.
template <class D, int NT>
void rows_q8(const WeightView& w, const QuantX& qx, float* y, int64_t r0, int64_t r1) {
  constexpr int CPB = D::kBlock / 32;
  const int64_t cols = w.cols, nc = cols / 32, nb = cols / D::kBlock;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + size_t(r) * w.row_stride;
    __m256 acc[NT];
    float macc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps(), macc[t] = 0.f;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = row + b * D::kBytes;
      typename D::Prep p;
      D::prep(blk, p);
      for (int c = 0; c < CPB; ++c) {
        const int64_t ci = b * CPB + c;
        const __m256i q = D::levels(blk, c, p);
        const __m256i aq = _mm256_sign_epi8(q, q);
        __m256i isc = ones;
        if constexpr (D::kIntScale) isc = D::iscale(blk, c);
        const float d = D::scale(p, c);
        for (int t = 0; t < NT; ++t) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx.q.data() + t * cols + ci * 32));
          const __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(xv, q)), isc);
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(d * qx.d[size_t(t * nc + ci)]), acc[t]);
          if constexpr (D::kMin) macc[t] += D::min(p, c) * qx.sum[size_t(t * nc + ci)];
          if constexpr (D::kMin16)
            macc[t] += D::min16(p, blk, c, qx.isum16.data() + 2 * (t * nc + ci)) * qx.d[size_t(t * nc + ci)];
        }
      }
    }
    for (int t = 0; t < NT; ++t) y[t * w.rows + r] = detail::hsum256(acc[t]) + macc[t];
  }
}

template <class D, size_t... N>
constexpr auto make_table(std::index_sequence<N...>) {
  using Fn = void (*)(const WeightView&, const QuantX&, float*, int64_t, int64_t);
  return std::array<Fn, sizeof...(N)>{&rows_q8<D, int(N) + 1>...};
}

template <class D>
void run_q8(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1) {
  const QuantX& qx = quantize_x(x, n_tok, w.cols, D::kMin16);
  static constexpr auto table = make_table<D>(std::make_index_sequence<kMaxTok>{});
  const auto fn = table[size_t(n_tok - 1)];
  const int64_t rb = std::max<int64_t>(1, int64_t(io::row_bytes(w.type, w.cols)));
  at::parallel_for(r0, r1, std::max<int64_t>(1, kMinBytesPerTask / rb),
                   [&](int64_t b, int64_t e) { fn(w, qx, y, b, e); });
}

}  // namespace
#endif  // FKV_Q8_SIMD

bool matmul_q8_applies(const WeightView& w, int64_t n_tok) {
#ifdef FKV_Q8_SIMD
  return matmul_q8_supported(w.type) && n_tok >= 1 && n_tok <= kMaxTok && w.cols % 32 == 0;
#else
  (void)w, (void)n_tok;
  return false;
#endif
}

void matmul_rows_q8(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1) {
#ifdef FKV_Q8_SIMD
  if (matmul_q8_applies(w, n_tok)) {
    detail::check_args(w, x, n_tok, y, r0, r1);
    if (r0 == r1) return;
    switch (w.type) {
      case GgmlType::Q4_0: run_q8<Q4_0>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::Q4_1: run_q8<Q4_1>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::Q5_0: run_q8<Q5_0>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::Q5_1: run_q8<Q5_1>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::Q8_0: run_q8<Q8_0>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::Q2_K: run_q8<Q2_K>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::Q3_K: run_q8<Q3_K>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::Q4_K: run_q8<Q4_K>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::Q5_K: run_q8<Q5_K>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::Q6_K: run_q8<Q6_K>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::IQ4_NL: run_q8<IQ4_NL>(w, x, n_tok, y, r0, r1); return;
      case GgmlType::IQ4_XS: run_q8<IQ4_XS>(w, x, n_tok, y, r0, r1); return;
      default: break;
    }
  }
#endif
  matmul_rows(w, x, n_tok, y, r0, r1);
}

void matmul_q8(const WeightView& w, const float* x, int64_t n_tok, float* y) {
  matmul_rows_q8(w, x, n_tok, y, 0, w.rows);
}

}  // namespace fkv::ops
