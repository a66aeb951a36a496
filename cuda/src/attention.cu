// Split-K attention over the evictable cache with optional per-key statistics (semantics: fkv_cuda/attention.h).
// Three kernels on one stream:
//   attn_partial_kernel  grid (n_split, Hkv * row_groups, n_seq): one key range x up to kRows query rows (g, t) of one
//                        (sequence, KV head); K/V tiles of kTile keys staged in shared memory as fp32; online softmax
//                        per row (one warp per row, lane = key); unnormalised output kept in registers.
//   attn_merge_kernel    one block per row: merges the ranges (flash-decoding), writes out and the row's (M, L).
//   attn_stats_kernel    grid (n_split, Hkv, n_seq): recomputes the scores of its key range for every row, turns them
//                        into probabilities with (M, L) and reduces over the queries per (g, key) in shared memory.
// Scores are computed by the same function in pass 1 and pass 2 (identical fp32 operation order), so the
// probabilities of pass 2 are normalised exactly by the max and sum of the values they are built from.
#include "fkv_cuda/attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

namespace fkv_cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps per block
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 32;      // keys per shared-memory tile = warp size (one lane per key in the softmax update)
constexpr int kRows = 16;      // query rows (g, t) per pass-1 block and per pass-2 row chunk
constexpr int kMaxOut = kRows * static_cast<int>(kAttentionMaxHeadDim) / kThreads;  // output elements per thread
constexpr int64_t kMinKeysPerSplit = 64;  // a key range is at least this long (merge cost vs parallelism)
constexpr int64_t kTargetBlocks = 1024;   // enough blocks to fill an H100/H200 (132 SMs) several times
constexpr int64_t kMaxGroup = 64;         // G bound (pass-2 shared memory: 4 * G * kTile floats)
constexpr size_t kDefaultSmem = 48 * 1024;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

struct Plan {
  int64_t G = 0, R = 0;          // query heads per KV head; rows (g, t) per (sequence, KV head) = G * T
  int64_t row_groups = 0;        // pass-1 blocks along the rows: ceil(R / kRows)
  int64_t bound = 0;             // keys considered per row: min(len_bound or S, S)
  int64_t n_split = 0, kps = 0;  // key ranges [i * kps, (i + 1) * kps) per (sequence, KV head); kps % kTile == 0
  size_t off_part_o = 0, off_row = 0, bytes = 0;  // workspace layout: part_ml | part_o | row_ml
};

size_t align16(size_t x) { return (x + 15) & ~static_cast<size_t>(15); }

bool make_plan(const AttentionArgs& a, Plan& p) {
  if (a.n_seq <= 0 || a.n_tok <= 0 || a.n_head_q <= 0 || a.n_head_kv <= 0 || a.head_dim <= 0 || a.capacity <= 0)
    return false;
  if (a.n_head_q % a.n_head_kv != 0 || a.head_dim > kAttentionMaxHeadDim || a.len_bound < 0) return false;
  p.G = a.n_head_q / a.n_head_kv;
  if (p.G > kMaxGroup) return false;
  p.R = p.G * a.n_tok;
  p.row_groups = (p.R + kRows - 1) / kRows;
  p.bound = a.len_bound > 0 && a.len_bound < a.capacity ? a.len_bound : a.capacity;
  const int64_t base = a.n_seq * a.n_head_kv * p.row_groups;
  const int64_t max_split = (p.bound + kMinKeysPerSplit - 1) / kMinKeysPerSplit;
  int64_t n_split = (kTargetBlocks + base - 1) / base;
  n_split = n_split < 1 ? 1 : (n_split > max_split ? max_split : n_split);
  p.kps = ((p.bound + n_split - 1) / n_split + kTile - 1) / kTile * kTile;
  p.n_split = (p.bound + p.kps - 1) / p.kps;
  const size_t rows = static_cast<size_t>(a.n_seq * a.n_head_kv * p.R);
  const size_t parts = rows * static_cast<size_t>(p.n_split);
  p.off_part_o = align16(parts * 2 * sizeof(float));
  p.off_row = p.off_part_o + (a.out ? align16(parts * static_cast<size_t>(a.head_dim) * sizeof(float)) : 0);
  p.bytes = p.off_row + align16(rows * 2 * sizeof(float));
  // grid limits: y and z are 16-bit
  if (a.n_head_kv * p.row_groups > 65535 || a.n_seq > 65535 || a.n_head_kv > 65535) return false;
  return true;
}

