// RMSNorm launcher (HF semantics: fp32 accumulation, y = x * rsqrt(mean(x^2) + eps) * w).
// x, y: [rows, n] contiguous; w: [n]. Returns the launch status; never throws or exits.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fkv_cuda {

cudaError_t rms_norm_f32(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps,
                         cudaStream_t stream);

}  // namespace fkv_cuda
