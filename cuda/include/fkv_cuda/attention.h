// Attention of a few queries (decode: T = 1; a chunk; or an eviction event's observed queries) over the evictable KV
// cache on the GPU, with the per-key attention statistics the eviction policies and the judge read, in the same
// launch sequence. Specification: ops::attention_decode_f32 (foresightkv/ops/attention.h) and attention_general in
// model/transformer.cpp for the output; Evictor::evict_layer (evict/evictor.cpp) and judge/features.cpp for the
// statistics. Parity tests: tests/unit/cuda/attention_test.cpp (reference: tests/unit/cuda/references.h).
//
// Semantics. Cache layout of foresightkv/cache/kv_cache.h: k/v [n_seq, Hkv, S, D] (S = capacity), pos [n_seq, Hkv, S],
// len [n_seq, Hkv]. Query head h uses KV head h / G (G = Hq / Hkv). Query t of sequence s, head h sees slot j iff
// j < len[s, h/G] and pos[s, h/G, j] <= qpos[s, t]. With s_j = (q . k_j) * scale over the visible slots:
//   p_j = exp(s_j - max) / sum_visible exp(s_i - max),   out = sum_j p_j v_j        (fp32 math, any KV storage type)
// A query that sees no slot (len 0, or every position > qpos) gets out = 0 and p = 0 everywhere, as the CPU kernels
// do for the output (the Evictor's ATen softmax would give NaN probabilities there; no caller reaches that case).
// The model and the CPU kernel use scale = 1/sqrt(D) (fp32); the Evictor uses 1/sqrt(D) in fp64: pass either.
//
// Statistics (each optional; fp32 [n_seq, Hkv, G, S], index [s, kvh, g, j] for query head h = kvh*G + g, exactly the
// Evictor's cum/dec layout per layer). Only slots j < len[s, kvh] are written; p counts 0 for invisible slots, as the
// Evictor's masked softmax does. Over the T queries of THIS call:
//   acc_sum[s,kvh,g,j]  += sum_t p            (CUM; or a per-event SUM scratch when zeroed by the caller)
//   acc_dec[s,kvh,g,j]   = decay * acc_dec + sum_t p     (one decay per call)
//   stat_sum/max/min     = sum_t / max_t / min_t p  (overwritten; rounded to bf16 first when stats_bf16)
// Correspondence with the Evictor (one call per eviction event over that event's observed queries, i.e. q = the query
// ring [n_seq, Hq, nq, D] in HeadMajor layout with its positions, out = nullptr):
//   LayerView.probs summed over queries = stat_sum;  Evictor cum_ (intended and parity) = acc_sum;
//   intended dec_ = acc_dec with decay = EvictionConfig::decay (dec = decay*dec + SUM, spec §P.2);
//   parity dec_ = a copy of cum after the update (the caller's cudaMemcpyAsync, not this kernel);
//   judge features (judge/features.cpp) MAX/MIN/SUM = stat_max/min/sum over the segment's queries, with stats_bf16
//   for the parity variant (SUM8/16/32 = SUM there; intended SUM8/16/32 need calls over the last 8/16/32 queries).
// Because a query at position p only sees keys with positions <= p, and keys appended later have larger positions,
// the probabilities of a query are the same at its own decode step and at a later event as long as no eviction ran in
// between: accumulating acc_sum during decode (or into a scratch SUM reset at every event) equals the event-time sum.
//
// Algorithm (no [T, N] probability matrix in global memory): the keys of each (s, kvh) are cut into n_split ranges
// (flash-decoding split-K, so one head with 32K keys runs on many blocks); rows (g, t) in groups of 16 per block.
// Pass 1: per (range, row) online max m, sum l and unnormalised output o in fp32 -> workspace. Merge: per row
// M = max m_i, L = sum e^(m_i - M) l_i, out = sum e^(m_i - M) o_i / L; (M, L) -> workspace. Pass 2 (only when a
// statistic is requested): recompute s_j per key tile, p = exp(s_j - M) / L, reduce over t in shared memory, update
// the statistics (each (g, j) written by one thread: no atomics). Summation order differs from the CPU kernel;
// results agree to fp32 rounding.
//
// Launcher: arguments are checked on the host (cudaErrorInvalidValue, nothing launched), kernels are queued on
// `stream`, no host synchronisation, no allocation (the caller passes the workspace); returns the launch status.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "fkv_cuda/kv_dtype.h"

namespace fkv_cuda {

/// Layout of q and out: TokenMajor [n_seq, T, Hq, D] (the model's projections, ops::AttentionArgs);
/// HeadMajor [n_seq, Hq, T, D] (the query taps and the Evictor's query ring).
enum class QueryLayout : int { TokenMajor = 0, HeadMajor = 1 };

/// Largest head_dim the kernels accept.
constexpr int64_t kAttentionMaxHeadDim = 256;

struct AttentionArgs {
  int64_t n_seq = 0, n_tok = 0;          // n_tok = T queries per sequence
  int64_t n_head_q = 0, n_head_kv = 0;   // Hq must be a multiple of Hkv
  int64_t head_dim = 0;                  // D <= kAttentionMaxHeadDim
  int64_t capacity = 0;                  // S: slot stride of the cache
  int64_t len_bound = 0;                 // an upper bound of every len (sizes the split); 0 = capacity. Slots at or
                                         // past the bound are ignored, so it must hold.
  float scale = 1.f;
  QueryLayout layout = QueryLayout::TokenMajor;
  const float* q = nullptr;              // queries, fp32, `layout`
  const void* k = nullptr;               // [n_seq, Hkv, S, D] of kv_dtype
  const void* v = nullptr;               // [n_seq, Hkv, S, D] of kv_dtype
  KvDtype kv_dtype = KvDtype::F32;
  const int64_t* pos = nullptr;          // [n_seq, Hkv, S]
  const int64_t* len = nullptr;          // [n_seq, Hkv]
  const int64_t* qpos = nullptr;         // [n_seq, T] absolute positions of the queries
  float* out = nullptr;                  // fp32, `layout`; nullptr = statistics only (then one must be requested)
  // statistics, fp32 [n_seq, Hkv, G, S]; nullptr = not computed (see the file comment)
  float* acc_sum = nullptr;
  float* acc_dec = nullptr;
  float decay = 0.9f;                    // acc_dec's factor
  float* stat_sum = nullptr;
  float* stat_max = nullptr;
  float* stat_min = nullptr;
  bool stats_bf16 = false;               // round p to bf16 before stat_sum/max/min (not acc_*): judge parity features
  void* workspace = nullptr;             // device memory of attention_workspace_bytes(args) bytes, 16-byte aligned
  size_t workspace_bytes = 0;
};

/// Device workspace the call needs (split partials and row statistics): a function of the sizes, len_bound and whether
/// out is set (the partial outputs are only stored then). 0 when the sizes are invalid.
size_t attention_workspace_bytes(const AttentionArgs& args);

/// Queue the attention (and the requested statistics) on `stream`.
cudaError_t attention(const AttentionArgs& args, cudaStream_t stream);

}  // namespace fkv_cuda
