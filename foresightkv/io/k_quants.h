// Shared bit-level helpers of the GGUF K-quant block formats, used by the dequantizer (io/quant.cpp)
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

}  // namespace fkv::io