struct Params {
  const float* q;
  const void* k;
  const void* v;
  const int64_t* pos;
  const int64_t* len;
  const int64_t* qpos;
  float* out;
  float *acc_sum, *acc_dec, *stat_sum, *stat_max, *stat_min;
  float decay, scale;
  bool stats_bf16, head_major;
  int64_t T, Hq, Hkv, G, D, S, R, bound, n_split, kps;
  float* part_ml;  // [n_seq * Hkv * R, n_split, 2] (m, l)
  float* part_o;   // [n_seq * Hkv * R, n_split, D]
  float* row_ml;   // [n_seq * Hkv * R, 2] (M, L)
};

/// Offset of query/output row (s, t, h) in the chosen layout.
__device__ __forceinline__ int64_t q_offset(const Params& p, int64_t s, int64_t t, int64_t h) {
  return (p.head_major ? (s * p.Hq + h) * p.T + t : (s * p.T + t) * p.Hq + h) * p.D;
}

/// Live keys of row (s, kvh) that the kernels consider: len clamped to [0, bound].
__device__ __forceinline__ int64_t live_len(const Params& p, int64_t sk) {
  const int64_t n = p.len[sk];
  return n < 0 ? 0 : (n > p.bound ? p.bound : n);
}

/// Shared-memory views common to pass 1 and pass 2.
struct Tiles {
  int64_t* qp;   // [kRows] query position of each row
  int64_t* kp;   // [kTile] key positions of the tile
  float* q;      // [kRows, D]
  float* kv;     // [kTile, D + 1] (padded: conflict-free column reads)
  float* sc;     // [kRows, kTile] scores, then probabilities
};

__device__ __forceinline__ Tiles carve(unsigned char* smem, int64_t D, float** rest) {
  Tiles t;
  t.qp = reinterpret_cast<int64_t*>(smem);
  t.kp = t.qp + kRows;
  t.q = reinterpret_cast<float*>(t.kp + kTile);
  t.kv = t.q + kRows * D;
  t.sc = t.kv + kTile * (D + 1);
  *rest = t.sc + kRows * kTile;
  return t;
}
size_t tiles_bytes(int64_t D) {
  return sizeof(int64_t) * (kRows + kTile) + sizeof(float) * (kRows * D + kTile * (D + 1) + kRows * kTile);
}

/// Load rows [row0, row0 + nr) of (s, kvh): row r = g * T + t is query t of head kvh * G + g.
__device__ __forceinline__ void load_rows(const Params& p, const Tiles& tl, int64_t s, int64_t kvh, int64_t row0,
                                          int nr) {
  const int64_t D = p.D;
  for (int64_t i = threadIdx.x; i < nr * D; i += kThreads) {
    const int64_t r = i / D, d = i - r * D, rg = row0 + r, g = rg / p.T, t = rg - g * p.T;
    tl.q[i] = p.q[q_offset(p, s, t, kvh * p.G + g) + d];
  }
  for (int r = threadIdx.x; r < nr; r += kThreads) tl.qp[r] = p.qpos[s * p.T + (row0 + r) % p.T];
}

/// Stage keys [j0, j0 + nt) (converted to fp32) of one (s, kvh) row of the cache; also their positions.
template <typename KV>
__device__ __forceinline__ void load_tile(const KV* base, const int64_t* posb, const Tiles& tl, int64_t D, int64_t j0,
                                          int nt, bool with_pos) {
  for (int64_t i = threadIdx.x; i < nt * D; i += kThreads) {
    const int64_t jj = i / D, d = i - jj * D;
    tl.kv[jj * (D + 1) + d] = to_f(base[(j0 + jj) * D + d]);
  }
  if (with_pos)
    for (int jj = threadIdx.x; jj < nt; jj += kThreads) tl.kp[jj] = posb[j0 + jj];
}

/// Score of row r and tile key jj: (q . k) * scale when visible, -inf otherwise. One fixed operation order.
__device__ __forceinline__ float score(const Tiles& tl, int64_t D, float scale, int r, int jj, int nt) {
  if (jj >= nt || tl.kp[jj] > tl.qp[r]) return -INFINITY;
  const float* qr = tl.q + r * D;
  const float* kr = tl.kv + jj * (D + 1);
  float acc = 0.f;
  for (int64_t d = 0; d < D; ++d) acc = fmaf(qr[d], kr[d], acc);
  return acc * scale;
}

