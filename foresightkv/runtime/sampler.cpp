// Sampler: HF-order logit filtering and counter-based (Philox4x32-10) sampling (see sampler.h).
// Every cut (top-k, top-p, min-p) keeps a prefix of the candidates ordered by (probability desc, id asc), so
// the candidates are sorted lazily: only as far as the cuts and the sampled position need. The scans over the
// logits (validity, max, k-th largest, candidate filter) go block by block: a branch-free test the compiler
// vectorizes ("does this block hold a value that matters?") skips almost every block, and the few that pass
// run the plain per-element code, so the results are those of the plain loops.
#include "foresightkv/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "foresightkv/core/error.h"

namespace fkv::runtime {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();  // a masked logit
constexpr float kPosInf = std::numeric_limits<float>::infinity();
constexpr int64_t kScanBlock = 64;  // logits per block in the skipping scans

// Branch-free or-reductions over x[0, m) (vectorized by the compiler; no early exit on purpose).
inline bool any_nan_or_pos_inf(const float* x, int64_t m) {
  int bad = 0;
  for (int64_t j = 0; j < m; ++j) bad |= int(x[j] != x[j]) | int(x[j] == kPosInf);
  return bad != 0;
}
inline bool any_above(const float* x, int64_t m, float t) {
  int hit = 0;
  for (int64_t j = 0; j < m; ++j) hit |= int(x[j] > t);
  return hit != 0;
}
inline bool any_at_least(const float* x, int64_t m, float t) {
  int hit = 0;
  for (int64_t j = 0; j < m; ++j) hit |= int(x[j] >= t);
  return hit != 0;
}

// The skipping scan: for each kScanBlock block [b, e) of [0, n) in order, body(i) for every i in it when
// visit(b, e) says the block can matter (asked when the block is reached, so it may read state body updates).
template <class Visit, class Body>
void scan_blocks(int64_t n, const Visit& visit, const Body& body) {
  for (int64_t b = 0; b < n; b += kScanBlock) {
    const int64_t e = std::min(n, b + kScanBlock);
    if (!visit(b, e)) continue;
    for (int64_t i = b; i < e; ++i) body(i);
  }
}

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

struct Candidate {
  double w;  // unnormalized probability exp(x - max x)
  int32_t id;
};

// Sampling order: higher probability first, lower id first on ties (a strict total order).
inline bool before(const Candidate& a, const Candidate& b) { return a.w > b.w || (a.w == b.w && a.id < b.id); }

// The filtered candidates, sorted on demand.
class Candidates {
 public:
  std::vector<Candidate> c;
  double z = 0.0;  // sum of w over all candidates, in id order
  size_t sorted = 0;

  // Makes c[0..k) the k first candidates in sampling order.
  void ensure_sorted(size_t k) {
    k = std::min(k, c.size());
    if (k <= sorted) return;
    const size_t want = std::max(k, std::min(c.size(), std::max<size_t>(64, 4 * sorted)));
    std::partial_sort(c.begin() + static_cast<std::ptrdiff_t>(sorted), c.begin() + static_cast<std::ptrdiff_t>(want),
                      c.end(), before);
    sorted = want;
  }
};

}  // namespace

void SamplingParams::validate() const {
  FKV_CHECK_ARG(std::isfinite(temperature) && temperature >= 0.0f,
                "sampling temperature must be finite and >= 0 (0 = greedy), got {}", temperature);
  FKV_CHECK_ARG(top_k >= 0, "sampling top_k must be >= 0 (0 = disabled), got {}", top_k);
  FKV_CHECK_ARG(top_p > 0.0f && top_p <= 1.0f, "sampling top_p must be in (0, 1] (1 = disabled), got {}", top_p);
  FKV_CHECK_ARG(min_p >= 0.0f && min_p <= 1.0f, "sampling min_p must be in [0, 1] (0 = disabled), got {}", min_p);
}

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kPhiloxW0;
      key[1] += kPhiloxW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * ctr[0];
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<uint32_t>(p0)};
  }
  return ctr;
}

