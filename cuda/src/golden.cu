// Golden Eviction labels (see fkv_cuda/golden.h): block-pooled causal attention without a T x T matrix, and the
// future suffix max. Oracle: fkv::golden::block_scores / future_scores; tests: tests/unit/cuda/golden_test.cpp.
//
// Both attention kernels compute 64 x 64 logit tiles with 256 threads (16 x 16), each thread a 4 x 4 register tile
// (rows ty + 16 i, columns tx + 16 c: strided so the shared-memory reads of a warp hit distinct banks), the head dim
// in chunks of 32 staged in shared memory (rows padded to 33 floats against bank conflicts). Both passes compute each
// logit with the same FMA sequence and an unfused scale multiply (__fmul_rn), so pass 2 sees exactly the logits whose
// max and sum pass 1 recorded.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "fkv_cuda/golden.h"

namespace fkv_cuda {
namespace {

constexpr int kTile = 64;      // query rows and keys per tile
constexpr int kChunk = 32;     // head-dim chunk staged in shared memory
constexpr int kThreads = 256;  // 16 x 16, each thread 4 x 4 logits
constexpr int kSub = 4;

__device__ __forceinline__ float load_f(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_f(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float load_f(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

/// acc[i][c] += Qs[row i] . Ks[col c] over the head dim, in chunks: the 64 query rows come from q at row offsets
/// qoff[r] (-1: padding row), the 64 keys from k rows n0..n0+63 (< T).
template <typename T>
__device__ __forceinline__ void logit_tile(const T* __restrict__ q, const T* __restrict__ kj, const int64_t* qoff,
                                           int64_t n0, int64_t Tlen, int D, float (*Qs)[kChunk + 1],
                                           float (*Ks)[kChunk + 1], float acc[kSub][kSub]) {
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
#pragma unroll
  for (int i = 0; i < kSub; ++i)
#pragma unroll
    for (int c = 0; c < kSub; ++c) acc[i][c] = 0.f;
  for (int d0 = 0; d0 < D; d0 += kChunk) {
    for (int e = tid; e < kTile * kChunk; e += kThreads) {
      const int r = e / kChunk, c = e % kChunk, d = d0 + c;
      const int64_t qo = qoff[r], n = n0 + r;
      Qs[r][c] = (qo >= 0 && d < D) ? load_f(q, qo + d) : 0.f;
      Ks[r][c] = (n < Tlen && d < D) ? load_f(kj, n * D + d) : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int c = 0; c < kChunk; ++c) {
      float a[kSub], b[kSub];
#pragma unroll
      for (int i = 0; i < kSub; ++i) a[i] = Qs[ty + 16 * i][c];
#pragma unroll
      for (int i = 0; i < kSub; ++i) b[i] = Ks[tx + 16 * i][c];
#pragma unroll
      for (int i = 0; i < kSub; ++i)
#pragma unroll
        for (int cc = 0; cc < kSub; ++cc) acc[i][cc] = fmaf(a[i], b[cc], acc[i][cc]);
    }
    __syncthreads();
  }
}

/// Pass 1: per (query head h = blockIdx.y, query tile), the causal row max m and sum l = sum_n exp(s_n - m).
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    golden_row_stats_kernel(const T* __restrict__ q, const T* __restrict__ k, int64_t Tlen, int D, int G, float scale,
                            float* __restrict__ row_max, float* __restrict__ row_sum) {
  __shared__ float Qs[kTile][kChunk + 1], Ks[kTile][kChunk + 1];
  __shared__ int64_t qoff[kTile];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t h = blockIdx.y, t0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const T* kj = k + (h / G) * Tlen * D;
  if (tid < kTile) qoff[tid] = t0 + tid < Tlen ? (h * Tlen + t0 + tid) * D : -1;
  __syncthreads();
  float m[kSub], l[kSub];
#pragma unroll
  for (int i = 0; i < kSub; ++i) m[i] = -INFINITY, l[i] = 0.f;
  const int64_t t_last = (t0 + kTile < Tlen ? t0 + kTile : Tlen) - 1;
  for (int64_t n0 = 0; n0 <= t_last; n0 += kTile) {
    float acc[kSub][kSub];
    logit_tile(q, kj, qoff, n0, Tlen, D, Qs, Ks, acc);
#pragma unroll
    for (int i = 0; i < kSub; ++i) {
      const int64_t t = t0 + ty + 16 * i;
      float s[kSub], mt = m[i];
#pragma unroll
      for (int c = 0; c < kSub; ++c) {
        const int64_t n = n0 + tx + 16 * c;
        s[c] = (t < Tlen && n <= t) ? __fmul_rn(acc[i][c], scale) : -INFINITY;
        mt = fmaxf(mt, s[c]);
      }
      if (mt == -INFINITY) continue;      // nothing visible yet in this row
      float li = l[i] * expf(m[i] - mt);  // m[i] = -inf: l[i] = 0 and expf(-inf) = 0
#pragma unroll
      for (int c = 0; c < kSub; ++c) li += expf(s[c] - mt);
      m[i] = mt;
      l[i] = li;
    }
  }
  // merge the 16 column threads of each row (lanes tx = 0..15 of one half-warp)
#pragma unroll
  for (int i = 0; i < kSub; ++i) {
    for (int off = 8; off > 0; off >>= 1) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[i], off), lo = __shfl_xor_sync(0xffffffffu, l[i], off);
      const float mn = fmaxf(m[i], mo);
      if (mn == -INFINITY) continue;
      l[i] = (m[i] == -INFINITY ? 0.f : l[i] * expf(m[i] - mn)) + (mo == -INFINITY ? 0.f : lo * expf(mo - mn));
      m[i] = mn;
    }
    const int64_t t = t0 + ty + 16 * i;
    if (tx == 0 && t < Tlen) {
      row_max[h * Tlen + t] = m[i];
      row_sum[h * Tlen + t] = l[i];
    }
  }
}

/// Pass 2: per (key tile blockIdx.x, query block b = blockIdx.y, KV head j = blockIdx.z): the column sums of the
/// probabilities of the G*w query rows (g, t) of block b (row r -> g = r / w, t = bW + r % w), fp64, / (G*W).
template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    golden_pool_kernel(const T* __restrict__ q, const T* __restrict__ k, int64_t Tlen, int D, int G, int64_t W,
                       int64_t nb, float scale, bool bf16_probs, const float* __restrict__ row_max,
                       const float* __restrict__ row_sum, float* __restrict__ abar) {
  __shared__ float Qs[kTile][kChunk + 1], Ks[kTile][kChunk + 1];
  __shared__ int64_t qoff[kTile];
  __shared__ double red[16][kTile];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile, b = blockIdx.y, j = blockIdx.z;
  const int64_t tq0 = b * W, w = (W < Tlen - tq0 ? W : Tlen - tq0), rows = G * w;
  double col[kSub] = {0.0, 0.0, 0.0, 0.0};
  if (n0 <= tq0 + w - 1) {  // otherwise every key of the tile is after the block's last query: zeros
    const T* kj = k + j * Tlen * D;
    for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
      __syncthreads();  // qoff of the previous tile is no longer read
      if (tid < kTile) {
        const int64_t r = r0 + tid;
        qoff[tid] = r < rows ? ((j * G + r / w) * Tlen + tq0 + r % w) * D : -1;
      }
      __syncthreads();
      float acc[kSub][kSub];
      logit_tile(q, kj, qoff, n0, Tlen, D, Qs, Ks, acc);
#pragma unroll
      for (int i = 0; i < kSub; ++i) {
        const int64_t r = r0 + ty + 16 * i;
        if (r >= rows) continue;
        const int64_t h = j * G + r / w, t = tq0 + r % w;
        const float mx = row_max[h * Tlen + t], sm = row_sum[h * Tlen + t];
#pragma unroll
        for (int c = 0; c < kSub; ++c) {
          const int64_t n = n0 + tx + 16 * c;
          if (n > t) continue;                                    // causal (also covers n >= T)
          float p = expf(__fmul_rn(acc[i][c], scale) - mx) / sm;  // the logit exactly as in pass 1: p <= 1
          if (bf16_probs) p = __bfloat162float(__float2bfloat16_rn(p));
          col[c] += static_cast<double>(p);
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kSub; ++c) red[ty][tx + 16 * c] = col[c];
  __syncthreads();
  if (tid < kTile) {
    const int64_t n = n0 + tid;
    if (n < Tlen) {
      double s = 0.0;
      for (int y = 0; y < 16; ++y) s += red[y][tid];
      abar[(j * Tlen + n) * nb + b] = static_cast<float>(s / static_cast<double>(G * W));
    }
  }
}

/// fut[j, n, s] = max_{r >= s} abar[j, n, b0 + r], one thread per (j, n).
__global__ void golden_future_kernel(const float* __restrict__ abar, int64_t rows, int64_t nb, int64_t b0, int64_t R,
                                     int64_t S, float* __restrict__ fut) {
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float* a = abar + row * nb + b0;
    float* o = fut + row * S;
    float m = -INFINITY;
    for (int64_t r = R - 1; r >= 0; --r) {
      m = fmaxf(m, a[r]);
      if (r < S) o[r] = m;
    }
  }
}

template <typename T>
cudaError_t launch_block_scores(const void* q, const void* k, int64_t Hq, int64_t Hkv, int64_t Tlen, int64_t D,
                                int64_t W, bool bf16_probs, float* ws, float* abar, cudaStream_t stream) {
  const int G = static_cast<int>(Hq / Hkv);
  const int64_t nb = golden_num_blocks(Tlen, W), tiles = (Tlen + kTile - 1) / kTile;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const T* qt = static_cast<const T*>(q);
  const T* kt = static_cast<const T*>(k);
  float* row_max = ws;
  float* row_sum = ws + Hq * Tlen;
  golden_row_stats_kernel<T><<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(Hq)), kThreads, 0, stream>>>(
      qt, kt, Tlen, static_cast<int>(D), G, scale, row_max, row_sum);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  golden_pool_kernel<T>
      <<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(nb), static_cast<unsigned>(Hkv)), kThreads, 0,
         stream>>>(qt, kt, Tlen, static_cast<int>(D), G, W, nb, scale, bf16_probs, row_max, row_sum, abar);
  return cudaGetLastError();
}

}  // namespace

cudaError_t golden_block_scores(const void* q, const void* k, GoldenInputType type, int64_t n_head_q, int64_t n_head_kv,
                                int64_t T, int64_t head_dim, int64_t window, bool bf16_probs, float* workspace,
                                float* abar, cudaStream_t stream) {
  if (n_head_q <= 0 || n_head_kv <= 0 || n_head_q % n_head_kv != 0 || n_head_q > 65535 || head_dim <= 0 ||
      head_dim > (1 << 20) || window <= 0 || T < 0)
    return cudaErrorInvalidValue;
  if (T == 0) return cudaSuccess;
  if (!q || !k || !workspace || !abar) return cudaErrorInvalidValue;
  if (golden_num_blocks(T, window) > 65535 || (T + kTile - 1) / kTile > 0x7fffffff) return cudaErrorInvalidValue;
  switch (type) {
    case GoldenInputType::F32:
      return launch_block_scores<float>(q, k, n_head_q, n_head_kv, T, head_dim, window, bf16_probs, workspace, abar,
                                        stream);
    case GoldenInputType::F16:
      return launch_block_scores<__half>(q, k, n_head_q, n_head_kv, T, head_dim, window, bf16_probs, workspace, abar,
                                         stream);
    case GoldenInputType::BF16:
      return launch_block_scores<__nv_bfloat16>(q, k, n_head_q, n_head_kv, T, head_dim, window, bf16_probs, workspace,
                                                abar, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t golden_future_scores(const float* abar, int64_t n_head_kv, int64_t T, int64_t budget, int64_t window,
                                 float* fut, cudaStream_t stream) {
  const int64_t S = golden_num_steps(T, budget, window);
  if (S < 0 || n_head_kv <= 0) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!abar || !fut) return cudaErrorInvalidValue;
  const int64_t nb = golden_num_blocks(T, window), b0 = 1 + budget / window, R = nb - b0;
  if (R < S) return cudaErrorInvalidValue;  // cannot happen for a consistent (T, B, W): R == S
  const int64_t rows = n_head_kv * T;
  const int threads = 256;
  const int64_t blocks = (rows + threads - 1) / threads;
  golden_future_kernel<<<static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16), threads, 0, stream>>>(
      abar, rows, nb, b0, R, S, fut);
  return cudaGetLastError();
}

}  // namespace fkv_cuda
