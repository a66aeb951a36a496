// fkv-eval fidelity: a budget >= the trace length reproduces the full cache exactly (ratio 1, KL 0) for
// every policy; StreamingLLM's evicted NLL equals the naive reference model with the implied key mask
// (an oracle that shares no code with the runtime, the evictor or the policies); golden rows need labels.
#include <ATen/ATen.h>

#include "support/catch.h"

#include <random>

#include "foresightkv/core/error.h"
#include "foresightkv/harness/fidelity.h"
#include "foresightkv/golden/reference_model.h"
#include "support/model_fixtures.h"

using namespace fkv;

namespace {

trace::TraceSet make_set(int64_t vocab, std::vector<std::pair<int64_t, int64_t>> shapes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  trace::TraceSet set;
  for (auto [T, prompt] : shapes) {
    trace::Trace t;
    t.id = std::to_string(set.traces.size());
    for (int64_t i = 0; i < T; ++i) t.tokens.push_back(static_cast<int32_t>(rng() % vocab));
    t.prompt_len = prompt;
    set.traces.push_back(t);
  }
  return set;
}

}  // namespace

TEST_CASE("fidelity with B >= trace length equals the full cache exactly", "[unit][harness]") {
  test::Bundle b = test::load_bundle("qwen2_g2_bias");
  auto m = model::Transformer::load(b.dir);
  trace::TraceSet set = make_set(m->config().n_vocab, {{50, 7}, {37, 5}, {61, 20}}, 1);
  harness::FidelityOptions o;
  o.policies = {"full", "streamingllm", "h2o", "snapkv", "rkv", "tova", "knorm", "random"};
  o.budgets = {64};
  o.base.window = 8;
  o.batch = 2;  // traces of different lengths share a batch
  auto rep = harness::run_fidelity(*m, set, o);
  REQUIRE(rep.rows.size() == 8);
  for (const auto& r : rep.rows) {
    INFO(r.policy);
    CHECK(r.lm_loss_ratio == 1.0);
    CHECK(r.kl == 0.0);
    CHECK(r.top1_agreement == 1.0);
    CHECK(r.mean_delta_nll == 0.0);
    CHECK(r.tokens == (50 - 7) + (37 - 5) + (61 - 20));
    CHECK(r.eviction_events == 0);
  }
  // and with evictions that bite, numbers move and KL is positive
  o.budgets = {16};
  o.policies = {"streamingllm", "random"};
  rep = harness::run_fidelity(*m, set, o);
  for (const auto& r : rep.rows) {
    CHECK(r.kl > 0);
    CHECK(r.eviction_events > 0);
  }
}

TEST_CASE("fidelity: sharing the full run's prefix changes nothing", "[unit][harness]") {
  auto m = model::Transformer::load(test::load_bundle("qwen3_g4_hd16").dir);
  trace::TraceSet set = make_set(m->config().n_vocab, {{70, 6}, {45, 30}, {12, 5}}, 4);
  harness::FidelityOptions o;
  o.policies = {"h2o", "snapkv", "random"};
  o.budgets = {16, 20};  // 20 is not a multiple of L: the shared prefix stops at 16
  o.base.window = 8;
  o.batch = 3;
  auto a = harness::run_fidelity(*m, set, o);
  o.share_prefix = false;
  auto b = harness::run_fidelity(*m, set, o);
  REQUIRE(a.rows.size() == b.rows.size());
  for (size_t i = 0; i < a.rows.size(); ++i) {
    INFO(a.rows[i].policy << " " << a.rows[i].budget);
    CHECK(a.rows[i].mean_nll == b.rows[i].mean_nll);
    CHECK(a.rows[i].kl == b.rows[i].kl);
    CHECK(a.rows[i].eviction_events == b.rows[i].eviction_events);
    CHECK(a.rows[i].lm_loss_ratio != 1.0);
  }
}