double philox_uniform(uint64_t seed, uint64_t sequence, uint64_t step) {
  const auto r = philox4x32_10({static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                                static_cast<uint32_t>(sequence), static_cast<uint32_t>(sequence >> 32)},
                               {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  const uint64_t bits = (static_cast<uint64_t>(r[0]) << 21) ^ (static_cast<uint64_t>(r[1]) >> 11);  // 53 bits
  return static_cast<double>(bits) * 0x1.0p-53;
}

Sampler::Sampler(SamplingParams params, int64_t tokenizer_vocab_size)
    : params_(params), tokenizer_vocab_size_(tokenizer_vocab_size) {
  params_.validate();
}

int64_t Sampler::valid_count(std::span<const float> logits) const {
  FKV_CHECK_ARG(!logits.empty(), "sampler: empty logits row");
  const int64_t n = static_cast<int64_t>(logits.size());
  const int64_t valid = tokenizer_vocab_size_ >= 0 ? std::min(n, tokenizer_vocab_size_) : n;
  if (!any_nan_or_pos_inf(logits.data(), n)) return valid;
  for (int64_t i = 0; i < n; ++i)  // name the first offender
    FKV_CHECK_ARG(!std::isnan(logits[i]) && logits[i] != kPosInf,
                  "sampler: logit {} of token {} is not a number or +inf; the model produced invalid logits", logits[i],
                  i);
  return valid;
}

int32_t Sampler::argmax(std::span<const float> logits, int64_t n) const {
  int64_t best = -1;
  scan_blocks(
      n, [&](int64_t b, int64_t e) { return best < 0 || any_above(logits.data() + b, e - b, logits[best]); },
      [&](int64_t i) {
        if (logits[i] != kNegInf && (best < 0 || logits[i] > logits[best])) best = i;
      });
  FKV_CHECK_ARG(best >= 0, "sampler: every logit among the {} valid ids is -inf; nothing can be sampled", n);
  return static_cast<int32_t>(best);
}

namespace {

// The k-th largest of the finite (not -inf) logits, or -inf when there are at most k of them. A size-k
// min-heap in one pass for small k (the usual top-k of 20-50 over a 151k vocabulary), a selection on a
// copy otherwise.
float kth_largest(std::span<const float> logits, int64_t n, int64_t k) {
  if (k <= 256) {
    std::vector<float> heap;  // min-heap of the k largest seen so far
    heap.reserve(static_cast<size_t>(k));
    const auto greater = std::greater<float>();
    scan_blocks(
        n,
        [&](int64_t b, int64_t e) {
          return static_cast<int64_t>(heap.size()) < k || any_above(logits.data() + b, e - b, heap.front());
        },
        [&](int64_t i) {
          const float v = logits[i];
          if (v == kNegInf) return;
          if (static_cast<int64_t>(heap.size()) < k) {
            heap.push_back(v);
            std::push_heap(heap.begin(), heap.end(), greater);
          } else if (v > heap.front()) {
            std::pop_heap(heap.begin(), heap.end(), greater);
            heap.back() = v;
            std::push_heap(heap.begin(), heap.end(), greater);
          }
        });
    return static_cast<int64_t>(heap.size()) < k ? kNegInf : heap.front();
  }
  std::vector<float> tmp;
  tmp.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    if (logits[i] != kNegInf) tmp.push_back(logits[i]);
  if (static_cast<int64_t>(tmp.size()) <= k) return kNegInf;
  std::nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), std::greater<float>());
  return tmp[static_cast<size_t>(k - 1)];
}

// Top-k + softmax weights (unnormalized) of the valid, finite logits: candidate i has x = logit * (1 / T)
// in double and w = exp(x - max x); top-k keeps every x >= the k-th largest x (HF keeps ties). x is a
// monotone image of the float logit, so the k-th largest x and max x are the images of the k-th largest
// and largest logits, which are found on the floats without building x.
Candidates prepare(std::span<const float> logits, int64_t n, const SamplingParams& p) {
  Candidates cand;
  const double inv_t = 1.0 / static_cast<double>(p.temperature);
  float fmax = kNegInf;
  scan_blocks(
      n, [&](int64_t b, int64_t e) { return any_above(logits.data() + b, e - b, fmax); },
      [&](int64_t i) { fmax = std::max(fmax, logits[i]); });
  FKV_CHECK_ARG(fmax != kNegInf, "sampler: every logit among the {} valid ids is -inf; nothing can be sampled", n);
  float kth = kNegInf;
  double threshold = -std::numeric_limits<double>::infinity();
  if (p.top_k > 0) {
    kth = kth_largest(logits, n, p.top_k);
    if (kth != kNegInf) threshold = static_cast<double>(kth) * inv_t;
  }
  const double mx = static_cast<double>(fmax) * inv_t;
  cand.c.reserve(p.top_k > 0 ? static_cast<size_t>(p.top_k) + 8 : static_cast<size_t>(n));
  // float -> double -> * (1 / T) is strictly increasing on floats (distinct floats stay distinct in double,
  // and the product's rounding cannot merge values that far apart), so a logit below kth maps below the
  // threshold: a block without a logit >= kth holds no candidate.
  scan_blocks(
      n, [&](int64_t b, int64_t e) { return kth == kNegInf || any_at_least(logits.data() + b, e - b, kth); },
      [&](int64_t i) {
        if (logits[i] == kNegInf) return;
        const double v = static_cast<double>(logits[i]) * inv_t;
        if (v < threshold) return;
        const double w = std::exp(v - mx);
        cand.c.push_back({w, static_cast<int32_t>(i)});
        cand.z += w;
      });
  return cand;
}

// Applies top-p and min-p (both prefix cuts in sampling order). Returns the kept prefix length and its total
// weight. With `need_all`, or when a cut is active, the walk continues until the cut is found.
struct Cut {
  size_t length;
  double total;
};

Cut find_cut(Candidates& cand, const SamplingParams& p) {
  const size_t n = cand.c.size();
  const bool top_p_on = p.top_p < 1.0f;
  const bool min_p_on = p.min_p > 0.0f;
  if (!top_p_on && !min_p_on) return {n, cand.z};
  cand.ensure_sorted(1);
  const double min_w = static_cast<double>(p.min_p) * cand.c[0].w;
  const double top_w = static_cast<double>(p.top_p) * cand.z;
  double cum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    cand.ensure_sorted(i + 1);
    const double w = cand.c[i].w;
    if (min_p_on && i > 0 && w < min_w) return {i, cum};
    cum += w;
    if (top_p_on && cum >= top_w) return {i + 1, cum};
  }
  return {n, cum};
}

}  // namespace

