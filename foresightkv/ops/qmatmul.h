// Matrix products against weights kept in their file format (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
// Q5_0, Q5_1, Q4_K, Q6_K): blocks are dequantized on the fly into fp32 accumulators, so results equal
// dequantize-then-fp32 up to summation order. CPU only; threads via ATen's intra-op pool.
// Reference: io::dequantize_row + a naive double-precision dot (tests/unit/quant/qmatmul_test.cpp).
//
// Two regimes (ops/qmatmul.cpp): decode (n_tok <= 8) streams each weight row once and dequantizes its
// blocks in registers against all n_tok activation rows; prefill dequantizes tiles of rows into an
// fp32 scratch buffer that stays in cache and runs a register-blocked fp32 micro-kernel on it.
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

/// Types this file implements: every type io::dequantize_row can dequantize. F32, F16, BF16, Q8_0,
/// Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and Q6_K have SIMD kernels; the others take the portable path.
bool matmul_supported(io::GgmlType t);

/// The portable scalar path (io::dequantize_row per row + dot products), used when the build has no
/// SIMD kernels for the CPU or type. Same contract as matmul_rows; exposed so tests cover it everywhere.
void matmul_rows_portable(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1);

/// Opt-in activation-quantized products for decode (ops/qmatmul_q8.cpp, llama.cpp's scheme): each row of
/// x is quantized per 32 columns to int8 (quantize_activations_q8) and multiplied with the weight levels
/// as integers, so y = sum_c deq(W)[r, c] * xq[t, c] with xq = dx * q (up to fp32 summation order).
/// Applies to Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K with n_tok <= 8 on AVX2 builds; anything else
/// (other types, longer chunks, no AVX2) takes matmul_rows, the fp32-activation path.
void matmul_q8(const WeightView& w, const float* x, int64_t n_tok, float* y);
void matmul_rows_q8(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t r0, int64_t r1);
bool matmul_q8_supported(io::GgmlType t);
/// Whether matmul_q8 / matmul_rows_q8 take the int8 path for this product (else they are matmul_rows).
bool matmul_q8_applies(const WeightView& w, int64_t n_tok);
/// q[c] = round_half_even(x[c] * (1 / dx[b])), dx[b] = max_{c in block b} |x[c]| / 127 (0 for an all-zero
/// block, whose q are 0); n must be a multiple of 32.
void quantize_activations_q8(const float* x, int64_t n, int8_t* q, float* dx);

/// Which kernels this build uses for the SIMD types: "avx512", "avx2" or "portable".
const char* matmul_kernel_name();

}  // namespace fkv::ops
