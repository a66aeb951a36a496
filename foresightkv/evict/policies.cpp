// Heuristic baselines and the golden replay (foresightkv-spec.md §F, docs/eviction.md). Every policy works
// on all KV heads of one (sequence, layer) at once with ATen ops on [Hkv, ...] tensors; heads decide
// independently. Candidates are slots [0, N - protect); the newest `protect` slots are always kept and
// placed last.
#include <ATen/ATen.h>

#include <cmath>
#include <map>
#include <mutex>
#include <random>

#include "foresightkv/core/error.h"
#include "foresightkv/evict/policy.h"

namespace fkv::evict {
namespace {

int64_t n_candidates(const LayerView& v) { return v.n - v.protect; }
int64_t n_select(const LayerView& v) { return v.budget - v.protect; }

// Candidate picks [Hkv, n_sel] (slots < C) + the protected tail. `positional`: sort picks ascending
// (cache keeps positional order); otherwise keep the given (score) order, as the official code does.
at::Tensor finish(const LayerView& v, at::Tensor picks, bool positional) {
  const int64_t H = v.k.size(0), C = n_candidates(v);
  if (positional) picks = std::get<0>(picks.sort(-1));
  at::Tensor tail = at::arange(C, v.n, at::kLong).unsqueeze(0).expand({H, v.protect});
  return at::cat({picks.to(at::kLong), tail}, 1).contiguous();
}

// The n_select highest-scoring candidates, in descending score order. Ties (max-pooling creates plateaus)
// go to the older slot: a stable descending sort, so the result is deterministic and testable.
at::Tensor top_candidates(const LayerView& v, const at::Tensor& score /*[H, >= C]*/) {
  at::Tensor order = std::get<1>(score.narrow(1, 0, n_candidates(v)).sort(/*stable=*/true, -1, /*descending=*/true));
  return order.narrow(1, 0, n_select(v));
}

void require_stats(const LayerView& v, const char* who) {
  FKV_CHECK(v.logits.defined() && v.probs.defined() && v.probs.size(2) > 0,
            "{}: no observed queries at this eviction event (query_window must be >= 1)", who);
}

class Streaming final : public Policy {
 public:
  explicit Streaming(int64_t sinks) : sinks_(sinks) {}
  std::string name() const override { return "streamingllm"; }
  at::Tensor select(const LayerView& v) override {
    const int64_t H = v.k.size(0), s = std::min(sinks_, v.budget);
    at::Tensor row = at::cat({at::arange(0, s, at::kLong), at::arange(v.n - (v.budget - s), v.n, at::kLong)});
    return row.unsqueeze(0).expand({H, v.budget}).contiguous();
  }

 private:
  int64_t sinks_;
};

// H2O (spec §F.3): heavy hitters by the cumulative attention they received, averaged over the group.
class H2O final : public Policy {
 public:
  explicit H2O(bool parity) : parity_(parity) {}
  std::string name() const override { return "h2o"; }
  bool needs_attention() const override { return true; }
  bool needs_accumulators() const override { return true; }
  at::Tensor select(const LayerView& v) override {
    return finish(v, top_candidates(v, v.cum.mean(1)), !parity_);
  }

 private:
  bool parity_;
};

// SnapKV attention term over the candidates [H, C] (pooled). Parity (spec §F.1): max over the group's
// logits, softmax over the candidate keys only, mean over queries, bf16, max-pool. Intended: the shared
// per-head softmax over the whole cache, mean over the group and the queries, max-pool.
at::Tensor snap_scores(const LayerView& v, bool parity, int64_t kernel) {
  const int64_t C = n_candidates(v);
  at::Tensor s;
  if (parity) {
    at::Tensor lg = std::get<0>(v.logits.narrow(3, 0, C).max(1));  // [H, nq, C]
    s = at::softmax(lg, -1).mean(1).to(at::kBFloat16).to(at::kFloat);
  } else {
    s = v.probs.narrow(3, 0, C).mean({1, 2});
  }
  return max_pool_last(s, kernel);
}

class SnapKV final : public Policy {
 public:
  SnapKV(bool parity, int64_t kernel) : parity_(parity), kernel_(kernel) {}
  std::string name() const override { return "snapkv"; }
  bool needs_attention() const override { return true; }
  at::Tensor select(const LayerView& v) override {
    require_stats(v, "snapkv");
    return finish(v, top_candidates(v, snap_scores(v, parity_, kernel_)), !parity_);
  }

