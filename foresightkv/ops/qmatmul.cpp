// Quantized matrix products y[t, r] = sum_c x[t, c] * W[r, c] with W in its GGUF block format.
//
// One kernel body serves AVX2 (8 lanes, 16 registers) and AVX-512 (16 lanes, 32 registers): the
// SIMD structs below wrap the handful of intrinsics the decoders and kernels use, and everything
// else is templated on them. Builds without either get only the portable path.
//
// Block decoders turn one group of 32 (Q6_K: 16) elements into vectors q[] of small integers plus
// a scale d and an additive min m, such that element = d*q + m exactly as io::dequantize_row defines
// it. The decode kernel uses this factorised form per group: d * (q . x) + m * sum(x), so a block
// costs NV FMAs + 1 per activation row and the per-group sums of x are computed once per call. The
// results therefore differ from dequantize-then-dot only by fp32 rounding order (distributivity and
// summation order); tests/unit/quant/qmatmul_test.cpp bounds the difference.
#include "foresightkv/ops/qmatmul.h"

#include <ATen/Parallel.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
// GCC 12's own AVX-512 intrinsics trip -Wuninitialized on their _mm512_undefined_* (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "foresightkv/core/error.h"
#include "foresightkv/ops/qmatmul_internal.h"

namespace fkv::ops {

void detail::check_args(const WeightView& w, const float* x, int64_t n_tok, const float* y, int64_t r0, int64_t r1) {
  FKV_CHECK_ARG(matmul_supported(w.type), "qmatmul: weight type {} is not supported", io::type_name(w.type));
  FKV_CHECK_ARG(w.rows >= 0 && w.cols >= 0 && n_tok >= 0, "qmatmul: negative size (rows {}, cols {}, n_tok {})",
                w.rows, w.cols, n_tok);
  const int64_t bs = io::type_traits(w.type).block_size;
  FKV_CHECK_ARG(w.cols % bs == 0, "qmatmul: {} columns are not a whole number of {} blocks ({} elements)", w.cols,
                io::type_name(w.type), bs);
  const size_t rb = io::row_bytes(w.type, w.cols);
  FKV_CHECK_ARG(w.row_stride >= rb, "qmatmul: row_stride {} is smaller than a {} row of {} columns ({} bytes)",
                w.row_stride, io::type_name(w.type), w.cols, rb);
  FKV_CHECK_ARG(0 <= r0 && r0 <= r1 && r1 <= w.rows, "qmatmul: row range [{}, {}) outside [0, {})", r0, r1, w.rows);
  FKV_CHECK_ARG(r0 == r1 || n_tok == 0 || (w.data && x && y), "qmatmul: null weight, input or output pointer");
}

namespace {

using detail::check_args;

using io::GgmlType;

// n_tok up to this streams weight rows once (decode); above it dequantized tiles feed a GEMM kernel.
constexpr int kDecodeMaxTok = 8;
// Decode: each thread's share of rows should hold at least this many weight bytes.
constexpr int64_t kDecodeMinBytesPerTask = 32 * 1024;
// Prefill: most columns per K-chunk of the micro-kernel; a chunk of kMR weight rows and kMT
// activation rows (7 x 1024 x 4 bytes for AVX2) stays in L1/L2 while it is reused.
constexpr int64_t kPrefillKChunk = 1024;

// ---- portable path ------------------------------------------------------------------------------

void portable_rows(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1) {
  std::vector<float> row(size_t(w.cols));
  for (int64_t r = r0; r < r1; ++r) {
    io::dequantize_row(w.type, w.data + size_t(r) * w.row_stride, row.data(), w.cols);
    for (int64_t t = 0; t < n_tok; ++t) {
      const float* xt = x + t * w.cols;
      float s[4] = {0.f, 0.f, 0.f, 0.f};  // four partial sums: some ILP without -ffast-math
      int64_t c = 0;
      for (; c + 4 <= w.cols; c += 4)
        for (int k = 0; k < 4; ++k) s[k] += row[size_t(c + k)] * xt[c + k];
      for (; c < w.cols; ++c) s[0] += row[size_t(c)] * xt[c];
      y[t * w.rows + r] = (s[0] + s[1]) + (s[2] + s[3]);
    }
  }
}

// Split [r0, r1) over ATen's intra-op threads in contiguous equal shares.
template <class Fn>
void parallel_rows(int64_t r0, int64_t r1, int64_t grain, const Fn& fn) {
  at::parallel_for(r0, r1, std::max<int64_t>(1, grain), [&](int64_t b, int64_t e) { fn(b, e); });
}

int64_t decode_grain(const WeightView& w) {
  const int64_t rb = std::max<int64_t>(1, int64_t(io::row_bytes(w.type, w.cols)));
  return std::max<int64_t>(1, kDecodeMinBytesPerTask / rb);
}

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#define FKV_QMM_SIMD 1

// ---- SIMD wrappers ------------------------------------------------------------------------------

using detail::half2_to_float;
using detail::half_to_float;

#if defined(__AVX512F__)
struct Simd {
  static constexpr int W = 16;          // fp32 lanes
  static constexpr int kMR = 4;         // prefill micro-kernel: weight rows per block
  static constexpr int kMT = 6;         // prefill micro-kernel: tokens per block (24 acc + 6 inputs + 1)
  static constexpr const char* kName = "avx512";
  using F = __m512;
  using I = __m512i;
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(F v) { return _mm512_reduce_add_ps(v); }
  static I u8(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static I i8(const uint8_t* p) { return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static I seti(int v) { return _mm512_set1_epi32(v); }
  static I iota(int b) {
    return _mm512_setr_epi32(b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9, b + 10, b + 11, b + 12,
                             b + 13, b + 14, b + 15);
  }
  static I and_(I a, I b) { return _mm512_and_si512(a, b); }
  static I or_(I a, I b) { return _mm512_or_si512(a, b); }
  static I sub(I a, I b) { return _mm512_sub_epi32(a, b); }
  static I srl(I a, int n) { return _mm512_srl_epi32(a, _mm_cvtsi32_si128(n)); }
  static I sll(I a, int n) { return _mm512_sll_epi32(a, _mm_cvtsi32_si128(n)); }
  static I srlv(I a, I n) { return _mm512_srlv_epi32(a, n); }
  static F cvt(I a) { return _mm512_cvtepi32_ps(a); }
  // 16 signed bytes -> 16 / W vectors of int32.
  static void expand_i8(__m128i v, I* out) { out[0] = _mm512_cvtepi8_epi32(v); }
  static F f16(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static F bf16(const uint8_t* p) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
};
#else
struct Simd {
  static constexpr int W = 8;
  static constexpr int kMR = 4;         // 4 x 3 = 12 accumulators + 3 inputs + 1 weight vector = 16 ymm
  static constexpr int kMT = 3;
  static constexpr const char* kName = "avx2";
  using F = __m256;
  using I = __m256i;
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(F v) { return detail::hsum256(v); }
  static I u8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
  static I i8(const uint8_t* p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
  static I seti(int v) { return _mm256_set1_epi32(v); }
  static I iota(int b) { return _mm256_setr_epi32(b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7); }
  static I and_(I a, I b) { return _mm256_and_si256(a, b); }
  static I or_(I a, I b) { return _mm256_or_si256(a, b); }
  static I sub(I a, I b) { return _mm256_sub_epi32(a, b); }
  static I srl(I a, int n) { return _mm256_srl_epi32(a, _mm_cvtsi32_si128(n)); }
  static I sll(I a, int n) { return _mm256_sll_epi32(a, _mm_cvtsi32_si128(n)); }
  static I srlv(I a, I n) { return _mm256_srlv_epi32(a, n); }
  static F cvt(I a) { return _mm256_cvtepi32_ps(a); }
  static void expand_i8(__m128i v, I* out) {
    out[0] = _mm256_cvtepi8_epi32(v);
    out[1] = _mm256_cvtepi8_epi32(_mm_unpackhi_epi64(v, v));
  }
  static F f16(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static F bf16(const uint8_t* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
};
#endif

using F = Simd::F;
using I = Simd::I;
constexpr int W = Simd::W;

// ---- block decoders -----------------------------------------------------------------------------
// Each decoder describes a block format: kBlock elements in kBytes bytes, split into groups of kGroup
// elements that share one scale. group(blk, g, q, d, m) fills q[kGroup / W] with the integer levels of
// group g (as floats), and sets d and m so that element = d*q + m (kScale false: q are the values;
// kMin false: m = 0). kPlain formats (block size 1 in ggml) may end in a partial group.

struct DecF32 {
  static constexpr int kBlock = 32, kBytes = 128, kGroup = 32;
  static constexpr bool kScale = false, kMin = false, kPlain = true;
  static void group(const uint8_t* b, int, F* q, float&, float&) {
    for (int k = 0; k < kGroup / W; ++k) q[k] = Simd::load(reinterpret_cast<const float*>(b) + k * W);
  }
};

struct DecF16 {
  static constexpr int kBlock = 32, kBytes = 64, kGroup = 32;
  static constexpr bool kScale = false, kMin = false, kPlain = true;
  static void group(const uint8_t* b, int, F* q, float&, float&) {
    for (int k = 0; k < kGroup / W; ++k) q[k] = Simd::f16(b + 2 * k * W);
  }
};

struct DecBF16 {
  static constexpr int kBlock = 32, kBytes = 64, kGroup = 32;
  static constexpr bool kScale = false, kMin = false, kPlain = true;
  static void group(const uint8_t* b, int, F* q, float&, float&) {
    for (int k = 0; k < kGroup / W; ++k) q[k] = Simd::bf16(b + 2 * k * W);
  }
};

// Q4_0 / Q4_1: byte j holds element j (low nibble) and j+16 (high nibble); W divides 16.
struct DecQ4_0 {
  static constexpr int kBlock = 32, kBytes = 18, kGroup = 32;
  static constexpr bool kScale = true, kMin = false, kPlain = false;
  static void group(const uint8_t* b, int, F* q, float& d, float&) {
    d = half_to_float(b);
    const I mask = Simd::seti(0xF), off = Simd::seti(8);
    for (int k = 0; k < 16 / W; ++k) {
      const I v = Simd::u8(b + 2 + k * W);
      q[k] = Simd::cvt(Simd::sub(Simd::and_(v, mask), off));
      q[k + 16 / W] = Simd::cvt(Simd::sub(Simd::srl(v, 4), off));
    }
  }
};

struct DecQ4_1 {
  static constexpr int kBlock = 32, kBytes = 20, kGroup = 32;
  static constexpr bool kScale = true, kMin = true, kPlain = false;
  static void group(const uint8_t* b, int, F* q, float& d, float& m) {
    half2_to_float(b, d, m);
    const I mask = Simd::seti(0xF);
    for (int k = 0; k < 16 / W; ++k) {
      const I v = Simd::u8(b + 4 + k * W);
      q[k] = Simd::cvt(Simd::and_(v, mask));
      q[k + 16 / W] = Simd::cvt(Simd::srl(v, 4));
    }
  }
};

// Q5_0 / Q5_1: the 5th bit of element j is bit j of the little-endian u32 qh.
template <int kQhOffset, int kQsOffset>
inline void q5_levels(const uint8_t* b, F* q, int bias) {
  uint32_t qh;
  std::memcpy(&qh, b + kQhOffset, 4);
  const I qhv = Simd::seti(int(qh)), mask = Simd::seti(0xF), one = Simd::seti(1), off = Simd::seti(bias);
  for (int k = 0; k < 16 / W; ++k) {
    const I v = Simd::u8(b + kQsOffset + k * W);
    const I hlo = Simd::sll(Simd::and_(Simd::srlv(qhv, Simd::iota(k * W)), one), 4);
    const I hhi = Simd::sll(Simd::and_(Simd::srlv(qhv, Simd::iota(16 + k * W)), one), 4);
    q[k] = Simd::cvt(Simd::sub(Simd::or_(Simd::and_(v, mask), hlo), off));
    q[k + 16 / W] = Simd::cvt(Simd::sub(Simd::or_(Simd::srl(v, 4), hhi), off));
  }
}

struct DecQ5_0 {
  static constexpr int kBlock = 32, kBytes = 22, kGroup = 32;
  static constexpr bool kScale = true, kMin = false, kPlain = false;
  static void group(const uint8_t* b, int, F* q, float& d, float&) {
    d = half_to_float(b);
    q5_levels<2, 6>(b, q, 16);
  }
};

struct DecQ5_1 {
  static constexpr int kBlock = 32, kBytes = 24, kGroup = 32;
  static constexpr bool kScale = true, kMin = true, kPlain = false;
  static void group(const uint8_t* b, int, F* q, float& d, float& m) {
    half2_to_float(b, d, m);
    q5_levels<4, 8>(b, q, 0);
  }
};

struct DecQ8_0 {
  static constexpr int kBlock = 32, kBytes = 34, kGroup = 32;
  static constexpr bool kScale = true, kMin = false, kPlain = false;
  static void group(const uint8_t* b, int, F* q, float& d, float&) {
    d = half_to_float(b);
    for (int k = 0; k < 32 / W; ++k) q[k] = Simd::cvt(Simd::i8(b + 2 + k * W));
  }
};

// Q4_K and Q5_K group g: its scale and min (6-bit pairs packed in scales[12] at b + 4, see io/quant.cpp) and
// its 4-bit levels, nibble g & 1 of the 32 bytes at qs + 32 (g / 2), as int32 vectors.
inline void k_group(const uint8_t* b, const uint8_t* qs, int g, I* v, float& d, float& m) {
  float dd, dmin;
  half2_to_float(b, dd, dmin);  // d and dmin are adjacent halves: one conversion
  detail::q4k_group_scale(b, g, dd, dmin, d, m);
  const uint8_t* p = qs + 32 * (g / 2);
  const int shift = 4 * (g & 1);
  const I mask = Simd::seti(0xF);
  for (int k = 0; k < 32 / W; ++k) v[k] = Simd::and_(Simd::srl(Simd::u8(p + k * W), shift), mask);
}

// Q4_K: 8 groups of 32, levels at b + 16.
struct DecQ4_K {
  static constexpr int kBlock = 256, kBytes = 144, kGroup = 32;
  static constexpr bool kScale = true, kMin = true, kPlain = false;
  static void group(const uint8_t* b, int g, F* q, float& d, float& m) {
    I v[32 / W];
    k_group(b, b + 16, g, v, d, m);
    for (int k = 0; k < 32 / W; ++k) q[k] = Simd::cvt(v[k]);
  }
};

// Q5_K: Q4_K's scales and nibbles (qs at b + 48) plus a fifth bit per element, bit g of qh[l] (qh at b + 16) for
// element l of group g.
struct DecQ5_K {
  static constexpr int kBlock = 256, kBytes = 176, kGroup = 32;
  static constexpr bool kScale = true, kMin = true, kPlain = false;
  static void group(const uint8_t* b, int g, F* q, float& d, float& m) {
    I v[32 / W];
    k_group(b, b + 48, g, v, d, m);
    const I one = Simd::seti(1);
    for (int k = 0; k < 32 / W; ++k) {
      const I hi = Simd::sll(Simd::and_(Simd::srl(Simd::u8(b + 16 + k * W), g), one), 4);
      q[k] = Simd::cvt(Simd::or_(v[k], hi));
    }
  }
};

// Q2_K and Q3_K: 16 groups of 16. Group s reads the 2-bit field k = (s % 8) / 2 of bytes [16 (s % 2), +16) of
// the half h = s / 8 of qs (32 bytes per half).
// Q2_K {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin}: scale d * (scales[s] & 15), min -dmin * (scales[s] >> 4).
struct DecQ2_K {
  static constexpr int kBlock = 256, kBytes = 84, kGroup = 16;
  static constexpr bool kScale = true, kMin = true, kPlain = false;
  static void group(const uint8_t* b, int s, F* q, float& d, float& m) {
    float dd, dmin;
    half2_to_float(b + 80, dd, dmin);
    d = dd * float(b[s] & 0xF);
    m = -(dmin * float(b[s] >> 4));
    const uint8_t* qs = b + 16 + 32 * (s / 8) + 16 * (s % 2);
    const int shift = 2 * ((s % 8) / 2);
    const I three = Simd::seti(3);
    for (int k = 0; k < 16 / W; ++k) q[k] = Simd::cvt(Simd::and_(Simd::srl(Simd::u8(qs + k * W), shift), three));
  }
};

// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}: scale d * io::q3k_scale(scales, s); the level is the
// 2-bit field minus 4 unless bit 4h + k of hmask[l] is set (l: the element's byte index in the half).
struct DecQ3_K {
  static constexpr int kBlock = 256, kBytes = 110, kGroup = 16;
  static constexpr bool kScale = true, kMin = false, kPlain = false;
  static void group(const uint8_t* b, int s, F* q, float& d, float&) {
    d = half_to_float(b + 108) * float(io::q3k_scale(b + 96, s));
    const int h = s / 8, k = (s % 8) / 2, l0 = 16 * (s % 2);
    const I three = Simd::seti(3), one = Simd::seti(1), four = Simd::seti(4);
    for (int v = 0; v < 16 / W; ++v) {
      const I lo = Simd::and_(Simd::srl(Simd::u8(b + 32 + 32 * h + l0 + v * W), 2 * k), three);
      const I hb = Simd::and_(Simd::srl(Simd::u8(b + l0 + v * W), 4 * h + k), one);
      q[v] = Simd::cvt(Simd::sub(Simd::or_(lo, Simd::sll(hb, 2)), four));  // lo + 4 hb - 4
    }
  }
};

// Q6_K: 16 groups of 16, each with an i8 scale. Group s lives in half h = s/8, quadrant k = (s%8)/2
// (low/high nibbles of ql[0..31]/ql[32..63], 2-bit fields of qh) and 16-element slice s%2. The 6-bit
// levels are assembled on 16 bytes at once, then widened.
struct DecQ6_K {
  static constexpr int kBlock = 256, kBytes = 210, kGroup = 16;
  static constexpr bool kScale = true, kMin = false, kPlain = false;
  // scale of group s: the block's fp16 d (half_to_float(b + 208)) times its int8 sub-block scale
  static float scale(const uint8_t* b, float d, int s) { return d * float(int8_t(b[192 + s])); }
  static void group(const uint8_t* b, int s, F* q, float& d, float&) {
    d = scale(b, half_to_float(b + 208), s);
    const __m128i q8 = detail::q6k_levels16(b, s);  // [-32, 31]
    I v[16 / W];
    Simd::expand_i8(q8, v);
    for (int k = 0; k < 16 / W; ++k) q[k] = Simd::cvt(v[k]);
  }
#if !defined(__AVX512F__)
  // Groups 2c and 2c + 1 at once: their 32 levels come out of one 256-bit pass (detail::q6k_levels32), which
  // the decode loop prefers over two group() calls (has_pair). Same levels and scales as group().
  static void pair(const uint8_t* b, int c, F* qa, F* qb, float& da, float& db) {
    const float d = half_to_float(b + 208);
    da = scale(b, d, 2 * c);
    db = scale(b, d, 2 * c + 1);
    const __m256i lv = detail::q6k_levels32(b, c);
    const __m128i lo = _mm256_castsi256_si128(lv), hi = _mm256_extracti128_si256(lv, 1);
    qa[0] = Simd::cvt(_mm256_cvtepi8_epi32(lo));
    qa[1] = Simd::cvt(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(lo, lo)));
    qb[0] = Simd::cvt(_mm256_cvtepi8_epi32(hi));
    qb[1] = Simd::cvt(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(hi, hi)));
  }
#endif
};

// IQ4_NL {f16 d; u8 qs[16]} and IQ4_XS (8 groups of 32: f16 d, 6-bit scales, 16 bytes of codes per group):
// non-linear levels io::kIq4nlValues[code] (detail::iq4_levels), scale d (IQ4_XS: d * io::iq4xs_scale).
inline void iq4_group(const uint8_t* qs, F* q) {
  __m128i lo, hi;
  detail::iq4_levels(qs, lo, hi);
  I v[32 / W];
  Simd::expand_i8(lo, v);
  Simd::expand_i8(hi, v + 16 / W);
  for (int k = 0; k < 32 / W; ++k) q[k] = Simd::cvt(v[k]);
}

struct DecIQ4_NL {
  static constexpr int kBlock = 32, kBytes = 18, kGroup = 32;
  static constexpr bool kScale = true, kMin = false, kPlain = false;
  static void group(const uint8_t* b, int, F* q, float& d, float&) {
    d = half_to_float(b);
    iq4_group(b + 2, q);
  }
};

struct DecIQ4_XS {
  static constexpr int kBlock = 256, kBytes = 136, kGroup = 32;
  static constexpr bool kScale = true, kMin = false, kPlain = false;
  static void group(const uint8_t* b, int g, F* q, float& d, float&) {
    d = half_to_float(b) * float(io::iq4xs_scale(b, g));
    iq4_group(b + 8 + 16 * g, q);
  }
};

// A decoder whose pair(b, c, qa, qb, da, db) produces groups 2c and 2c + 1 together.
template <class D>
constexpr bool has_pair = requires(const uint8_t* b, F* q, float& d) { D::pair(b, 0, q, q, d, d); };

// ---- decode: stream rows, n_tok <= kDecodeMaxTok ------------------------------------------------

// x-sums per G-column group (G: the format's kGroup, 32 or 16), xs[t * n_groups + g]: the m * sum(x) term
// of formats with a min.
template <int G>
std::vector<float> group_sums(const float* x, int64_t n_tok, int64_t cols) {
  static_assert(G % W == 0);
  const int64_t ng = cols / G;
  std::vector<float> xs(size_t(n_tok * ng));
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t g = 0; g < ng; ++g) {
      const float* p = x + t * cols + g * G;
      F a = Simd::load(p);
      for (int k = 1; k < G / W; ++k) a = Simd::add(a, Simd::load(p + k * W));
      xs[size_t(t * ng + g)] = Simd::hsum(a);
    }
  return xs;
}

// Dot products of the tail columns [c0, cols) of a plain-format row (cols not a multiple of 32).
inline float plain_tail_dot(GgmlType type, const uint8_t* row, int64_t c0, int64_t cols, const float* xt) {
  float buf[32];
  const int64_t n = cols - c0;
  io::dequantize_row(type, row + io::row_bytes(type, c0), buf, n);
  float s = 0.f;
  for (int64_t c = 0; c < n; ++c) s += buf[c] * xt[c0 + c];
  return s;
}

template <int A>
using Acc = std::integral_constant<int, A>;

template <class D, int NT>
void decode_rows(const WeightView& w, const float* x, const float* xs, float* y, int64_t r0, int64_t r1) {
  constexpr int NV = D::kGroup / W;         // vectors per group
  constexpr int GPB = D::kBlock / D::kGroup;
  constexpr int NA = NT <= 2 ? 2 : 1;        // accumulator sets (hide FMA latency when NT is small)
  const int64_t cols = w.cols, ng = cols / D::kBlock * GPB;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + size_t(r) * w.row_stride;
    F acc[NT][NA];
    float macc[NT][NA];
    for (int t = 0; t < NT; ++t)
      for (int a = 0; a < NA; ++a) {
        acc[t][a] = Simd::zero();
        macc[t][a] = 0.f;
      }
    // Decoded group gi (levels q, scale d, min m) against all NT activation rows, into accumulator set A
    // (a compile-time index, so the accumulators stay in registers).
    auto product = [&](int64_t gi, const F* q, float d, float m, auto acc_tag) {
      constexpr int A = decltype(acc_tag)::value;
      const int64_t c0 = gi * D::kGroup;
      for (int t = 0; t < NT; ++t) {
        const float* xt = x + t * cols + c0;
        if constexpr (D::kScale) {
          F p = Simd::mul(q[0], Simd::load(xt));
          for (int k = 1; k < NV; ++k) p = Simd::fma(q[k], Simd::load(xt + k * W), p);
          acc[t][A] = Simd::fma(p, Simd::set1(d), acc[t][A]);
        } else {
          for (int k = 0; k < NV; ++k) acc[t][A] = Simd::fma(q[k], Simd::load(xt + k * W), acc[t][A]);
        }
        if constexpr (D::kMin) macc[t][A] += m * xs[t * ng + gi];
      }
    };
    auto step = [&](int64_t gi, auto acc_tag) {
      F q[NV];
      float d = 1.f, m = 0.f;
      D::group(row + (gi / GPB) * D::kBytes, int(gi % GPB), q, d, m);
      product(gi, q, d, m, acc_tag);
    };
    // Groups go alternately to sets 0 and NA - 1 (the same set when NA = 1).
    int64_t gi = 0;
    if constexpr (has_pair<D>) {
      static_assert(GPB % 2 == 0 && !D::kMin);
      for (; gi < ng; gi += GPB) {
        const uint8_t* blk = row + (gi / GPB) * D::kBytes;
        for (int c = 0; c < GPB / 2; ++c) {
          F qa[NV], qb[NV];
          float da, db;
          D::pair(blk, c, qa, qb, da, db);
          product(gi + 2 * c, qa, da, 0.f, Acc<0>{});
          product(gi + 2 * c + 1, qb, db, 0.f, Acc<NA - 1>{});
        }
      }
    } else if constexpr (NA == 2) {
      for (; gi + 2 <= ng; gi += 2) {
        step(gi, Acc<0>{});
        step(gi + 1, Acc<NA - 1>{});
      }
    }
    for (; gi < ng; ++gi) step(gi, Acc<0>{});
    for (int t = 0; t < NT; ++t) {
      F a = acc[t][0];
      float ms = macc[t][0];
      for (int k = 1; k < NA; ++k) {
        a = Simd::add(a, acc[t][k]);
        ms += macc[t][k];
      }
      float s = Simd::hsum(a) + ms;
      if constexpr (D::kPlain) {
        const int64_t c0 = ng * D::kGroup;
        if (c0 < cols) s += plain_tail_dot(w.type, row, c0, cols, x + t * cols);
      }
      y[t * w.rows + r] = s;
    }
  }
}

template <class D, size_t... N>
constexpr auto make_decode_table(std::index_sequence<N...>) {
  using Fn = void (*)(const WeightView&, const float*, const float*, float*, int64_t, int64_t);
  return std::array<Fn, sizeof...(N)>{&decode_rows<D, int(N) + 1>...};
}

template <class D>
void decode(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1) {
  static constexpr auto table = make_decode_table<D>(std::make_index_sequence<kDecodeMaxTok>{});
  std::vector<float> xs;
  if constexpr (D::kMin) xs = group_sums<D::kGroup>(x, n_tok, w.cols);
  const auto fn = table[size_t(n_tok - 1)];
  parallel_rows(r0, r1, decode_grain(w), [&](int64_t b, int64_t e) { fn(w, x, xs.data(), y, b, e); });
}

// ---- prefill: dequantized tiles + register-blocked fp32 micro-kernel -----------------------------

// Dequantize rows [r0, r0 + nr) of W into tile[nr][cols] (fp32, HF order).
template <class D>
void dequant_tile(const WeightView& w, int64_t r0, int64_t nr, float* tile) {
  constexpr int NV = D::kGroup / W;
  constexpr int GPB = D::kBlock / D::kGroup;
  const int64_t cols = w.cols, nb = cols / D::kBlock;
  for (int64_t i = 0; i < nr; ++i) {
    const uint8_t* row = w.data + size_t(r0 + i) * w.row_stride;
    float* out = tile + i * cols;
    for (int64_t b = 0; b < nb; ++b)
      for (int g = 0; g < GPB; ++g) {
        F q[NV];
        float d = 1.f, m = 0.f;
        D::group(row + b * D::kBytes, g, q, d, m);
        float* o = out + b * D::kBlock + g * D::kGroup;
        for (int k = 0; k < NV; ++k) {
          F v = q[k];
          if constexpr (D::kScale) v = D::kMin ? Simd::fma(v, Simd::set1(d), Simd::set1(m)) : Simd::mul(v, Simd::set1(d));
          Simd::store(o + k * W, v);
        }
      }
    if constexpr (D::kPlain) {
      const int64_t c0 = nb * D::kBlock;
      if (c0 < cols) io::dequantize_row(w.type, row + io::row_bytes(w.type, c0), out + c0, cols - c0);
    }
  }
}

// Sums of four vectors, one per lane: {hsum(a0), hsum(a1), hsum(a2), hsum(a3)}.
inline __m128 hsum4(F a0, F a1, F a2, F a3) {
#if defined(__AVX512F__)
  auto fold = [](F v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  };
  const __m256 b0 = fold(a0), b1 = fold(a1), b2 = fold(a2), b3 = fold(a3);
#else
  const __m256 b0 = a0, b1 = a1, b2 = a2, b3 = a3;
#endif
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(b0, b1), _mm256_hadd_ps(b2, b3));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// Reduction of micro_kernel's accumulators acc[i][j] (8 or 16 lanes each, columns [0, k)) plus the tail
// columns [k, kn) into y[j * ldy + i]: lanes summed by hsum4, the tail added one product at a time,
// then y (+)= the sum. Out of line: only kernels with fewer than four rows or a column tail need it.
template <int MR, int MT>
[[gnu::noinline]] void micro_tail(const F (&acc)[MR][MT], const float* wt, int64_t ldw, const float* x, int64_t ldx,
                                  int64_t k, int64_t kn, float* y, int64_t ldy, bool accumulate) {
  for (int j = 0; j < MT; ++j) {
    F a[4];
    for (int i = 0; i < 4; ++i) a[i] = i < MR ? acc[i][j] : Simd::zero();
    alignas(16) float s[4];
    _mm_store_ps(s, hsum4(a[0], a[1], a[2], a[3]));
    for (int i = 0; i < MR; ++i) {
      for (int64_t kk = k; kk < kn; ++kk) s[i] += wt[i * ldw + kk] * x[j * ldx + kk];
      float& out = y[j * ldy + i];
      out = accumulate ? out + s[i] : s[i];
    }
  }
}

// y[j * ldy + i] (+)= sum_{k < kn} wt[i * ldw + k] * x[j * ldx + k] for i < MR, j < MT (MR <= 4).
// Dot-product form: no transposed copy of the tile is needed, and four rows of one token reduce
// together into one 4-float update.
template <int MR, int MT>
void micro_kernel(const float* wt, int64_t ldw, const float* x, int64_t ldx, int64_t kn, float* y, int64_t ldy,
                  bool accumulate) {
  static_assert(MR <= 4);
  F acc[MR][MT];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < MT; ++j) acc[i][j] = Simd::zero();
  int64_t k = 0;
  for (; k + W <= kn; k += W) {
    F xv[MT];
    for (int j = 0; j < MT; ++j) {
      xv[j] = Simd::load(x + j * ldx + k);
      // Keep inputs and weights in registers: GCC otherwise folds their loads into every FMA
      // (MR x MT loads per step instead of MR + MT), which makes the loop load-bound.
      asm("" : "+v"(xv[j]));
    }
    for (int i = 0; i < MR; ++i) {
      F wv = Simd::load(wt + i * ldw + k);
      asm("" : "+v"(wv));
      for (int j = 0; j < MT; ++j) acc[i][j] = Simd::fma(wv, xv[j], acc[i][j]);
    }
  }
  if constexpr (MR == 4) {
    if (k == kn) {  // no tail columns: the sums and the update stay in registers (same lane-wise adds)
      for (int j = 0; j < MT; ++j) {
        __m128 s = hsum4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]);
        float* out = y + j * ldy;
        if (accumulate) s = _mm_add_ps(_mm_loadu_ps(out), s);
        _mm_storeu_ps(out, s);
      }
      return;
    }
  }
  micro_tail<MR, MT>(acc, wt, ldw, x, ldx, k, kn, y, ldy, accumulate);
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t, bool);

template <size_t... N>
constexpr auto make_micro_table(std::index_sequence<N...>) {
  return std::array<MicroFn, sizeof...(N)>{&micro_kernel<int(N) / Simd::kMT + 1, int(N) % Simd::kMT + 1>...};
}
constexpr auto kMicro = make_micro_table(std::make_index_sequence<Simd::kMR * Simd::kMT>{});

// Rows per dequantized tile.
constexpr int64_t kTileRows = 8 * Simd::kMR;

// Columns per K-chunk: at most kPrefillKChunk, equal chunks, a multiple of W.
int64_t k_chunk(int64_t cols) {
  const int64_t n = (cols + kPrefillKChunk - 1) / kPrefillKChunk;
  const int64_t c = (cols + n - 1) / n;
  return (c + W - 1) / W * W;
}

// Per-thread scratch for dequantized tiles, shared by all weight types and reused across calls.
std::vector<float>& tile_scratch(size_t n) {
  thread_local std::vector<float> tile;
  if (tile.size() < n) tile.resize(n);
  return tile;
}

template <class D>
void prefill(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1) {
  const int64_t cols = w.cols, n_tiles = (r1 - r0 + kTileRows - 1) / kTileRows, kc = k_chunk(cols);
  at::parallel_for(0, n_tiles, 1, [&](int64_t tb, int64_t te) {
    std::vector<float>& tile = tile_scratch(size_t(kTileRows * cols));  // [kTileRows][cols]
    for (int64_t ti = tb; ti < te; ++ti) {
      const int64_t tr0 = r0 + ti * kTileRows, nr = std::min(kTileRows, r1 - tr0);
      dequant_tile<D>(w, tr0, nr, tile.data());
      for (int64_t k0 = 0; k0 < cols; k0 += kc) {
        const int64_t kn = std::min(kc, cols - k0);
        for (int64_t t0 = 0; t0 < n_tok; t0 += Simd::kMT) {
          const int64_t mt = std::min<int64_t>(Simd::kMT, n_tok - t0);
          for (int64_t i0 = 0; i0 < nr; i0 += Simd::kMR) {
            const int64_t mr = std::min<int64_t>(Simd::kMR, nr - i0);
            kMicro[size_t((mr - 1) * Simd::kMT + (mt - 1))](tile.data() + i0 * cols + k0, cols, x + t0 * cols + k0, cols,
                                                            kn, y + t0 * w.rows + tr0 + i0, w.rows, k0 > 0);
          }
        }
      }
    }
  });
}

template <class D>
void run(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1) {
  if (n_tok <= kDecodeMaxTok)
    decode<D>(w, x, n_tok, y, r0, r1);
  else
    prefill<D>(w, x, n_tok, y, r0, r1);
}

// Returns false for types without a SIMD decoder.
bool simd_rows(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1) {
  switch (w.type) {
    case GgmlType::F32: run<DecF32>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::F16: run<DecF16>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::BF16: run<DecBF16>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::Q4_0: run<DecQ4_0>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::Q4_1: run<DecQ4_1>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::Q5_0: run<DecQ5_0>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::Q5_1: run<DecQ5_1>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::Q8_0: run<DecQ8_0>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::Q2_K: run<DecQ2_K>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::Q3_K: run<DecQ3_K>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::Q4_K: run<DecQ4_K>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::Q5_K: run<DecQ5_K>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::Q6_K: run<DecQ6_K>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::IQ4_NL: run<DecIQ4_NL>(w, x, n_tok, y, r0, r1); return true;
    case GgmlType::IQ4_XS: run<DecIQ4_XS>(w, x, n_tok, y, r0, r1); return true;
    default: return false;
  }
}
#endif  // SIMD

}  // namespace

