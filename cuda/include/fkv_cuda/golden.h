// Golden Eviction labels on the GPU (foresightkv-spec.md §C.2, Appendix P.4): block-pooled future attention and
// its future suffix max, for ONE layer, without materialising a T x T matrix. Specification and test oracle:
// fkv::golden::block_scores / block_scores_dense / future_scores (foresightkv/golden/schedule.h); parity tests in
// tests/unit/cuda/golden_test.cpp. The greedy schedule itself stays on the CPU (fkv::golden::golden_schedule on fut:
// O(B) per step and head, sequential in s).
//
// Numerics (differ from the CPU oracle only in rounding): logits q.k are accumulated in fp32 (the CPU: fp64, rounded
// to fp32), the softmax row statistics are an online max/sum in fp32 merged across threads (the CPU: a two-pass ATen
// softmax), pooled sums are fp64 as on the CPU. Typical difference |abar_gpu - abar_cpu| ~ 1e-7 relative; with
// bf16_probs a probability within that distance of a bf16 rounding boundary can round to the neighbouring bf16 value
// (one bf16 ulp = 2^-8 relative), so an element may differ by up to 2^-8 * abar. Callers compare with tolerances.
//
// All launchers: arguments are checked on the host (cudaErrorInvalidValue, nothing launched), kernels are queued on
// `stream`, there is no host synchronisation; the returned status is that of the launch (cudaGetLastError).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace fkv_cuda {

/// Element type of q and k. Computation is fp32 in every case.
enum class GoldenInputType : int { F32 = 0, F16 = 1, BF16 = 2 };

/// nb = ceil(T / W): query blocks of W tokens (the last one zero-padded).
inline int64_t golden_num_blocks(int64_t T, int64_t window) { return window > 0 ? (T + window - 1) / window : 0; }

/// Number of eviction steps (= fkv::golden::golden_steps): s = 0, 1, ... while T - s*W > B + W. -1 when B is not a
/// positive multiple of W or T < 0.
inline int64_t golden_num_steps(int64_t T, int64_t budget, int64_t window) {
  if (window <= 0 || budget <= 0 || budget % window != 0 || T < 0) return -1;
  return T <= budget + window ? 0 : (T - budget - window + window - 1) / window;
}

/// Bytes of the device workspace golden_block_scores needs: the softmax row max and sum per (query head, token),
/// 2 * Hq * T fp32.
inline size_t golden_block_scores_workspace_bytes(int64_t n_head_q, int64_t T) {
  return n_head_q > 0 && T > 0 ? static_cast<size_t>(2 * n_head_q * T) * sizeof(float) : 0;
}

/// Block-pooled attention of one layer (= fkv::golden::block_scores):
///   q         [Hq, T, D] contiguous, post-RoPE (element type `type`); query head h belongs to KV head h / G, G =
///   Hq/Hkv k         [Hkv, T, D] contiguous, post-RoPE (element type `type`) A[h, t, n] = softmax_n(q[h, t] . k[h / G,
///   n] / sqrt(D)) over n <= t (fp32 softmax over the full causal row),
///                rounded to bf16 when bf16_probs (the official code's parity), 0 for n > t
///   abar      [Hkv, T, nb] fp32 contiguous, nb = ceil(T/W): abar[j, n, b] = sum over the group's G heads and the
///             queries t in [bW, min(T, (b+1)W)) of A[h, t, n], divided by G*W ALWAYS (the last block counts its
///             zero padding). Every element is written (0 where n > the block's last query).
///   workspace device memory of golden_block_scores_workspace_bytes(Hq, T) bytes (row max and sum; overwritten).
/// Two kernels: (1) per (query head, 64-query tile) an online max/sum over the causal keys; (2) per (KV head, query
/// block, 64-key tile) the G*W query rows in 64-row tiles: recompute the logits, probabilities from (1), column sums
/// (fp64) written without atomics. Work: two passes of Hq*T*T/2*D FMAs. Memory: O(Hq*T) besides q, k, abar.
/// Requires Hq % Hkv == 0, D >= 1, W >= 1, nb <= 65535, Hkv <= 65535. T == 0 is a no-op.
cudaError_t golden_block_scores(const void* q, const void* k, GoldenInputType type, int64_t n_head_q, int64_t n_head_kv,
                                int64_t T, int64_t head_dim, int64_t window, bool bf16_probs, float* workspace,
                                float* abar, cudaStream_t stream);

/// Future suffix max (= fkv::golden::future_scores): with b0 = 1 + B/W and S = golden_num_steps(T, B, W),
///   fut[j, n, s] = max_{r >= s} abar[j, n, b0 + r]   for s < S (r runs over every remaining block, r < nb - b0),
/// abar [Hkv, T, nb] fp32 contiguous, fut [Hkv, T, S] fp32 contiguous. Bit-exact (a max of the inputs).
/// Requires B a positive multiple of W. S == 0 (or T == 0) is a no-op.
cudaError_t golden_future_scores(const float* abar, int64_t n_head_kv, int64_t T, int64_t budget, int64_t window,
                                 float* fut, cudaStream_t stream);

}  // namespace fkv_cuda