TEST_CASE("fidelity under StreamingLLM equals the reference model with the implied key mask", "[unit][harness]") {
  for (const std::string name : {"llama_g1", "qwen3_g4_hd16"}) {
    DYNAMIC_SECTION(name) {
      test::Bundle b = test::load_bundle(name);
      auto m = model::Transformer::load(b.dir);
      const auto& c = m->config();
      const int64_t T = 61, P = 9, B = 16, L = 8, sinks = 4;
      trace::TraceSet set = make_set(c.n_vocab, {{T, P}}, 5);
      harness::FidelityOptions o;
      o.policies = {"streamingllm"};
      o.budgets = {B};
      o.base.window = L;
      o.base.sink_tokens = sinks;
      auto rep = harness::run_fidelity(*m, set, o);
      // oracle: the cache before chunk [s, s+L) holds, once evictions started, sinks + the newest B - sinks
      at::Tensor mask = at::ones({c.n_layer, c.n_head_kv, T, T}, at::kBool);
      std::vector<char> alive(T, 0);
      for (int64_t s = 0; s < T; s += L) {
        const int64_t e = std::min(T, s + L);
        for (int64_t i = s; i < e; ++i) alive[i] = 1;  // the chunk's own keys (causality added by the reference)
        for (int64_t q = s; q < e; ++q)
          for (int64_t k = 0; k < T; ++k)
            if (!alive[k]) mask.select(2, q).select(2, k).fill_(false);
        int64_t live = std::count(alive.begin(), alive.end(), 1);
        if (live >= B + L) {  // evict to B: sinks + newest B - sinks
          for (int64_t k = 0; k < e; ++k) alive[k] = (k < sinks || k >= e - (B - sinks)) ? 1 : 0;
        }
      }
      golden::ReferenceModel ref = golden::ReferenceModel::load(b.dir);
      at::Tensor ids = at::tensor(std::vector<int64_t>(set.traces[0].tokens.begin(), set.traces[0].tokens.end()),
                                  at::kLong);
      auto mean_nll = [&](const at::Tensor& logits) {
        at::Tensor lp = at::log_softmax(logits.to(at::kDouble), -1).narrow(0, P - 1, T - P);
        at::Tensor y = ids.narrow(0, P, T - P).unsqueeze(1);
        return (-lp.gather(1, y)).mean().item<double>();
      };
      const double ev = mean_nll(ref.forward(ids, mask)), full = mean_nll(ref.forward(ids));
      REQUIRE(rep.rows.size() == 1);
      CHECK(rep.rows[0].mean_nll == Approx(ev).margin(1e-4));
      CHECK(rep.rows[0].mean_nll_full == Approx(full).margin(1e-4));
      CHECK(std::abs(ev - full) > 1e-3);  // the evictions matter
      CHECK(rep.rows[0].eviction_events == (T - B) / L);
    }
  }
}

TEST_CASE("fidelity: golden needs matching labels, bad options are rejected", "[unit][harness]") {
  auto m = model::Transformer::load(test::load_bundle("llama_g1").dir);
  trace::TraceSet set = make_set(m->config().n_vocab, {{40, 5}}, 2);
  harness::FidelityOptions o;
  o.policies = {"golden"};
  o.budgets = {16};
  o.base.window = 8;
  REQUIRE_THROWS_WITH(harness::run_fidelity(*m, set, o), Catch::Contains("fkv-trace label"));
  o.policies = {"h2o"};
  o.base.window = 0;
  REQUIRE_THROWS_AS(harness::run_fidelity(*m, set, o), InvalidArgument);
  o.base.window = 8;
  o.policies = {"nope"};
  REQUIRE_THROWS_AS(harness::run_fidelity(*m, set, o), InvalidArgument);
  set.traces[0].tokens[3] = 100000;
  o.policies = {"h2o"};
  REQUIRE_THROWS_WITH(harness::run_fidelity(*m, set, o), Catch::Contains("vocabulary"));
}
