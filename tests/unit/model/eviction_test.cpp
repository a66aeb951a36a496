// The invariant that carries all eviction work: after removing arbitrary entries per (layer, KV head)
// from the runtime's cache and continuing to decode, logits equal the golden reference forward that
// hides exactly those keys from exactly the later queries of those heads. Exercised on every tiny
// architecture, through the decode kernel (1-token steps) and the GEMM path (multi-token chunks),
// with batches whose sequences evict differently.
#include "support/catch.h"

#include <random>

#include "foresightkv/golden/reference_model.h"
#include "support/model_fixtures.h"

using namespace fkv;

namespace {

struct EvictionRun {
  at::Tensor logits;    // [T, V] runtime logits (one sequence of the batch)
  at::Tensor key_mask;  // [n_layer, Hkv, T, T] what each query could see
};

/// Decode `ids` for n_seq sequences (sequence s uses ids rotated by s) with random removals after
/// each chunk; returns per-sequence logits and the implied reference masks.
std::vector<EvictionRun> run_with_evictions(const model::Transformer& m, const std::vector<int64_t>& ids,
                                            int64_t n_seq, const std::vector<int64_t>& chunks, uint64_t seed) {
  const auto& c = m.config();
  const int64_t T = static_cast<int64_t>(ids.size()), Lc = c.n_layer, H = c.n_head_kv;
  cache::KvCache kv = m.make_cache(n_seq, T);
  std::mt19937_64 rng(seed);
  std::vector<EvictionRun> runs(n_seq);
  std::vector<std::vector<at::Tensor>> parts(n_seq);
  // visible[s][l][h][j]: key at position j still in the cache
  std::vector<at::Tensor> visible(n_seq);
  for (int64_t s = 0; s < n_seq; ++s) {
    runs[s].key_mask = at::ones({Lc, H, T, T}, at::kBool);
    visible[s] = at::ones({Lc, H, T}, at::kBool);
  }
  int64_t p = 0;
  for (int64_t n : chunks) {
    REQUIRE(p + n <= T);
    std::vector<int64_t> flat;
    for (int64_t s = 0; s < n_seq; ++s)
      for (int64_t i = 0; i < n; ++i) flat.push_back(ids[(p + i + s) % T]);
    at::Tensor idt = at::tensor(flat, at::kLong).view({n_seq, n});
    at::Tensor pos = at::arange(p, p + n, at::kLong).view({1, n}).expand({n_seq, n}).contiguous();
    at::Tensor lg = m.forward(idt, pos, kv, model::Logits::All);
    for (int64_t s = 0; s < n_seq; ++s) {
      parts[s].push_back(lg[s]);
      // queries p..p+n-1 saw the keys visible at that time (causality is added by the reference)
      for (int64_t i = p; i < p + n; ++i) runs[s].key_mask.select(2, i).copy_(visible[s]);
    }
    p += n;
    // Random evictions: each (seq, layer, head) removes 0..3 of its entries.
    for (int64_t s = 0; s < n_seq; ++s)
      for (int64_t l = 0; l < Lc; ++l)
        for (int64_t h = 0; h < H; ++h) {
          const int64_t len = kv.length(s, l, h);
          const int64_t drop = std::min<int64_t>(len - 1, static_cast<int64_t>(rng() % 4));
          std::vector<int64_t> slots(len);
          for (int64_t i = 0; i < len; ++i) slots[i] = i;
          std::shuffle(slots.begin(), slots.end(), rng);
          slots.resize(std::max<int64_t>(drop, 0));
          for (int64_t slot : slots) visible[s][l][h][kv.pos(l)[s][h][slot].item<int64_t>()] = false;
          kv.remove(s, l, h, slots);
        }
  }
  REQUIRE(p == T);
  for (int64_t s = 0; s < n_seq; ++s) runs[s].logits = at::cat(parts[s], 0);
  return runs;
}

}  // namespace

