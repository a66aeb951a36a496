// Pieces shared by the two quantized-product files (ops/qmatmul.cpp: fp32 activations; ops/qmatmul_q8.cpp:
// int8 activations): argument validation, the fp16 scale readers, the Q4_K/Q5_K group scales, the Q6_K level
// assembly and the IQ4 table lookup. Not part of the ops API; include only from ops/*.cpp.
#pragma once
#include <cstdint>
#include <cstring>

#include "foresightkv/io/k_quants.h"
#include "foresightkv/ops/qmatmul.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#include <immintrin.h>
#define FKV_QMM_X86 1
#endif

namespace fkv::ops::detail {

/// Throws InvalidArgument unless w/x/y/[r0, r1) describe a valid product for matmul_rows: a supported type,
/// whole blocks per row, a row stride that holds a row, a row range inside [0, rows), non-null pointers
/// when there is work.
void check_args(const WeightView& w, const float* x, int64_t n_tok, const float* y, int64_t r0, int64_t r1);

#ifdef FKV_QMM_X86
/// An IEEE half at p (unaligned) as float; exact, subnormals included.
inline float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

/// Two consecutive halves (a block's d and m) with one conversion.
inline void half2_to_float(const uint8_t* p, float& a, float& b) {
  uint32_t u;
  std::memcpy(&u, p, 4);
  const __m128 v = _mm_cvtph_ps(_mm_cvtsi32_si128(int(u)));
  a = _mm_cvtss_f32(v);
  b = _mm_cvtss_f32(_mm_movehdup_ps(v));
}

/// Q4_K / Q5_K group g (0..7) of the block at b: its scale d_g and additive min m_g (element = d_g * level + m_g),
/// from the block's fp16 d and dmin and the 6-bit scale/min pair packed at b + 4 (the same in both formats).
inline void q4k_group_scale(const uint8_t* b, int g, float d, float dmin, float& dg, float& mg) {
  int sc, mn;
  io::k_scale_min(b + 4, g, sc, mn);
  dg = d * float(sc);
  mg = -(dmin * float(mn));
}

/// IQ4_NL / IQ4_XS: the 16 bytes at qs hold 32 4-bit codes (element j: low nibble of byte j; element j + 16: its
/// high nibble); lo and hi get the int8 levels io::kIq4nlValues[code] of elements 0..15 and 16..31 (one table
/// shuffle each).
inline void iq4_levels(const uint8_t* qs, __m128i& lo, __m128i& hi) {
  const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(io::kIq4nlValues));
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)), m = _mm_set1_epi8(0x0F);
  lo = _mm_shuffle_epi8(table, _mm_and_si128(v, m));
  hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(v, 4), m));
}

/// Sum of the 8 lanes of an AVX vector.
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// Q6_K (block of 256 in 210 bytes: ql[128], qh[64], 16 i8 scales, fp16 d): the 16 signed levels
/// (6-bit value - 32, in [-32, 31]) of group s (0..15). Group s lives in half h = s / 8, quadrant
/// k = (s % 8) / 2 (low/high nibbles of ql[0..31] / ql[32..63], 2-bit fields of qh) and 16-element
/// slice s % 2. Its scale is d * int8(b[192 + s]) with d = half at b + 208.
inline __m128i q6k_levels16(const uint8_t* b, int s) {
  const int h = s / 8, quad = (s % 8) / 2, is = s % 2;
  const __m128i l = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 64 * h + 32 * (quad & 1) + 16 * is));
  const __m128i hb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 128 + 32 * h + 16 * is));
  // 16-bit shifts are fine: the byte masks drop the bits shifted in from the neighbour byte
  const __m128i lo = _mm_and_si128(_mm_srl_epi16(l, _mm_cvtsi32_si128(4 * (quad >> 1))), _mm_set1_epi8(0x0F));
  const __m128i hi = _mm_slli_epi16(_mm_and_si128(_mm_srl_epi16(hb, _mm_cvtsi32_si128(2 * quad)), _mm_set1_epi8(3)), 4);
  return _mm_sub_epi8(_mm_or_si128(lo, hi), _mm_set1_epi8(32));
}

/// The 32 signed levels of Q6_K chunk c (0..7) = groups 2c and 2c + 1 (lanes 0..15 and 16..31): the two slices
/// of quadrant c % 4 of half c / 4, 32 consecutive bytes of ql and of qh each. Same values as
/// q6k_levels16(b, 2c) and q6k_levels16(b, 2c + 1).
inline __m256i q6k_levels32(const uint8_t* b, int c) {
  const int h = c / 4, quad = c % 4;
  const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32 * (quad & 1)));
  const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
  const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(l, _mm_cvtsi32_si128(4 * (quad >> 1))), _mm256_set1_epi8(0x0F));
  const __m256i hi =
      _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * quad)), _mm256_set1_epi8(3)), 4);
  return _mm256_sub_epi8(_mm256_or_si256(lo, hi), _mm256_set1_epi8(32));
}
#endif

}  // namespace fkv::ops::detail
