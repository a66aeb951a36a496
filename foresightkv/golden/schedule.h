// Golden Eviction (spec §C.2, Appendix P.4): the oracle schedule that supervises ForesightKV.
// For one layer, full causal attention A[h, t, n] (fp32 softmax, optionally rounded to bf16) is mean-pooled over the
// G query heads of each KV head j and over query blocks of W tokens (last block zero-padded, so always / (G*W)):
// abar[j, n, b]. With B = budget, blocks b >= b0 = 1 + B/W are the "future" ones (r = b - b0). Per (layer, KV head),
// independently, the row list starts as [0..T); at step s = 0, 1, ... while len(rows) = T - s*W > B + W, the future
// score of cache slot n < B is alpha_s(n) = max_{r >= s} abar[j, rows[n], b0 + r], the W slots with the smallest
// alpha are dropped and the survivors keep their order. Labels are the drop slots (cache positions, not token
// positions) and the target scores -alpha_s over the B slots.
// Tie rule (the official code breaks ties arbitrarily through topk): among equal alpha the LOWER slot is dropped first.
// Everything here is plain ATen + C++ loops; abar is computed on q's device, the schedule runs on the CPU.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace fkv::golden {

struct GoldenOptions {
  int64_t budget = 0;      // B (must be a positive multiple of window)
  int64_t window = 0;      // W (eviction length = query block size)
  bool bf16_probs = true;  // parity with the official code: fp32 softmax, probabilities cast to bf16 before pooling
};

/// Number of eviction steps for a sequence of T tokens: steps s = 0,1,... while T - s*W > B + W.
int64_t golden_steps(int64_t T, int64_t budget, int64_t window);

/// Block-pooled attention abar[j, n, b] (spec C.2 items 1-3) for ONE layer: q [Hq, T, D], k [Hkv, T, D] post-RoPE
/// fp32, Hq = G*Hkv (query head h belongs to KV head h / G). Full causal softmax(q.k/sqrt(D)) per query head (fp32),
/// optionally cast to bf16, averaged over the group's G heads and the W queries of block b = [bW, (b+1)W)
/// (last partial block zero-padded: divide by G*W always). Returns fp32 [Hkv, T, nb], nb = ceil(T/W).
/// Streams per KV head and per query block: never materialises a T x T matrix; peak extra memory O(G*W*T).
/// Numerics (shared with block_scores_dense so both agree bit for bit in practice): logits q.k are accumulated in
/// fp64 and rounded to fp32, the softmax is fp32 over full length-T rows (causal entries -inf), pooled sums are fp64.
at::Tensor block_scores(const at::Tensor& q, const at::Tensor& k, int64_t window, bool bf16_probs = true);

/// The same quantity computed the naive way (materialise [Hq, T, T], pad, reshape, mean). Test oracle.
at::Tensor block_scores_dense(const at::Tensor& q, const at::Tensor& k, int64_t window, bool bf16_probs = true);

struct GoldenLayerLabels {
  at::Tensor drops;   // [steps, Hkv, W] int64: cache slots (indices into rows[0:B]) dropped at each step, ascending
  at::Tensor scores;  // [steps, Hkv, B] fp32: target scores -alpha_s over the B candidates
};

/// Greedy schedule (spec C.2 items 4-7) from abar [Hkv, T, nb] (any device/floating dtype; labels are CPU tensors).
/// Ties in alpha: the lower slot is dropped first. Suffix max over blocks is precomputed, and the row list is kept
/// as "B cache slots + untouched tail [next, T)", so each step is O(B) average (nth_element) per head.
GoldenLayerLabels golden_schedule(const at::Tensor& abar, int64_t T, const GoldenOptions& opt);

/// The oracle's future score of EVERY position at every step: fut[j, n, s] = alpha_s(n) = max_{r >= s} abar[j, n,
/// b0 + r] for s < golden_steps(T, B, W), fp32 [Hkv, T, S]. alpha depends only on the key's absolute position and
/// the step, so any cache state reached by any policy on this sequence can be labelled from it (on-policy data,
/// train/feature_store.h). On the golden trajectory, -fut gathered at the candidates equals golden_schedule's scores.
at::Tensor future_scores(const at::Tensor& abar, int64_t T, const GoldenOptions& opt);

/// The oracle's choice among candidates with future scores alpha [n]: the `d` smallest, ties to the lower slot,
/// returned ascending (golden_schedule's rule, usable on any cache state).
std::vector<int64_t> oracle_drops(const float* alpha, int64_t n, int64_t d);

/// Convenience: golden_schedule(block_scores(q, k, W, bf16), T, opt).
GoldenLayerLabels golden_layer_labels(const at::Tensor& q, const at::Tensor& k, const GoldenOptions& opt);

/// Naive reference: loops over steps recomputing alpha_s(n) = max_{r>=s} abar[j, rows[n], b0 + r] directly from a
/// dense abar, with a plain std::vector rows list. Test oracle.
GoldenLayerLabels golden_schedule_reference(const at::Tensor& abar_dense, int64_t T, const GoldenOptions& opt);

}  // namespace fkv::golden
