// RMSNorm: one block per row, fp32 accumulation, block reduction through shared memory.
// Reference: fkv::golden reference model (ATen) and ops tests on the device machine.
#include "fkv_cuda/rms_norm.h"

namespace fkv_cuda {
namespace {

__global__ void rms_norm_f32_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                                    int64_t n, float eps) {
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  float acc = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += xr[i] * xr[i];
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  __shared__ float warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < (blockDim.x + 31) / 32 ? warp_sums[lane] : 0.f;
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) warp_sums[0] = acc;
  }
  __syncthreads();
  const float scale = rsqrtf(warp_sums[0] / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * scale * w[i];
}

}  // namespace

cudaError_t rms_norm_f32(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps,
                         cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const int threads = n >= 1024 ? 1024 : ((static_cast<int>(n) + 31) / 32) * 32;
  rms_norm_f32_kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(x, w, y, n, eps);
  return cudaGetLastError();
}

}  // namespace fkv_cuda