template <typename KV>
__global__ void __launch_bounds__(kThreads) attn_partial_kernel(Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* rest;
  const Tiles tl = carve(smem, p.D, &rest);
  float* m_s = rest;            // [kRows] running max
  float* l_s = m_s + kRows;     // [kRows] running sum
  float* f_s = l_s + kRows;     // [kRows] rescale factor of the current tile

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t split = blockIdx.x, kvh = blockIdx.y % p.Hkv, rgrp = blockIdx.y / p.Hkv, s = blockIdx.z;
  const int64_t sk = s * p.Hkv + kvh, D = p.D;
  const int64_t n = live_len(p, sk), j0 = split * p.kps;
  if (j0 >= n) return;  // uniform over the block; the merge skips ranges past the length
  const int64_t j1 = j0 + p.kps < n ? j0 + p.kps : n;
  const int64_t row0 = rgrp * kRows;
  const int nr = static_cast<int>(p.R - row0 < kRows ? p.R - row0 : kRows);
  const KV* kb = static_cast<const KV*>(p.k) + sk * p.S * D;
  const KV* vb = static_cast<const KV*>(p.v) + sk * p.S * D;
  const int64_t* pb = p.pos + sk * p.S;
  const bool with_out = p.out != nullptr;

  load_rows(p, tl, s, kvh, row0, nr);
  for (int r = tid; r < nr; r += kThreads) m_s[r] = -INFINITY, l_s[r] = 0.f;
  float acc[kMaxOut];
#pragma unroll
  for (int i = 0; i < kMaxOut; ++i) acc[i] = 0.f;
  __syncthreads();

  for (int64_t jt = j0; jt < j1; jt += kTile) {
    const int nt = static_cast<int>(j1 - jt < kTile ? j1 - jt : kTile);
    load_tile(kb, pb, tl, D, jt, nt, true);
    __syncthreads();
    for (int i = tid; i < nr * kTile; i += kThreads) {
      const int r = i / kTile, jj = i - r * kTile;
      tl.sc[i] = score(tl, D, p.scale, r, jj, nt);
    }
    __syncthreads();
    // online softmax: warp per row, lane per key
    for (int r = warp; r < nr; r += kWarps) {
      const float x = tl.sc[r * kTile + lane];
      const float m_old = m_s[r], m_new = fmaxf(m_old, warp_max(x));
      const float e = x == -INFINITY ? 0.f : expf(x - m_new);
      const float sum = warp_sum(e);
      tl.sc[r * kTile + lane] = e;
      if (lane == 0) {
        const float f = m_old == -INFINITY ? 0.f : expf(m_old - m_new);
        m_s[r] = m_new;
        l_s[r] = l_s[r] * f + sum;
        f_s[r] = f;
      }
    }
    __syncthreads();
    if (with_out) {
      load_tile(vb, pb, tl, D, jt, nt, false);
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kMaxOut; ++i) {
        const int64_t idx = tid + static_cast<int64_t>(i) * kThreads;
        if (idx < nr * D) {
          const int64_t r = idx / D, d = idx - r * D;
          float a = acc[i] * f_s[r];
          const float* pr = tl.sc + r * kTile;
          for (int jj = 0; jj < nt; ++jj) a = fmaf(pr[jj], tl.kv[jj * (D + 1) + d], a);
          acc[i] = a;
        }
      }
    }
    __syncthreads();  // kv / sc / f_s are rewritten by the next tile
  }
  // partials of rows (s, kvh, row0 + r) for range `split`
  const int64_t prow = sk * p.R + row0;
  for (int r = tid; r < nr; r += kThreads) {
    float* ml = p.part_ml + ((prow + r) * p.n_split + split) * 2;
    ml[0] = m_s[r];
    ml[1] = l_s[r];
  }
  if (with_out) {
#pragma unroll
    for (int i = 0; i < kMaxOut; ++i) {
      const int64_t idx = tid + static_cast<int64_t>(i) * kThreads;
      if (idx < nr * D) {
        const int64_t r = idx / D, d = idx - r * D;
        p.part_o[((prow + r) * p.n_split + split) * D + d] = acc[i];
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads) attn_merge_kernel(Params p) {
  const int64_t row = blockIdx.x, sk = row / p.R, r = row - sk * p.R;
  const int64_t s = sk / p.Hkv, kvh = sk - s * p.Hkv, g = r / p.T, t = r - g * p.T;
  const int64_t n = live_len(p, sk);
  const int64_t nv = (n + p.kps - 1) / p.kps;  // ranges that hold at least one live key
  const float* ml = p.part_ml + row * p.n_split * 2;
  float M = -INFINITY;
  for (int64_t i = 0; i < nv; ++i) M = fmaxf(M, ml[2 * i]);
  float L = 0.f;
  if (M != -INFINITY)
    for (int64_t i = 0; i < nv; ++i)
      if (ml[2 * i] != -INFINITY) L += expf(ml[2 * i] - M) * ml[2 * i + 1];
  if (p.out) {
    float* o = p.out + q_offset(p, s, t, kvh * p.G + g);
    const float* po = p.part_o + row * p.n_split * p.D;
    for (int64_t d = threadIdx.x; d < p.D; d += kThreads) {
      float acc = 0.f;
      if (M != -INFINITY) {
        for (int64_t i = 0; i < nv; ++i)
          if (ml[2 * i] != -INFINITY) acc = fmaf(expf(ml[2 * i] - M), po[i * p.D + d], acc);
        acc /= L;
      }
      o[d] = acc;  // a query that sees nothing: 0
    }
  }
  if (threadIdx.x == 0) {
    p.row_ml[row * 2] = M;
    p.row_ml[row * 2 + 1] = L;
  }
}

template <typename KV>
__global__ void __launch_bounds__(kThreads) attn_stats_kernel(Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* rest;
  const Tiles tl = carve(smem, p.D, &rest);
  float* rm = rest;               // [kRows] row max M
  float* rl = rm + kRows;         // [kRows] row sum L
  const int64_t GT = p.G * kTile;
  float* st_sum = rl + kRows;     // [G, kTile] sum_t p (fp32 p)
  float* st_sumr = st_sum + GT;   // [G, kTile] sum_t p (bf16-rounded p when stats_bf16)
  float* st_max = st_sumr + GT;   // [G, kTile]
  float* st_min = st_max + GT;    // [G, kTile]

  const int tid = threadIdx.x;
  const int64_t split = blockIdx.x, kvh = blockIdx.y, s = blockIdx.z;
  const int64_t sk = s * p.Hkv + kvh, D = p.D, T = p.T;
  const int64_t n = live_len(p, sk), j0 = split * p.kps;
  if (j0 >= n) return;
  const int64_t j1 = j0 + p.kps < n ? j0 + p.kps : n;
  const KV* kb = static_cast<const KV*>(p.k) + sk * p.S * D;
  const int64_t* pb = p.pos + sk * p.S;
  const bool single_chunk = p.R <= kRows;

  for (int64_t jt = j0; jt < j1; jt += kTile) {
    const int nt = static_cast<int>(j1 - jt < kTile ? j1 - jt : kTile);
    load_tile(kb, pb, tl, D, jt, nt, true);
    for (int64_t i = tid; i < GT; i += kThreads) {
      st_sum[i] = 0.f, st_sumr[i] = 0.f, st_max[i] = -INFINITY, st_min[i] = INFINITY;
    }
    for (int64_t rc0 = 0; rc0 < p.R; rc0 += kRows) {
      const int nr = static_cast<int>(p.R - rc0 < kRows ? p.R - rc0 : kRows);
      if (!single_chunk || jt == j0) {
        load_rows(p, tl, s, kvh, rc0, nr);
        for (int r = tid; r < nr; r += kThreads) {
          rm[r] = p.row_ml[(sk * p.R + rc0 + r) * 2];
          rl[r] = p.row_ml[(sk * p.R + rc0 + r) * 2 + 1];
        }
      }
      __syncthreads();
      for (int i = tid; i < nr * kTile; i += kThreads) {
        const int r = i / kTile, jj = i - r * kTile;
        const float x = score(tl, D, p.scale, r, jj, nt);
        tl.sc[i] = (x == -INFINITY || rm[r] == -INFINITY) ? 0.f : expf(x - rm[r]) / rl[r];
      }
      __syncthreads();
      // reduce this chunk's rows over t for every (g, key): rows g*T .. g*T + T - 1 that fall in the chunk
      for (int64_t i = tid; i < GT; i += kThreads) {
        const int64_t g = i / kTile, jj = i - g * kTile;
        if (jj >= nt) continue;
        const int64_t lo = g * T > rc0 ? g * T : rc0, hi = (g + 1) * T < rc0 + nr ? (g + 1) * T : rc0 + nr;
        float sum = st_sum[i], sumr = st_sumr[i], mx = st_max[i], mn = st_min[i];
        for (int64_t r = lo; r < hi; ++r) {
          const float pr = tl.sc[(r - rc0) * kTile + jj];
          const float pq = p.stats_bf16 ? __bfloat162float(__float2bfloat16_rn(pr)) : pr;
          sum += pr;
          sumr += pq;
          mx = fmaxf(mx, pq);
          mn = fminf(mn, pq);
        }
        st_sum[i] = sum, st_sumr[i] = sumr, st_max[i] = mx, st_min[i] = mn;
      }
      __syncthreads();  // sc (and q rows when several chunks) are rewritten next
    }
    // every (g, key) of the tile: one thread writes it (the same thread that reduced it)
    for (int64_t i = tid; i < GT; i += kThreads) {
      const int64_t g = i / kTile, jj = i - g * kTile;
      if (jj >= nt) continue;
      const int64_t o = (sk * p.G + g) * p.S + jt + jj;
      if (p.acc_sum) p.acc_sum[o] += st_sum[i];
      if (p.acc_dec) p.acc_dec[o] = p.decay * p.acc_dec[o] + st_sum[i];
      if (p.stat_sum) p.stat_sum[o] = st_sumr[i];
      if (p.stat_max) p.stat_max[o] = st_max[i];
      if (p.stat_min) p.stat_min[o] = st_min[i];
    }
    __syncthreads();  // the next tile rewrites kv and the statistics
  }
}

template <typename Kernel>
cudaError_t launch(Kernel kernel, dim3 grid, size_t smem, const Params& p, cudaStream_t stream) {
  if (smem > kDefaultSmem) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  kernel<<<grid, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename KV>
cudaError_t run(const AttentionArgs& a, const Plan& pl, cudaStream_t stream) {
  Params p;
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.pos = a.pos;
  p.len = a.len;
  p.qpos = a.qpos;
  p.out = a.out;
  p.acc_sum = a.acc_sum;
  p.acc_dec = a.acc_dec;
  p.stat_sum = a.stat_sum;
  p.stat_max = a.stat_max;
  p.stat_min = a.stat_min;
  p.decay = a.decay;
  p.scale = a.scale;
  p.stats_bf16 = a.stats_bf16;
  p.head_major = a.layout == QueryLayout::HeadMajor;
  p.T = a.n_tok;
  p.Hq = a.n_head_q;
  p.Hkv = a.n_head_kv;
  p.G = pl.G;
  p.D = a.head_dim;
  p.S = a.capacity;
  p.R = pl.R;
  p.bound = pl.bound;
  p.n_split = pl.n_split;
  p.kps = pl.kps;
  auto* ws = static_cast<unsigned char*>(a.workspace);
  p.part_ml = reinterpret_cast<float*>(ws);
  p.part_o = a.out ? reinterpret_cast<float*>(ws + pl.off_part_o) : nullptr;
  p.row_ml = reinterpret_cast<float*>(ws + pl.off_row);

  const size_t smem1 = tiles_bytes(p.D) + sizeof(float) * 3 * kRows;
  const dim3 grid1(static_cast<unsigned>(pl.n_split), static_cast<unsigned>(p.Hkv * pl.row_groups),
                   static_cast<unsigned>(a.n_seq));
  cudaError_t e = launch(attn_partial_kernel<KV>, grid1, smem1, p, stream);
  if (e != cudaSuccess) return e;
  const int64_t rows = a.n_seq * p.Hkv * p.R;
  e = launch(attn_merge_kernel, dim3(static_cast<unsigned>(rows)), 0, p, stream);
  if (e != cudaSuccess) return e;
  if (a.acc_sum || a.acc_dec || a.stat_sum || a.stat_max || a.stat_min) {
    const size_t smem2 = tiles_bytes(p.D) + sizeof(float) * (2 * kRows + 4 * p.G * kTile);
    const dim3 grid2(static_cast<unsigned>(pl.n_split), static_cast<unsigned>(p.Hkv), static_cast<unsigned>(a.n_seq));
    e = launch(attn_stats_kernel<KV>, grid2, smem2, p, stream);
  }
  return e;
}

}  // namespace

size_t attention_workspace_bytes(const AttentionArgs& a) {
  Plan pl;
  return make_plan(a, pl) ? pl.bytes : 0;
}

cudaError_t attention(const AttentionArgs& a, cudaStream_t stream) {
  Plan pl;
  if (!make_plan(a, pl)) return cudaErrorInvalidValue;
  if (!a.q || !a.k || !a.v || !a.pos || !a.len || !a.qpos) return cudaErrorInvalidValue;
  const bool stats = a.acc_sum || a.acc_dec || a.stat_sum || a.stat_max || a.stat_min;
  if (!a.out && !stats) return cudaErrorInvalidValue;
  if (!a.workspace || a.workspace_bytes < pl.bytes || reinterpret_cast<uintptr_t>(a.workspace) % 16 != 0)
    return cudaErrorInvalidValue;
  if (a.n_seq * a.n_head_kv * pl.R > 0x7fffffff) return cudaErrorInvalidValue;  // merge grid (x)
  switch (a.kv_dtype) {
    case KvDtype::F32: return run<float>(a, pl, stream);
    case KvDtype::F16: return run<__half>(a, pl, stream);
    case KvDtype::BF16: return run<__nv_bfloat16>(a, pl, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fkv_cuda
