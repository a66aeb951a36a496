// Order-preserving in-place compaction of the evictable KV cache on the GPU: for every (sequence, KV head) row,
// drop a set of live slots and move the survivors, in their order, to the front. Specification: KvCache::keep /
// remove / keep_mask (foresightkv/cache/kv_cache.cpp) for keys, values, positions and lengths, and the Evictor's
// accumulator compaction (foresightkv/evict/evictor.cpp: gather the kept slots, zero the rest) for every fp32
// accumulator [n_seq, Hkv, G, capacity] (CUM, DEC, ...). Parity tests: tests/unit/cuda/compact_test.cpp.
//
// Result, per row (s, h) with old length n and survivors j_0 < j_1 < ... < j_{m-1} (slots < n that are kept):
//   k/v[s, h, i, :] = old k/v[s, h, j_i, :]            for i < m   (bit copies; slots >= m are left as they are)
//   pos[s, h, i]    = old pos[s, h, j_i] for i < m,  -1 for m <= i < capacity
//   acc[s, h, g, i] = old acc[s, h, g, j_i] for i < m,  0 for m <= i < capacity   (every accumulator, every g)
//   len[s, h]       = m
// KvCache sets positions to -1 only on [m, n) and the Evictor zeroes the whole accumulator row; both leave the cache's
// invariant (pos = -1 and acc = 0 past the live length) and this kernel's result equal. A row that drops nothing is
// unchanged. KvCache::keep_ordered with non-increasing slots (score-order layouts) is not covered.
//
// In-place without races: one block per row walks the row in tiles of 256 slots; a block-wide prefix sum over the
// keep flags gives each survivor its destination (dst = survivors before it, so dst <= src). Survivors are moved in
// chunks of up to `stage` entries (as many as fit in 32 KiB of shared memory: K row, V row, position, accumulators):
// the whole chunk is read into shared memory, the block synchronises, then writes. A write of chunk c lands on slots
// < the destination of the first survivor after c <= that survivor's source, so no source still to be read is ever
// overwritten; inside a chunk the staging removes the overlap. No scratch buffer in global memory.
//
// Launcher: arguments are checked on the host (cudaErrorInvalidValue, nothing launched); the kernel is queued on
// `stream`; no host synchronisation; returns the launch status (cudaGetLastError).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "fkv_cuda/kv_dtype.h"

namespace fkv_cuda {

/// Most accumulators one call moves (CUM, DEC and room for more statistics).
constexpr int kMaxCompactAccumulators = 8;

struct CompactArgs {
  int64_t n_seq = 0, n_head_kv = 0, head_dim = 0;
  int64_t capacity = 0;          // S: slots per (sequence, KV head)
  KvDtype kv_dtype = KvDtype::F32;
  void* k = nullptr;             // [n_seq, Hkv, S, D] of kv_dtype, contiguous (moved as raw bytes)
  void* v = nullptr;             // [n_seq, Hkv, S, D], same type
  int64_t* pos = nullptr;        // [n_seq, Hkv, S] absolute positions
  int64_t* len = nullptr;        // [n_seq, Hkv] live lengths; read, then overwritten with the new lengths
  // Accumulators that follow their entries: acc[a] is [n_seq, Hkv, n_group, S] fp32 (G = query heads per KV head).
  int n_acc = 0;
  int64_t n_group = 1;
  float* acc[kMaxCompactAccumulators] = {};
  // The selection, exactly one of:
  //  keep_mask [n_seq, Hkv, S]: nonzero = keep (1-byte elements: a bool or uint8 tensor); slots >= len are ignored.
  //  drop [n_seq, Hkv, drop_stride] with n_drop [n_seq, Hkv]: row (s, h) drops the slots drop[s, h, 0 .. n_drop)
  //    (ascending: each slot is found by binary search; duplicates are harmless; entries outside [0, len) and
  //    counts outside [0, drop_stride] are clamped away). Sorting is a precondition the kernel cannot check.
  const uint8_t* keep_mask = nullptr;
  const int64_t* drop = nullptr;
  const int64_t* n_drop = nullptr;
  int64_t drop_stride = 0;
};

/// Compact every (sequence, KV head) row of one layer in place (see the file comment for the exact result).
cudaError_t compact(const CompactArgs& args, cudaStream_t stream);

}  // namespace fkv_cuda
