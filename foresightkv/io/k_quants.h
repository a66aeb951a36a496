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

}  // namespace fkv::io
