// The learned judge on the GPU (foresightkv-spec.md §B): scoring of every candidate slot of one layer in one launch
// (feature gather + head-wise MLP F -> 16 -> 1), and the drop-set choice of the `foresightkv` (top-2D, then D draws
// without replacement from the softmax) and `foresightkv_topk` (the D largest) policies. Specification and oracle:
// fkv::judge::build_features / Judge::score / choose_drops (foresightkv/judge/{features,judge,policy}.cpp); parity
// tests in tests/unit/cuda/judge_score_test.cpp.
//
// Rows: one row per (sequence s, KV head j), row = s * Hkv + j. Candidates of a row are its slots [0, n_cand[row])
// (the live length minus the protected newest entries), in physical order.
//
// All launchers: arguments are checked on the host (cudaErrorInvalidValue, nothing launched), kernels are queued on
// `stream`, there is no host synchronisation; the returned status is that of the launch (cudaGetLastError).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "fkv_cuda/kv_dtype.h"

namespace fkv_cuda {

/// Hidden width of the judge MLP (spec §B.3; fkv::judge::JudgeShape::hidden).
inline constexpr int kJudgeHidden = 16;

/// Inputs of judge_score for one layer. Device pointers unless stated; all tensors contiguous.
struct JudgeScoreArgs {
  int64_t n_seq = 0, n_head_kv = 0, head_dim = 0, group = 0;  // n_seq sequences, Hkv, D, G = Hq / Hkv
  // K/V cache storage of the layer: [n_seq, Hkv, kv_capacity, D], element type kv_type (post-RoPE keys, values;
  // features are fp32, the conversion is exact).
  const void* k = nullptr;
  const void* v = nullptr;
  KvDtype kv_type = KvDtype::F32;
  int64_t kv_capacity = 0;
  // The eviction event's statistics, slot axis padded to stat_capacity (values past a row's candidates are ignored),
  // query head h = j*G + g. Accumulators (always): cum, dec [n_seq, Hkv, G, stat_capacity] fp32 (LayerView::cum/dec).
  // MAX/MIN/SUMw in one of two forms:
  //   (a) probs != nullptr: probs [n_seq, Hkv, G, n_query, stat_capacity] fp32, the observed queries' softmax
  //       probabilities (LayerView::probs); the kernel reduces them over the query axis per `parity` / `segment`;
  //   (b) probs == nullptr: precomputed per-key statistics, each [n_seq, Hkv, G, stat_capacity] fp32, used as they
  //       are (fkv_cuda::attention's stat_max/min/sum over the segment's queries, bf16-rounded for parity);
  //       stat_sum16/8/32 == nullptr means "= stat_sum" (parity; or fewer than w queries). parity, segment and
  //       n_query are ignored in this form.
  const float* cum = nullptr;
  const float* dec = nullptr;
  int64_t stat_capacity = 0;
  const float* probs = nullptr;
  int64_t n_query = 0;
  const float* stat_max = nullptr;
  const float* stat_min = nullptr;
  const float* stat_sum = nullptr;
  const float* stat_sum16 = nullptr;
  const float* stat_sum8 = nullptr;
  const float* stat_sum32 = nullptr;
  // [n_seq * Hkv] int64: candidates per row. Precondition (not checked on the device, values are clamped):
  // n_cand[row] <= min(kv_capacity, stat_capacity, phi_stride).
  const int64_t* n_cand = nullptr;
  // Feature variant of form (a) (fkv::judge::FeatureOptions): parity = the released code (probabilities rounded to
  // bf16, MAX/MIN/SUM over all n_query queries, SUM16 = SUM8 = SUM32 = SUM); intended = MAX/MIN/SUM over the last
  // min(n_query, segment) queries (segment 0: all), SUMw over the last w of those (= SUM when w >= their count).
  bool parity = false;
  int64_t segment = 0;
  // Judge weights of this layer, fp32 (Judge::parameters(): fc1.weight [Hkv, F, 16], fc1.bias [Hkv, 16],
  // fc2.weight [Hkv, 16, 1], fc2.bias [Hkv, 1]), F = 2D + 8G.
  const float* w1 = nullptr;
  const float* b1 = nullptr;
  const float* w2 = nullptr;
  const float* b2 = nullptr;
  // Output phi [n_seq * Hkv, phi_stride] fp32: phi[row, c] for c < n_cand[row]; other entries are not written.
  float* phi = nullptr;
  int64_t phi_stride = 0;
};

/// phi[row, c] = b2[j] + sum_o W2[j, o] * gelu_erf(b1[j, o] + sum_f x[f] * W1[j, f, o]) for every candidate c of
/// every row (j = row % Hkv), with the feature vector of fkv::judge::build_features (F = 2D + 8G):
///   x = [ k[s, j, c, 0:D] | v[s, j, c, 0:D] | MAX_g | MIN_g | SUM_g | SUM16_g | SUM8_g | SUM32_g | CUM_g | DEC_g ]
/// (feature-major statistics: index 2D + f*G + g), MAX/MIN/SUMw reduced over the query axis of probs[s, j, g, :, c]
/// (form a) or read from the precomputed arrays (form b).
/// One block per (row, 32 candidates): the feature rows are staged in shared memory (32 * (F + 1) floats), then 16
/// threads per candidate evaluate the 16 hidden units and reduce the output with warp shuffles.
/// Numerics: fp32 throughout, summation orders differ from ATen (|dphi| ~ 1e-6 relative).
cudaError_t judge_score(const JudgeScoreArgs& args, cudaStream_t stream);

/// Drop sets of one event, per row, from phi [rows, phi_stride] fp32 (candidates [0, n_cand[row]), n_cand device
/// int64 [rows]) and n_drop = D entries to drop per row; output drops [rows, n_drop] int64, the dropped slots sorted
/// ascending (keep set = every other slot, ascending; fkv::judge::keep_from_drops). Exactly choose_drops:
///   order = the candidates by descending phi, ties: the lower slot first;
///   sampled = false (foresightkv_topk): the first D of order;
///   sampled = true (foresightkv): pool = the first P = min(2D, n_cand) of order, s_i = phi[order[i]] (rounded to
///     bf16 when parity), key_i = double(s_i) + gumbel[row, i] (i < P), the D pool entries with the largest key
///     (ties: the lower i) are dropped: Gumbel-top-k = D draws without replacement from softmax(s) (spec §B.6).
/// gumbel [rows, 2 * n_drop] fp64 (device; unused when !sampled, may be null then) must be the CPU policy's noise
/// for the row: judge_gumbel_noise with the row's evict::choice_key(seed, stream, layer, event, head); with it the
/// GPU drops exactly the slots the CPU policy drops on the same phi.
/// A row with n_cand[row] < D gets drops = -1 (the CPU policy throws). phi must be finite (the CPU policy checks;
/// non-finite values give an unspecified drop set). One block per row: a bitonic sort of (phi, slot) keys in shared
/// memory, 8 * pow2ceil(phi_stride) (+ 4 * min(2D, phi_stride) when sampled) bytes; phi_stride up to 16384 on sm_90
/// (227 KB opt-in), 8192 on sm_80 (163 KB); larger gives cudaErrorInvalidValue.
cudaError_t judge_select_drops(const float* phi, int64_t rows, int64_t phi_stride, const int64_t* n_cand,
                               int64_t n_drop, bool sampled, bool parity, const double* gumbel, int64_t* drops,
                               cudaStream_t stream);

/// Host: the Gumbel noise the CPU policy draws for each row (fkv::judge::sample_without_replacement):
///   rng = std::mt19937_64(row_keys[row]);  u_i = ((rng() >> 11) + 0.5) * 2^-53;  noise[row, i] = -log(-log(u_i))
/// for i < 2 * n_drop (the CPU draws only the first min(2D, n_cand); the stream prefix is the same). noise is host
/// memory [rows, 2 * n_drop]; copy it to the device for judge_select_drops.
void judge_gumbel_noise(const uint64_t* row_keys, int64_t rows, int64_t n_drop, double* noise);

}  // namespace fkv_cuda