bool matmul_supported(io::GgmlType t) {
  return io::is_known_type(uint32_t(t)) && io::type_traits(t).dequantizable;
}

const char* matmul_kernel_name() {
#ifdef FKV_QMM_SIMD
  return Simd::kName;
#else
  return "portable";
#endif
}

void matmul_rows_portable(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1) {
  check_args(w, x, n_tok, y, r0, r1);
  if (n_tok == 0 || r0 == r1) return;
  parallel_rows(r0, r1, decode_grain(w), [&](int64_t b, int64_t e) { portable_rows(w, x, n_tok, y, b, e); });
}

void matmul_rows(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1) {
  check_args(w, x, n_tok, y, r0, r1);
  if (n_tok == 0 || r0 == r1) return;
#ifdef FKV_QMM_SIMD
  if (simd_rows(w, x, n_tok, y, r0, r1)) return;
#endif
  parallel_rows(r0, r1, decode_grain(w), [&](int64_t b, int64_t e) { portable_rows(w, x, n_tok, y, b, e); });
}

void matmul(const WeightView& w, const float* x, int64_t n_tok, float* y) { matmul_rows(w, x, n_tok, y, 0, w.rows); }

void dequantize_row(const WeightView& w, int64_t row, float* out) {
  FKV_CHECK_ARG(0 <= row && row < w.rows, "qmatmul: row {} outside [0, {})", row, w.rows);
  FKV_CHECK_ARG(w.data && out, "qmatmul: null weight or output pointer");
  io::dequantize_row(w.type, w.data + size_t(row) * w.row_stride, out, w.cols);
}

}  // namespace fkv::ops