 private:
  bool parity_;
  int64_t kernel_;
};

// R-KV (spec §F.2): lambda * attention - (1 - lambda) * redundancy.
class RKV final : public Policy {
 public:
  RKV(bool parity, int64_t kernel, double lambda, double thr)
      : parity_(parity), kernel_(kernel), lambda_(lambda), thr_(thr) {}
  std::string name() const override { return "rkv"; }
  bool needs_attention() const override { return true; }
  at::Tensor select(const LayerView& v) override {
    require_stats(v, "rkv");
    const int64_t C = n_candidates(v);
    at::Tensor a = snap_scores(v, parity_, kernel_);  // [H, C]
    // Official code: every batch row uses row 0's keys for the redundancy (a bug kept in parity mode).
    const at::Tensor& keys = (parity_ && v.row0_k.defined() && v.row0_k.size(1) == v.n) ? v.row0_k : v.k;
    at::Tensor red = redundancy(keys, thr_).narrow(1, 0, C);
    at::Tensor score = lambda_ * a - (1.0 - lambda_) * red;
    return finish(v, top_candidates(v, score), !parity_);
  }

  static at::Tensor redundancy(const at::Tensor& k /*[H, N, D]*/, double thr) {
    const int64_t N = k.size(1);
    at::Tensor kn = k / (k.norm(2, -1, true) + 1e-8);
    at::Tensor S = at::matmul(kn, kn.transpose(1, 2));  // [H, N, N]
    at::Tensor eye = at::eye(N, at::kBool).unsqueeze(0);
    S.masked_fill_(eye, 0.0);
    // Per row i: the largest column c with S[i, c] > thr (0 when none) is not penalised ("last duplicate").
    at::Tensor cols = at::arange(N, at::kLong).view({1, 1, N}).expand_as(S);
    at::Tensor last = at::where(S > thr, cols, at::zeros_like(cols)).amax(-1, true);  // [H, N, 1]
    S.scatter_(-1, last, 0.0);
    return at::softmax(S.mean(1), -1);  // r_c = mean_i S[i, c], softmax over all N
  }

 private:
  bool parity_;
  int64_t kernel_;
  double lambda_, thr_;
};

// TOVA (Oren et al. 2024): keep the entries the newest query attends to most (group mean).
class Tova final : public Policy {
 public:
  std::string name() const override { return "tova"; }
  bool needs_attention() const override { return true; }
  at::Tensor select(const LayerView& v) override {
    require_stats(v, "tova");
    const int64_t nq = v.probs.size(2);
    at::Tensor last = v.probs.select(2, nq - 1).mean(1);  // [H, N]
    return finish(v, top_candidates(v, last), true);
  }
};

// K-norm (Devoto et al. 2024): keep the keys with the smallest L2 norm.
class KNorm final : public Policy {
 public:
  std::string name() const override { return "knorm"; }
  at::Tensor select(const LayerView& v) override {
    return finish(v, top_candidates(v, -v.k.norm(2, -1)), true);
  }
};

// Uniform random subset of the candidates; seeded by (seed, sequence stream, layer, event, head) so the result
// does not depend on batch composition, slot or thread schedule. Portable: mt19937_64 output + our own Fisher-Yates.
class Random final : public Policy {
 public:
  explicit Random(uint64_t seed) : seed_(seed) {}
  std::string name() const override { return "random"; }
  at::Tensor select(const LayerView& v) override {
    const int64_t H = v.k.size(0), C = n_candidates(v), m = n_select(v);
    at::Tensor picks = at::empty({H, m}, at::kLong);
    std::vector<int64_t> idx(static_cast<size_t>(C));
    for (int64_t h = 0; h < H; ++h) {
      std::mt19937_64 rng(choice_key(seed_, v.stream, v.layer, v.event, h));
      for (int64_t i = 0; i < C; ++i) idx[i] = i;
      for (int64_t i = 0; i < m; ++i) {  // partial Fisher-Yates
        const int64_t j = i + static_cast<int64_t>(rng() % static_cast<uint64_t>(C - i));
        std::swap(idx[i], idx[j]);
      }
      std::memcpy(picks[h].data_ptr<int64_t>(), idx.data(), sizeof(int64_t) * m);
    }
    return finish(v, picks, true);
  }

