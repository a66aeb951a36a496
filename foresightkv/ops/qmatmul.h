// Matrix products against weights kept in their file format (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
// Q5_0, Q5_1, Q4_K, Q6_K): blocks are dequantized on the fly into fp32 accumulators, so results equal
// dequantize-then-fp32 up to summation order. CPU only; threads via ATen's intra-op pool.
// Reference: io::dequantize_row + a naive fp32 dot (tests/unit/qmatmul_test.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "foresightkv/io/quant.h"

namespace fkv::ops {

/// Non-owning view of a weight matrix W [rows, cols] (HF Linear layout [out, in]), each row
/// `row_stride` bytes apart, stored as `type` blocks along cols.
struct WeightView {
  io::GgmlType type = io::GgmlType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;
  size_t row_stride = 0;
};

/// y[t, r] = sum_c x[t, c] * W[r, c] for t < n_tok.  x: [n_tok, cols] fp32 contiguous;
/// y: [n_tok, rows] fp32 contiguous (overwritten).
void matmul(const WeightView& w, const float* x, int64_t n_tok, float* y);

/// Same, for rows [r0, r1) only; y is still [n_tok, rows]-strided (only those columns written).
void matmul_rows(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1);

/// Gather one row of W as fp32 (embedding lookup).
void dequantize_row(const WeightView& w, int64_t row, float* out);

/// Types this file implements.
bool matmul_supported(io::GgmlType t);

}  // namespace fkv::ops
