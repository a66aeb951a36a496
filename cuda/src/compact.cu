// In-place, order-preserving compaction of the KV cache rows (semantics and the race argument: fkv_cuda/compact.h).
// One block of kThreads threads per (sequence, KV head) row; tiles of kThreads slots; block-wide exclusive scan of
// the keep flags; survivors staged through shared memory chunk by chunk. K/V rows are copied as raw 4-byte words
// (2-byte words when a row's byte size is not a multiple of 4), so fp32/fp16/bf16 move bit-exactly.
#include "fkv_cuda/compact.h"

#include <cstddef>

namespace fkv_cuda {
namespace {

constexpr int kThreads = 256;                // slots per tile = threads per block (8 warps)
constexpr int kWarps = kThreads / 32;
constexpr size_t kStageBytes = 32 * 1024;    // staging budget per block: leaves room for several blocks per SM
constexpr size_t kMaxDynamicSmem = 46 * 1024; // + ~1 KiB static stays under the 48 KiB that needs no opt-in

struct AccPtrs {
  float* p[kMaxCompactAccumulators];
};

template <typename W>
struct CompactParams {
  W* k;
  W* v;
  int64_t* pos;
  int64_t* len;
  const uint8_t* keep_mask;
  const int64_t* drop;
  const int64_t* n_drop;
  int64_t drop_stride;
  int64_t capacity;
  int64_t row_words;  // words of W per K (or V) row
  int64_t n_group;
  int n_acc;
  int stage;          // survivors per staging chunk
  AccPtrs acc;
};

__device__ __forceinline__ size_t align16(size_t x) { return (x + 15) & ~static_cast<size_t>(15); }

/// Whether slot j is in the ascending list d[0 .. n) (binary search).
__device__ __forceinline__ bool in_sorted(const int64_t* d, int64_t n, int64_t j) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (d[mid] < j) lo = mid + 1; else hi = mid;
  }
  return lo < n && d[lo] == j;
}

template <typename W>
__global__ void __launch_bounds__(kThreads) compact_kernel(CompactParams<W> p) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int tile_src[kThreads];  // tile-relative source slot of the i-th survivor of the tile
  __shared__ int warp_incl[kWarps];   // inclusive scan of per-warp survivor counts

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row = blockIdx.x, S = p.capacity, rw = p.row_words, G = p.n_group;
  const int stage = p.stage;
  int64_t n = p.len[row];
  n = n < 0 ? 0 : (n > S ? S : n);
  const uint8_t* mask = p.keep_mask ? p.keep_mask + row * S : nullptr;
  const int64_t* drop = p.drop ? p.drop + row * p.drop_stride : nullptr;
  int64_t nd = p.n_drop ? p.n_drop[row] : 0;
  nd = nd < 0 ? 0 : (nd > p.drop_stride ? p.drop_stride : nd);

  W* kr = p.k + row * S * rw;
  W* vr = p.v + row * S * rw;
  int64_t* pr = p.pos + row * S;

  // staging layout (16-byte aligned sections): pos[stage] | k[stage * rw] | v[stage * rw] | acc[n_acc * G * stage]
  int64_t* st_pos = reinterpret_cast<int64_t*>(smem);
  size_t off = align16(sizeof(int64_t) * stage);
  W* st_k = reinterpret_cast<W*>(smem + off);
  off = align16(off + sizeof(W) * stage * rw);
  W* st_v = reinterpret_cast<W*>(smem + off);
  off = align16(off + sizeof(W) * stage * rw);
  float* st_acc = reinterpret_cast<float*>(smem + off);

  int64_t out = 0;  // survivors already placed (same value in every thread)
  for (int64_t t0 = 0; t0 < n; t0 += kThreads) {
    const int64_t j = t0 + tid;
    int keep = 0;
    if (j < n) keep = mask ? (mask[j] != 0) : !in_sorted(drop, nd, j);
    // block-wide exclusive scan of keep
    int incl = keep;
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    if (lane == 31) warp_incl[warp] = incl;
    __syncthreads();
    if (warp == 0) {
      int w = lane < kWarps ? warp_incl[lane] : 0;
      for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, w, o);
        if (lane >= o) w += y;
      }
      if (lane < kWarps) warp_incl[lane] = w;
    }
    __syncthreads();
    const int excl = incl - keep + (warp > 0 ? warp_incl[warp - 1] : 0);
    const int count = warp_incl[kWarps - 1];
    if (keep) tile_src[excl] = tid;
    __syncthreads();

    const int64_t tile_n = (n - t0) < kThreads ? (n - t0) : kThreads;
    if (!(count == tile_n && out == t0)) {  // a fully kept tile already in place needs no move
      for (int c0 = 0; c0 < count; c0 += stage) {
        const int m = (count - c0) < stage ? (count - c0) : stage;
        // read the chunk's survivors
        for (int64_t e = tid; e < m * rw; e += kThreads) {
          const int64_t i = e / rw, w = e - i * rw;
          const int64_t src = t0 + tile_src[c0 + i];
          st_k[e] = kr[src * rw + w];
          st_v[e] = vr[src * rw + w];
        }
        for (int i = tid; i < m; i += kThreads) st_pos[i] = pr[t0 + tile_src[c0 + i]];
        for (int64_t e = tid; e < p.n_acc * G * m; e += kThreads) {
          const int64_t ag = e / m, i = e - ag * m, a = ag / G, g = ag - a * G;
          st_acc[e] = p.acc.p[a][(row * G + g) * S + t0 + tile_src[c0 + i]];
        }
        __syncthreads();
        // write them to their destinations out + c0 + i (<= their sources)
        const int64_t dst0 = out + c0;
        for (int64_t e = tid; e < m * rw; e += kThreads) {
          const int64_t i = e / rw, w = e - i * rw;
          kr[(dst0 + i) * rw + w] = st_k[e];
          vr[(dst0 + i) * rw + w] = st_v[e];
        }
        for (int i = tid; i < m; i += kThreads) pr[dst0 + i] = st_pos[i];
        for (int64_t e = tid; e < p.n_acc * G * m; e += kThreads) {
          const int64_t ag = e / m, i = e - ag * m, a = ag / G, g = ag - a * G;
          p.acc.p[a][(row * G + g) * S + dst0 + i] = st_acc[e];
        }
        __syncthreads();
      }
    }
    out += count;
    __syncthreads();  // tile_src / warp_incl are rewritten by the next tile
  }
  // past the new length: positions -1, accumulators 0 (the whole rest of the row)
  for (int64_t i = out + tid; i < S; i += kThreads) pr[i] = -1;
  for (int a = 0; a < p.n_acc; ++a)
    for (int64_t g = 0; g < G; ++g) {
      float* ar = p.acc.p[a] + (row * G + g) * S;
      for (int64_t i = out + tid; i < S; i += kThreads) ar[i] = 0.f;
    }
  if (tid == 0) p.len[row] = out;
}