 private:
  uint64_t seed_;
};

}  // namespace

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t choice_key(uint64_t seed, uint64_t stream, int64_t layer, int64_t event, int64_t head) {
  uint64_t key = splitmix64(seed);
  for (uint64_t x : {stream, static_cast<uint64_t>(layer), static_cast<uint64_t>(event), static_cast<uint64_t>(head)})
    key = splitmix64(key ^ x);
  return key;
}

at::Tensor max_pool_last(const at::Tensor& x, int64_t kernel) {
  if (kernel <= 1) return x;
  const int64_t pad = kernel / 2;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = pad;
  at::Tensor fill = at::full(shape, -std::numeric_limits<float>::infinity(), x.options());
  at::Tensor padded = at::cat({fill, x, fill}, -1);
  return padded.unfold(-1, kernel, 1).amax(-1);
}

void GoldenPolicy::set_labels(int64_t seq, const at::Tensor& drops) {
  FKV_CHECK_ARG(seq >= 0, "golden: bad sequence index {}", seq);
  FKV_CHECK_ARG(drops.dim() == 4, "golden: labels must be drop slots [layers, steps, Hkv, W], got {} dims",
                drops.dim());
  if (static_cast<int64_t>(labels_.size()) <= seq) labels_.resize(seq + 1);
  labels_[seq] = drops.to(at::kLong).contiguous();
}

at::Tensor GoldenPolicy::select(const LayerView& v) {
  const int64_t H = v.k.size(0);
  FKV_CHECK(v.seq < static_cast<int64_t>(labels_.size()) && labels_[v.seq].defined(),
            "golden: no labels for sequence {} (the golden policy replays trace labels; teacher-forced only)", v.seq);
  const at::Tensor& L = labels_[v.seq];
  FKV_CHECK(v.layer < L.size(0) && L.size(2) == H,
            "golden: labels cover {} layers x {} KV heads; the model has layer {} with {} KV heads (wrong model?)",
            L.size(0), L.size(2), v.layer, H);
  const int64_t W = L.size(3);
  FKV_CHECK(v.n - v.budget == W && v.protect == W,
            "golden: labels drop W={} per step but this event drops {} with protect {}: the fidelity budget/window "
            "must equal the labels' B/W",
            W, v.n - v.budget, v.protect);
  if (v.event >= L.size(1)) {
    // Past the oracle's last step nothing follows in the trace (spec §C.2 item 7); keep the newest B.
    return at::arange(v.n - v.budget, v.n, at::kLong).unsqueeze(0).expand({H, v.budget}).contiguous();
  }
  at::Tensor drop = L[v.layer][v.event];  // [H, W] slots among the first B
  at::Tensor keep_mask = at::ones({H, v.n}, at::kBool);
  FKV_CHECK(drop.min().item<int64_t>() >= 0 && drop.max().item<int64_t>() < v.budget,
            "golden: label slot outside the {} candidates at layer {} step {}", v.budget, v.layer, v.event);
  keep_mask.scatter_(1, drop, false);
  FKV_CHECK(keep_mask.sum().item<int64_t>() == H * v.budget, "golden: duplicate drop slots at layer {} step {}",
            v.layer, v.event);
  at::Tensor idx = at::arange(v.n, at::kLong).unsqueeze(0).expand({H, v.n});
  return idx.masked_select(keep_mask).view({H, v.budget}).contiguous();
}

namespace {
std::map<std::string, PolicyFactory>& registry() {
  static std::map<std::string, PolicyFactory> r;
  return r;
}
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace

void register_policy(const std::string& name, PolicyFactory factory) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[name] = std::move(factory);
}

std::unique_ptr<Policy> make_policy(const EvictionConfig& c) {
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(c.policy);
    if (it != registry().end()) return it->second(c);
  }
  if (is_learned_policy(c.policy))
    throw InvalidArgument(fmt::format("policy '{}' is the learned judge (fkv_judge library): call "
                                      "fkv::judge::register_policies() before building an Evictor",
                                      c.policy));
  const bool parity = c.variant == Variant::Parity;
  if (c.policy == "streamingllm") return std::make_unique<Streaming>(c.sink_tokens);
  if (c.policy == "h2o") return std::make_unique<H2O>(parity);
  if (c.policy == "snapkv") return std::make_unique<SnapKV>(parity, c.pool_kernel);
  if (c.policy == "rkv") return std::make_unique<RKV>(parity, c.pool_kernel, c.mix_lambda, c.similarity_threshold);
  if (c.policy == "tova") return std::make_unique<Tova>();
  if (c.policy == "knorm") return std::make_unique<KNorm>();
  if (c.policy == "random") return std::make_unique<Random>(c.seed);
  if (c.policy == "golden") return std::make_unique<GoldenPolicy>();
  throw InvalidArgument(fmt::format(
      "no eviction policy object for '{}' (valid: streamingllm, h2o, snapkv, rkv, tova, knorm, random, golden; "
      "'full' never evicts)",
      c.policy));
}

}  // namespace fkv::evict
