// Shared bit-level helpers of the GGUF K-quant and IQ4 block formats, used by the dequantizer (io/quant.cpp)
// and by both matrix-product paths (ops/qmatmul.cpp, ops/qmatmul_q8.cpp), so the packing is written once.
#pragma once
#include <cstdint>

namespace fkv::io {

/// 6-bit scale and min of sub-block i (0..7) packed in the 12-byte scales[] of Q4_K / Q5_K blocks.
inline void k_scale_min(const uint8_t* s, int i, int& sc, int& mn) {
  if (i < 4) {
    sc = s[i] & 63;
    mn = s[i + 4] & 63;
  } else {
    sc = (s[i + 4] & 0xF) | ((s[i - 4] >> 6) << 4);
    mn = (s[i + 4] >> 4) | ((s[i] >> 6) << 4);
  }
}

/// Signed 6-bit scale (-32..31) of sub-block s (0..15) packed in the 12-byte scales sc[] of a Q3_K block: the low
/// 4 bits are the low (s < 8) or high (s >= 8) nibble of sc[s % 8], the high 2 bits are bits 2 (s / 4) and
/// 2 (s / 4) + 1 of sc[8 + s % 4]; the stored 6-bit value is offset by 32.
inline int q3k_scale(const uint8_t* sc, int s) {
  const int lo = s < 8 ? (sc[s] & 0xF) : (sc[s - 8] >> 4);
  const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
  return (lo | hi << 4) - 32;
}

/// The 16 non-linear levels of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl), indexed by a 4-bit code.
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/// Signed 6-bit scale (-32..31) of sub-block i (0..7) of the IQ4_XS block at b: low 4 bits from nibble i % 2 of
/// scales_l[i / 2] (b + 4), high 2 bits from bits 2i, 2i + 1 of the little-endian u16 scales_h (b + 2); offset 32.
inline int iq4xs_scale(const uint8_t* b, int i) {
  const int sh = b[2] | b[3] << 8;
  return (((b[4 + i / 2] >> 4 * (i % 2)) & 0xF) | ((sh >> 2 * i) & 3) << 4) - 32;
}

}  // namespace fkv::io
