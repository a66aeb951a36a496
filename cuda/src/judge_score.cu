// The learned judge on the GPU (see fkv_cuda/judge_score.h): candidate scoring (features + head-wise MLP) and the
// foresightkv / foresightkv_topk drop-set choice. Oracle: fkv::judge::build_features, Judge::score, choose_drops;
// tests: tests/unit/cuda/judge_score_test.cpp.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <random>

#include "fkv_cuda/judge_score.h"

namespace fkv_cuda {
namespace {

constexpr int kCandTile = 32;                            // candidates per scoring block
constexpr int kScoreThreads = kCandTile * kJudgeHidden;  // one thread per (candidate, hidden unit)
constexpr int kSelectThreads = 512;

__device__ __forceinline__ float load_f(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_f(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float load_f(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

/// Scoring: block (row = blockIdx.x, candidate tile blockIdx.y). X[c][f] = feature f of candidate c0 + c, row stride
/// F + 1 (F is even, so the two candidates a warp reads in phase 2 fall into different banks).
template <typename T>
__global__ void __launch_bounds__(kScoreThreads) judge_score_kernel(JudgeScoreArgs a) {
  extern __shared__ float X[];
  const int D = static_cast<int>(a.head_dim), G = static_cast<int>(a.group), F = 2 * D + 8 * G, ld = F + 1;
  const int64_t row = blockIdx.x, j = row % a.n_head_kv, c0 = static_cast<int64_t>(blockIdx.y) * kCandTile;
  int64_t C = a.n_cand[row];
  C = C < a.phi_stride ? C : a.phi_stride;
  C = C < a.kv_capacity ? C : a.kv_capacity;
  C = C < a.stat_capacity ? C : a.stat_capacity;
  if (c0 >= C) return;  // uniform over the block
  const int tid = threadIdx.x;
  const int nc = static_cast<int>(C - c0 < kCandTile ? C - c0 : kCandTile);

  // phase 1a: keys and values, coalesced over each candidate's D contiguous elements
  const T* kr = static_cast<const T*>(a.k) + (row * a.kv_capacity + c0) * D;
  const T* vr = static_cast<const T*>(a.v) + (row * a.kv_capacity + c0) * D;
  for (int e = tid; e < nc * D; e += kScoreThreads) {
    const int c = e / D, d = e % D;
    X[c * ld + d] = load_f(kr, e);
    X[c * ld + D + d] = load_f(vr, e);
  }
  // phase 1b: statistics, one thread per (candidate, query head g); consecutive threads read consecutive slots
  const int64_t nq = a.n_query;
  const int64_t ns = (!a.parity && a.segment > 0 && a.segment < nq) ? a.segment : nq, q0 = nq - ns;
  for (int e = tid; e < kCandTile * G; e += kScoreThreads) {
    const int c = e % kCandTile, g = e / kCandTile;
    if (c >= nc) continue;
    const int64_t slot = c0 + c, rg = row * G + g, si = rg * a.stat_capacity + slot;
    float mx, mn, sum, s8, s16, s32;
    if (a.probs) {  // reduce the observed queries' probabilities here
      const float* p = a.probs + rg * nq * a.stat_capacity + slot;
      mx = -INFINITY, mn = INFINITY, sum = 0.f, s8 = 0.f, s16 = 0.f, s32 = 0.f;
      for (int64_t qi = q0; qi < nq; ++qi) {
        float x = p[qi * a.stat_capacity];
        if (a.parity) x = round_bf16(x);
        mx = fmaxf(mx, x);
        mn = fminf(mn, x);
        sum += x;
        if (qi >= nq - 8) s8 += x;
        if (qi >= nq - 16) s16 += x;
        if (qi >= nq - 32) s32 += x;
      }
      // parity: SUM8 = SUM16 = SUM32 = SUM (the official slicing bug); intended: the last-w sum, = SUM when w >= ns
      if (a.parity || 8 >= ns) s8 = sum;
      if (a.parity || 16 >= ns) s16 = sum;
      if (a.parity || 32 >= ns) s32 = sum;
    } else {  // precomputed by the attention pass
      mx = a.stat_max[si];
      mn = a.stat_min[si];
      sum = a.stat_sum[si];
      s16 = a.stat_sum16 ? a.stat_sum16[si] : sum;
      s8 = a.stat_sum8 ? a.stat_sum8[si] : sum;
      s32 = a.stat_sum32 ? a.stat_sum32[si] : sum;
    }
    float* xs = X + c * ld + 2 * D + g;
    xs[0 * G] = mx;
    xs[1 * G] = mn;
    xs[2 * G] = sum;
    xs[3 * G] = s16;
    xs[4 * G] = s8;
    xs[5 * G] = s32;
    xs[6 * G] = a.cum[si];
    xs[7 * G] = a.dec[si];
  }
  __syncthreads();

  // phase 2: thread (c, o): hidden unit o of candidate c, then the 16 units of c reduce within a half-warp
  const int c = tid / kJudgeHidden, o = tid % kJudgeHidden;
  const float* xc = X + c * ld;
  const float* w1 = a.w1 + j * F * kJudgeHidden + o;
  float h = a.b1[j * kJudgeHidden + o];
  if (c < nc)
    for (int f = 0; f < F; ++f) h = fmaf(xc[f], __ldg(w1 + f * kJudgeHidden), h);
  h = 0.5f * h * (1.f + erff(h * 0.70710678118654752440f));  // exact (erf) GELU, torch's default
  float y = h * a.w2[j * kJudgeHidden + o];
#pragma unroll
  for (int off = kJudgeHidden / 2; off > 0; off >>= 1) y += __shfl_xor_sync(0xffffffffu, y, off);
  if (o == 0 && c < nc) a.phi[row * a.phi_stride + c0 + c] = y + a.b2[j];
}

/// Order-preserving map float -> uint32 (larger float, larger key); -0 is mapped like +0 (they compare equal on
/// the CPU, so the slot decides their order).
__device__ __forceinline__ uint32_t float_key(float x) {
  const uint32_t u = __float_as_uint(x == 0.f ? 0.f : x);
  return u ^ ((u >> 31) ? 0xffffffffu : 0x80000000u);
}
__device__ __forceinline__ float key_float(uint32_t e) {
  return __uint_as_float(e ^ ((e >> 31) ? 0x80000000u : 0xffffffffu));
}

/// Selection: one block per row. keys[i] = float_key(phi) << 32 | (0xffffffff - slot), sorted descending: the order
/// "descending phi, ties lower slot first" of the CPU's partial_sort. Padding keys are 0 (sorted last).
__global__ void __launch_bounds__(kSelectThreads)
    judge_select_kernel(const float* __restrict__ phi, int64_t phi_stride, const int64_t* __restrict__ n_cand,
                        int64_t d, int p2, bool sampled, bool parity, const double* __restrict__ gumbel,
                        int64_t* __restrict__ drops) {
  extern __shared__ unsigned long long keys[];  // [p2]; then (sampled) uint32 pool_slot[P]
  const int tid = threadIdx.x;
  const int64_t row = blockIdx.x;
  int64_t C = n_cand[row];
  C = C < phi_stride ? C : phi_stride;
  int64_t* out = drops + row * d;
  if (C < d || C < 0) {  // invalid row (the CPU policy throws)
    for (int64_t i = tid; i < d; i += kSelectThreads) out[i] = -1;
    return;
  }
  if (d == 0) return;
  const float* pr = phi + row * phi_stride;
  for (int i = tid; i < p2; i += kSelectThreads)
    keys[i] = i < C
                  ? (static_cast<unsigned long long>(float_key(pr[i])) << 32) | (0xffffffffu - static_cast<uint32_t>(i))
                  : 0ull;
  __syncthreads();
  for (int k = 2; k <= p2; k <<= 1)
    for (int s = k >> 1; s > 0; s >>= 1) {
      for (int i = tid; i < p2; i += kSelectThreads) {
        const int ixj = i ^ s;
        if (ixj > i) {
          const unsigned long long x = keys[i], y = keys[ixj];
          if (((i & k) == 0) ? (x < y) : (x > y)) {  // descending runs where (i & k) == 0
            keys[i] = y;
            keys[ixj] = x;
          }
        }
      }
      __syncthreads();
    }
  auto slot_of = [](unsigned long long key) { return static_cast<int64_t>(0xffffffffu - static_cast<uint32_t>(key)); };
  if (!sampled) {  // foresightkv_topk: the first d of the order, written ascending
    for (int64_t i = tid; i < d; i += kSelectThreads) {
      const int64_t si = slot_of(keys[i]);
      int64_t pos = 0;
      for (int64_t m = 0; m < d; ++m) pos += slot_of(keys[m]) < si;
      out[pos] = si;
    }
    return;
  }
  // foresightkv: pool = first P of the order; Gumbel keys overwrite keys[0, P) in place (same thread reads and
  // writes index i), pool slots go to pool_slot[i] (bit 31 marks "dropped" later).
  const int64_t P = 2 * d < C ? 2 * d : C;
  uint32_t* pool_slot = reinterpret_cast<uint32_t*>(keys + p2);
  double* gkey = reinterpret_cast<double*>(keys);
  const double* gn = gumbel + row * 2 * d;
  for (int64_t i = tid; i < P; i += kSelectThreads) {
    const unsigned long long key = keys[i];
    float s = key_float(static_cast<uint32_t>(key >> 32));
    if (parity) s = __bfloat162float(__float2bfloat16_rn(s));  // the official bf16 softmax input
    pool_slot[i] = static_cast<uint32_t>(slot_of(key));
    gkey[i] = static_cast<double>(s) + gn[i];  // = s - log(-log u), bit for bit as on the CPU
  }
  __syncthreads();
  for (int64_t i = tid; i < P; i += kSelectThreads) {
    const double ki = gkey[i];
    int64_t rank = 0;  // entries before i in "descending key, ties lower index first"
    for (int64_t m = 0; m < P; ++m) {
      const double km = gkey[m];
      rank += (km > ki) || (km == ki && m < i);
    }
    if (rank < d) pool_slot[i] |= 0x80000000u;
  }
  __syncthreads();
  for (int64_t i = tid; i < P; i += kSelectThreads) {
    const uint32_t si = pool_slot[i];
    if (!(si & 0x80000000u)) continue;
    int64_t pos = 0;
    for (int64_t m = 0; m < P; ++m) {
      const uint32_t sm = pool_slot[m];
      pos += (sm & 0x80000000u) && sm < si;  // both marked: compares the slots
    }
    out[pos] = static_cast<int64_t>(si & 0x7fffffffu);
  }
}

template <typename T>
cudaError_t launch_score(const JudgeScoreArgs& a, size_t smem, cudaStream_t stream) {
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(judge_score_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  const int64_t rows = a.n_seq * a.n_head_kv, tiles = (a.phi_stride + kCandTile - 1) / kCandTile;
  judge_score_kernel<T>
      <<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(tiles)), kScoreThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t max_dynamic_smem(size_t* bytes) {
  int dev = 0, v = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  e = cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return e;
  *bytes = static_cast<size_t>(v);
  return cudaSuccess;
}

}  // namespace

cudaError_t judge_score(const JudgeScoreArgs& a, cudaStream_t stream) {
  if (a.n_seq <= 0 || a.n_head_kv <= 0 || a.head_dim <= 0 || a.head_dim > 4096 || a.group <= 0 || a.group > 256 ||
      (a.probs && a.n_query <= 0) || a.kv_capacity < 0 || a.stat_capacity < 0 || a.phi_stride < 0 || a.segment < 0)
    return cudaErrorInvalidValue;
  if (a.kv_type != KvDtype::F32 && a.kv_type != KvDtype::F16 && a.kv_type != KvDtype::BF16)
    return cudaErrorInvalidValue;
  if (a.n_seq * a.n_head_kv > 0x7fffffff || (a.phi_stride + kCandTile - 1) / kCandTile > 65535)
    return cudaErrorInvalidValue;
  if (a.phi_stride == 0) return cudaSuccess;
  if (!a.k || !a.v || !a.cum || !a.dec || !a.n_cand || !a.w1 || !a.b1 || !a.w2 || !a.b2 || !a.phi)
    return cudaErrorInvalidValue;
  if (!a.probs && (!a.stat_max || !a.stat_min || !a.stat_sum)) return cudaErrorInvalidValue;  // neither input form
  const int64_t F = 2 * a.head_dim + 8 * a.group;
  const size_t smem = static_cast<size_t>(kCandTile * (F + 1)) * sizeof(float);
  size_t smem_max = 0;
  const cudaError_t e = max_dynamic_smem(&smem_max);
  if (e != cudaSuccess) return e;
  if (smem > smem_max) return cudaErrorInvalidValue;
  switch (a.kv_type) {
    case KvDtype::F32:
      return launch_score<float>(a, smem, stream);
    case KvDtype::F16:
      return launch_score<__half>(a, smem, stream);
    case KvDtype::BF16:
      return launch_score<__nv_bfloat16>(a, smem, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t judge_select_drops(const float* phi, int64_t rows, int64_t phi_stride, const int64_t* n_cand,
                               int64_t n_drop, bool sampled, bool parity, const double* gumbel, int64_t* drops,
                               cudaStream_t stream) {
  if (rows < 0 || rows > 0x7fffffff || phi_stride < 0 || phi_stride > (1 << 20) || n_drop < 0)
    return cudaErrorInvalidValue;
  if (rows == 0 || n_drop == 0) return cudaSuccess;
  if (!phi || !n_cand || !drops || (sampled && !gumbel)) return cudaErrorInvalidValue;
  int p2 = 1;
  while (p2 < phi_stride) p2 <<= 1;
  const int64_t pool = 2 * n_drop < phi_stride ? 2 * n_drop : phi_stride;
  const size_t smem = static_cast<size_t>(p2) * 8 + (sampled ? static_cast<size_t>(pool) * 4 : 0);
  size_t smem_max = 0;
  cudaError_t e = max_dynamic_smem(&smem_max);
  if (e != cudaSuccess) return e;
  if (smem > smem_max) return cudaErrorInvalidValue;
  if (smem > 48 * 1024) {
    e = cudaFuncSetAttribute(judge_select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  judge_select_kernel<<<static_cast<unsigned>(rows), kSelectThreads, smem, stream>>>(
      phi, phi_stride, n_cand, n_drop, p2, sampled, parity, gumbel, drops);
  return cudaGetLastError();
}

void judge_gumbel_noise(const uint64_t* row_keys, int64_t rows, int64_t n_drop, double* noise) {
  for (int64_t r = 0; r < rows; ++r) {
    std::mt19937_64 rng(row_keys[r]);
    for (int64_t i = 0; i < 2 * n_drop; ++i) {
      // fkv::judge's uniform01: 53 random bits + 1/2, never exactly 0 or 1
      const double u = (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53;
      noise[r * 2 * n_drop + i] = -std::log(-std::log(u));
    }
  }
}

}  // namespace fkv_cuda
