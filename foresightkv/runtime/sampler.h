// Token sampler on float logits (pure C++, depends on fkv core only), in HF transformers' order
// (engineering.md §5):
//   1. mask vocabulary padding: ids >= tokenizer_vocab_size (model embedding rows past the tokenizer) get -inf
//   2. divide by temperature            3. top-k: keep logits >= the k-th largest (ties at the edge kept, as HF)
//   4. softmax                           5. top-p: keep the smallest prefix of the descending-probability order
//                                           whose cumulative probability is >= top_p (always at least one token)
//   6. min-p: drop tokens with p < min_p * p_max      7. renormalize and sample
// temperature == 0 (or SamplingParams::greedy()) is argmax: the lowest id among the maximal logits, like
// torch.argmax. Ties in the probability order are broken by lower id first.
//
// Seeding (reproducible regardless of batch composition): the uniform variate for a draw is Philox4x32-10
// with key = (seed low 32 bits, seed high 32 bits) and counter = (step low, step high, sequence low,
// sequence high); the first two output words form a 53-bit double u in [0, 1), and the token is the first one
// (in the order above) whose cumulative renormalized probability exceeds u. `sequence` is the caller's
// stable index of the sequence (e.g. sample i of a problem), `step` the index of the generated token within
// that sequence. The same (seed, sequence, step, logits) always gives the same token, whichever other
// sequences share the batch or in which order they are processed; no state is kept between calls.
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace fkv::runtime {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = disabled
  float top_p = 1.0f;        // 1 = disabled
  float min_p = 0.0f;        // 0 = disabled

  static SamplingParams greedy() { return {0.0f, 0, 1.0f, 0.0f}; }
  bool is_greedy() const { return temperature == 0.0f; }
  /// Throws InvalidArgument for temperature < 0 or non-finite, top_k < 0, top_p outside (0, 1], min_p outside [0, 1].
  void validate() const;
};

/// Philox4x32-10 block function (Salmon et al., SC'11; Random123's philox4x32 with 10 rounds).
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

/// The uniform variate in [0, 1) used for (seed, sequence, step); see the header comment.
double philox_uniform(uint64_t seed, uint64_t sequence, uint64_t step);

class Sampler {
 public:
  /// `tokenizer_vocab_size`: ids at or above it are masked (pass -1 to mask nothing).
  explicit Sampler(SamplingParams params, int64_t tokenizer_vocab_size = -1);

  /// One token from `logits` (one row, length = model vocabulary). Throws InvalidArgument on NaN logits,
  /// an empty row, or when masking leaves no finite logit.
  int32_t sample(std::span<const float> logits, uint64_t seed, uint64_t sequence, uint64_t step) const;

  /// The distribution sample() draws from: (id, probability) in sampling order, probabilities summing to 1.
  /// Greedy params give the single argmax with probability 1.
  std::vector<std::pair<int32_t, double>> distribution(std::span<const float> logits) const;

  const SamplingParams& params() const { return params_; }

 private:
  int32_t argmax(std::span<const float> logits, int64_t n) const;
  int64_t valid_count(std::span<const float> logits) const;

  SamplingParams params_;
  int64_t tokenizer_vocab_size_;
};

}  // namespace fkv::runtime