int32_t Sampler::sample(std::span<const float> logits, uint64_t seed, uint64_t sequence, uint64_t step) const {
  const int64_t n = valid_count(logits);
  if (params_.is_greedy()) return argmax(logits, n);
  Candidates cand = prepare(logits, n, params_);
  const Cut cut = find_cut(cand, params_);
  const double target = philox_uniform(seed, sequence, step) * cut.total;
  double cum = 0.0;
  for (size_t i = 0; i < cut.length; ++i) {
    cand.ensure_sorted(i + 1);
    cum += cand.c[i].w;
    if (cum > target) return cand.c[i].id;
  }
  cand.ensure_sorted(cut.length);
  return cand.c[cut.length - 1].id;  // rounding: u * total landed on the very end
}

std::vector<std::pair<int32_t, double>> Sampler::distribution(std::span<const float> logits) const {
  const int64_t n = valid_count(logits);
  if (params_.is_greedy()) return {{argmax(logits, n), 1.0}};
  Candidates cand = prepare(logits, n, params_);
  const Cut cut = find_cut(cand, params_);
  cand.ensure_sorted(cut.length);
  std::vector<std::pair<int32_t, double>> out;
  out.reserve(cut.length);
  for (size_t i = 0; i < cut.length; ++i) out.emplace_back(cand.c[i].id, cand.c[i].w / cut.total);
  return out;
}

}  // namespace fkv::runtime