template <typename W>
cudaError_t launch(const CompactArgs& a, int64_t row_bytes, cudaStream_t stream) {
  CompactParams<W> p;
  p.k = static_cast<W*>(a.k);
  p.v = static_cast<W*>(a.v);
  p.pos = a.pos;
  p.len = a.len;
  p.keep_mask = a.keep_mask;
  p.drop = a.keep_mask ? nullptr : a.drop;
  p.n_drop = a.keep_mask ? nullptr : a.n_drop;
  p.drop_stride = a.keep_mask ? 0 : a.drop_stride;
  p.capacity = a.capacity;
  p.row_words = row_bytes / static_cast<int64_t>(sizeof(W));
  p.n_group = a.n_acc > 0 ? a.n_group : 1;
  p.n_acc = a.n_acc;
  for (int i = 0; i < kMaxCompactAccumulators; ++i) p.acc.p[i] = i < a.n_acc ? a.acc[i] : nullptr;
  // bytes staged per survivor: K row, V row, position, every accumulator's G values (+ alignment padding below)
  const size_t per = 2 * static_cast<size_t>(row_bytes) + sizeof(int64_t) + sizeof(float) * a.n_acc * p.n_group;
  size_t stage = kStageBytes / per;
  stage = stage < 1 ? 1 : (stage > static_cast<size_t>(kThreads) ? kThreads : stage);
  const size_t smem = 4 * 16 + per * stage;
  if (smem > kMaxDynamicSmem) return cudaErrorInvalidValue;  // rows of more than ~24 KiB (head_dim > ~6000 fp32)
  p.stage = static_cast<int>(stage);
  const int64_t rows = a.n_seq * a.n_head_kv;
  compact_kernel<W><<<static_cast<unsigned>(rows), kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t compact(const CompactArgs& a, cudaStream_t stream) {
  const size_t es = kv_dtype_size(a.kv_dtype);
  if (a.n_seq <= 0 || a.n_head_kv <= 0 || a.head_dim <= 0 || a.capacity <= 0 || es == 0) return cudaErrorInvalidValue;
  if (a.n_seq * a.n_head_kv > 0x7fffffff) return cudaErrorInvalidValue;
  if (!a.k || !a.v || !a.pos || !a.len) return cudaErrorInvalidValue;
  if (a.n_acc < 0 || a.n_acc > kMaxCompactAccumulators || (a.n_acc > 0 && a.n_group <= 0)) return cudaErrorInvalidValue;
  for (int i = 0; i < a.n_acc; ++i)
    if (!a.acc[i]) return cudaErrorInvalidValue;
  const bool by_mask = a.keep_mask != nullptr, by_list = a.drop != nullptr || a.n_drop != nullptr;
  if (by_mask == by_list) return cudaErrorInvalidValue;  // exactly one selection
  if (by_list && (!a.drop || !a.n_drop || a.drop_stride <= 0)) return cudaErrorInvalidValue;
  const int64_t row_bytes = a.head_dim * static_cast<int64_t>(es);
  if (row_bytes % 4 == 0) return launch<uint32_t>(a, row_bytes, stream);
  return launch<uint16_t>(a, row_bytes, stream);
}

}  // namespace fkv_cuda
