// ggml tensor types: block sizes, byte sizes and reference dequantization (engineering.md §3.5).
// The dequantizers here are the readable specification; ops/qmatmul.* fuses them into matmuls and
// is tested against them. No LibTorch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace fkv::io {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ4_NL = 20, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
};

struct TypeTraits {
  const char* name;     // "Q4_1"
  int64_t block_size;   // elements per block (1 for plain types)
  int64_t type_size;    // bytes per block
  bool dequantizable;   // fkv can turn it into fp32
};

/// Traits of a ggml type id; throws FormatError for ids fkv does not know.
const TypeTraits& type_traits(GgmlType t);
std::string type_name(GgmlType t);
bool is_known_type(uint32_t id);

/// Bytes of a row of `n` elements. Throws if n is not a multiple of the block size.
size_t row_bytes(GgmlType t, int64_t n);

/// Dequantize `n` consecutive elements (n a multiple of the block size) from `src` into `dst`.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);

/// IEEE half / bfloat16 conversions (subnormals handled).
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
inline float bf16_to_fp32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
uint16_t fp32_to_bf16(float f);  // round to nearest even

}  // namespace fkv::io