TEST_CASE("eviction: runtime after removals equals reference with masked keys", "[unit][model][eviction]") {
  for (const auto& name : test::bundle_names()) {
    test::Bundle b = test::load_bundle(name);
    auto m = model::Transformer::load(b.dir);
    auto ref = golden::ReferenceModel::load(b.dir);
    const int64_t T = static_cast<int64_t>(b.ids.size());
    // 1-token decode steps (kernel path) and multi-token chunks (GEMM path), mixed.
    for (const auto& chunks : std::vector<std::vector<int64_t>>{
             {6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {4, 5, 6, 5, 4}}) {
      std::vector<int64_t> cs;
      int64_t sum = 0;
      for (int64_t x : chunks) {
        if (sum >= T) break;
        cs.push_back(std::min(x, T - sum));
        sum += cs.back();
      }
      if (sum < T) cs.push_back(T - sum);
      auto runs = run_with_evictions(*m, b.ids, 2, cs, 7);
      for (int64_t s = 0; s < 2; ++s) {
        std::vector<int64_t> ids_s(T);
        for (int64_t i = 0; i < T; ++i) ids_s[i] = b.ids[(i + s) % T];
        at::Tensor want = ref.forward(at::tensor(ids_s, at::kLong), runs[s].key_mask);
        const double d = test::max_abs_diff(runs[s].logits, want);
        INFO("bundle " << name << " seq " << s << " chunks " << cs.size() << " max |dlogit| = " << d);
        CHECK(d <= 1e-4);
      }
      // The evictions must matter: the masked reference differs from the unmasked one.
      at::Tensor full = ref.forward(at::tensor(b.ids, at::kLong));
      CHECK(test::max_abs_diff(runs[0].logits, full) > 1e-3);
    }
  }
}

namespace {
struct ProbTap : model::ForwardTaps {
  int64_t layer;
  at::Tensor probs, q, k;
  bool wants_attention(int64_t l) const override { return l == layer; }
  void on_attention(int64_t l, const at::Tensor& p) override { probs = p.clone(); }
  void on_qkv(int64_t l, const at::Tensor& q_, const at::Tensor& k_, const at::Tensor&) override {
    if (l == layer) {
      q = q_.clone();
      k = k_.clone();
    }
  }
};
}  // namespace

TEST_CASE("taps: attention probabilities over cache slots, and taps do not change results", "[unit][model]") {
  test::Bundle b = test::load_bundle("qwen3_g4_hd16");
  auto m = model::Transformer::load(b.dir);
  const auto& c = m->config();
  const int64_t T = static_cast<int64_t>(b.ids.size());
  cache::KvCache kv = m->make_cache(1, T);
  at::Tensor ids = at::tensor(b.ids, at::kLong).view({1, T});
  at::Tensor pos = at::arange(T, at::kLong).view({1, T});
  at::Tensor head = ids.narrow(1, 0, 10), tail_id = ids.narrow(1, 10, 1);
  m->forward(head, pos.narrow(1, 0, 10), kv, model::Logits::None);
  kv.remove(0, 1, 0, {2, 5});
  ProbTap tap;
  tap.layer = 1;
  at::Tensor with_tap = m->forward(tail_id, pos.narrow(1, 10, 1), kv, model::Logits::Last, &tap);
  REQUIRE(tap.probs.defined());
  REQUIRE(tap.probs.sizes() == at::IntArrayRef({1, c.n_head_q, 1, 11}));
  REQUIRE(tap.q.sizes() == at::IntArrayRef({1, c.n_head_q, 1, c.head_dim}));
  REQUIRE(tap.k.sizes() == at::IntArrayRef({1, c.n_head_kv, 1, c.head_dim}));
  // rows sum to 1; KV head 0 has 9 live slots, so its query heads have zero mass on slots 9, 10
  CHECK(test::max_abs_diff(tap.probs.sum(-1), at::ones({1, c.n_head_q, 1})) <= 1e-5);
  const int64_t G = c.group_size();
  for (int64_t h = 0; h < G; ++h) CHECK(tap.probs[0][h][0].narrow(0, 9, 2).abs().sum().item<float>() == 0.f);
  // Same step without the tap (decode kernel instead of the GEMM path) gives the same logits.
  cache::KvCache kv2 = m->make_cache(1, T);
  m->forward(head, pos.narrow(1, 0, 10), kv2, model::Logits::None);
  kv2.remove(0, 1, 0, {2, 5});
  at::Tensor without = m->forward(tail_id, pos.narrow(1, 10, 1), kv2, model::Logits::Last);
  CHECK(test::max_abs_diff(with_tap, without) <= 1e-5);
}
