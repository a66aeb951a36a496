// fkv-train sft internals: the pairwise hinge and its gradient against naive O(n^2) loops, ranking accuracy, the
// lr schedule and Adam against hand computations, the feature store against features recorded live along the
// golden trajectory, bit-reproducible SFT steps and resume after a simulated kill.
#include <ATen/ATen.h>

#include "support/catch.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/harness/fidelity.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/judge/features.h"
#include "foresightkv/judge/judge.h"
#include "foresightkv/judge/policy.h"
#include "foresightkv/trace/labeler.h"
#include "foresightkv/train/feature_store.h"
#include "foresightkv/train/sft.h"
#include "support/model_fixtures.h"
#include "support/traces.h"

using namespace fkv;
namespace fs = std::filesystem;

namespace {

std::string tmp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("fkv_train_test_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

// A labelled trace file of the tiny qwen2 model (G = 2) for B = 16, W = 8.
std::string labelled_traces(const std::string& dir, int n) {
  const std::string path = dir + "/traces.safetensors";
  if (file_exists(path)) return path;
  auto m = model::Transformer::load(test::load_bundle("qwen2_g2_bias").dir);
  trace::TraceSet set;
  set.header = json{{"model", {{"sha256", ""}}}};
  trace::LabelOptions lo;
  lo.budgets = {16};
  lo.window = 8;
  for (int i = 0; i < n; ++i) {
    trace::Trace t = test::random_trace(48 + 9 * i, 4, m->config().n_vocab, 100 + i);
    trace::label_trace(*m, t, lo);
    set.traces.push_back(std::move(t));
  }
  trace::write_trace_set(path, set);
  return path;
}

}  // namespace

TEST_CASE("pairwise hinge and its gradient equal naive pairwise loops", "[unit][train]") {
  at::manual_seed(3);
  at::Tensor phi = at::randn({5, 9}, at::kDouble) * 0.02;
  at::Tensor tgt = at::randn({5, 9}, at::kDouble);
  tgt[1][3] = tgt[1][4];                  // a tie: excluded from the pairs
  tgt[2].fill_(0.5);                      // a row without any ordered pair: excluded from the mean over rows
  const double m = 0.01;
  at::Tensor p = phi.clone().set_requires_grad(true);
  at::Tensor loss = train::pairwise_hinge(p, tgt, m);
  CHECK(loss.item<double>() == Approx(train::pairwise_hinge_reference(phi, tgt, m)).epsilon(1e-12));
  loss.backward();
  // naive gradient: d/dphi_i of mean_rows mean_pairs max(0, m - (phi_i - phi_k))
  at::Tensor g = at::zeros_like(phi);
  int64_t rows = 0;
  for (int64_t r = 0; r < 5; ++r) {
    int64_t c = 0;
    for (int64_t i = 0; i < 9; ++i)
      for (int64_t k = 0; k < 9; ++k) c += tgt[r][i].item<double>() > tgt[r][k].item<double>();
    rows += c > 0;
  }
  for (int64_t r = 0; r < 5; ++r) {
    int64_t c = 0;
    for (int64_t i = 0; i < 9; ++i)
      for (int64_t k = 0; k < 9; ++k) c += tgt[r][i].item<double>() > tgt[r][k].item<double>();
    for (int64_t i = 0; i < 9; ++i)
      for (int64_t k = 0; k < 9; ++k)
        if (tgt[r][i].item<double>() > tgt[r][k].item<double>() &&
            m - (phi[r][i].item<double>() - phi[r][k].item<double>()) > 0) {
          g[r][i] -= 1.0 / (c * rows);
          g[r][k] += 1.0 / (c * rows);
        }
  }
  CHECK(at::allclose(p.grad(), g, 1e-12, 1e-14));
  // ranking accuracy: |top-W(phi) ∩ drops| / W
  at::Tensor ph = at::tensor({0.9, 0.1, 0.8, 0.2, 0.7}, at::kDouble).view({1, 5});
  CHECK(train::ranking_accuracy(ph, at::tensor({0L, 2L}).view({1, 2})) == 1.0);
  CHECK(train::ranking_accuracy(ph, at::tensor({1L, 2L}).view({1, 2})) == 0.5);
}

TEST_CASE("lr schedule and Adam equal hand computations (torch.optim.Adam semantics)", "[unit][train]") {
  CHECK(train::lr_factor(0, 10, 1000) == 0.0);
  CHECK(train::lr_factor(5, 10, 1000) == 0.5);
  CHECK(train::lr_factor(10, 10, 1000) == 1.0);
  CHECK(train::lr_factor(505, 10, 1000) == Approx(0.5).epsilon(1e-12));
  CHECK(train::lr_factor(1000, 10, 1000) == Approx(0.0).margin(1e-15));
  at::Tensor w = at::tensor({1.0, -2.0}, at::kDouble).set_requires_grad(true);
  train::Adam a;
  a.init({w});
  w.mutable_grad() = at::tensor({0.5, -1.0}, at::kDouble);
  a.step({w}, 0.1);
  // t = 1: m = 0.1 g, v = 0.001 g^2, update = lr * (m / 0.1) / (sqrt(v / 0.001) + eps) = 0.1 * sign(g)
  CHECK(w[0].item<double>() == Approx(1.0 - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-12));
  CHECK(w[1].item<double>() == Approx(-2.0 + 0.1 * 1.0 / (1.0 + 1e-8)).epsilon(1e-12));
  w.mutable_grad() = at::tensor({1.0, 0.0}, at::kDouble);
  a.step({w}, 0.1);
  const double m1 = 0.9 * 0.05 + 0.1 * 1.0, v1 = 0.999 * 0.00025 + 0.001 * 1.0;
  const double upd = 0.1 / (1 - 0.81) * m1 / (std::sqrt(v1) / std::sqrt(1 - 0.999 * 0.999) + 1e-8);
  CHECK(w[0].item<double>() == Approx(1.0 - 0.1 * 0.5 / (0.5 + 1e-8) - upd).epsilon(1e-12));
  // clip: norm 5 clipped to 1
  at::Tensor x = at::zeros({2}, at::kDouble).set_requires_grad(true);
  x.mutable_grad() = at::tensor({3.0, 4.0}, at::kDouble);
  CHECK(train::clip_grad_norm({x}, 1.0) == Approx(5.0));
  CHECK(x.grad()[0].item<double>() == Approx(3.0 / (5.0 + 1e-6)));
}

TEST_CASE("feature store: stored judge inputs equal the features recorded live on the golden trajectory",
          "[unit][train]") {
  judge::register_policies();
  const std::string dir = tmp_dir("store");
  const std::string tp = labelled_traces(tmp_dir("traces_store"), 3);
  auto m = model::Transformer::load(test::load_bundle("qwen2_g2_bias").dir);
  const auto& c = m->config();
  trace::TraceSet set = trace::read_trace_set(tp);
  train::ExtractOptions eo;
  eo.budget = 16;
  eo.window = 8;
  eo.batch = 2;
  eo.model_sha256 = "test";
  eo.traces_path = tp;
  train::ExtractReport r = train::extract_features(*m, set, eo, dir);
  CHECK(r.traces == 3);
  CHECK(r.extracted_now == 3);
  // resume: nothing to do; an interrupted store (one file gone) redoes only that file
  CHECK(train::extract_features(*m, set, eo, dir).extracted_now == 0);
  fs::remove(dir + "/000001.safetensors");
  CHECK(train::extract_features(*m, set, eo, dir).extracted_now == 1);
  // another budget into the same store is refused
  train::ExtractOptions bad = eo;
  bad.variant = evict::Variant::Parity;
  CHECK_THROWS_WITH(train::extract_features(*m, set, bad, dir), Catch::Contains("variant"));
  train::FeatureStore st(dir);
  REQUIRE(st.size() == 3);
  // live features along the golden trajectory of trace 1, alone in its batch (the store ran it in a batch of 2)
  struct Live final : public evict::Policy {
    evict::GoldenPolicy g;
    std::vector<std::pair<std::pair<int64_t, int64_t>, at::Tensor>>* x = nullptr;  // outlives the evictor
    std::string name() const override { return "golden"; }
    bool needs_attention() const override { return true; }
    bool needs_accumulators() const override { return true; }
    bool first_event_sees_history(evict::Variant) const override { return true; }
    at::Tensor select(const evict::LayerView& v) override {
      x->push_back({{v.layer, v.event}, judge::build_features(v, v.n - v.protect, {false, 8})});
      return g.select(v);
    }
  };
  const trace::Trace& t1 = set.traces[1];
  evict::EvictionConfig ec;
  ec.policy = "golden";
  ec.budget = 16;
  ec.window = 8;
  ec.query_window = 8;
  std::vector<std::pair<std::pair<int64_t, int64_t>, at::Tensor>> recorded;
  harness::run_teacher_forced(*m, {&t1}, ec, false, [&](evict::Evictor& ev) {
    auto p = std::make_unique<Live>();
    p->g.set_labels(0, t1.find_labels(16, 8)->drops);
    p->x = &recorded;
    ev.set_policy(std::move(p));
  });
  train::StoredTrace s1 = st.load(1);
  const int64_t S = s1.steps, H = c.n_head_kv, B = 16, D = c.head_dim;
  REQUIRE(S == t1.find_labels(16, 8)->drops.size(1));
  CHECK(at::equal(s1.target, t1.find_labels(16, 8)->scores));
  int64_t compared = 0;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    at::Tensor x = train::assemble_features(s1, l).view({H, S, B, -1});
    for (const auto& [key, xl] : recorded) {
      if (key.first != l || key.second >= S) continue;
      at::Tensor want = xl;  // [H, B, F]
      at::Tensor got = x.select(1, key.second);
      // storage rounding: keys/values f16, statistics bf16
      at::Tensor kv_want = want.narrow(2, 0, 2 * D).to(at::kHalf).to(at::kFloat);
      at::Tensor st_want = want.narrow(2, 2 * D, want.size(2) - 2 * D).to(at::kBFloat16).to(at::kFloat);
      CHECK(at::allclose(got.narrow(2, 0, 2 * D), kv_want, 0, 1e-6));
      // batched (2 rows) vs alone: fp32 summation order may differ, bf16 rounding can move one ulp
      CHECK(at::allclose(got.narrow(2, 2 * D, want.size(2) - 2 * D), st_want, 1e-2, 1e-6));
      ++compared;
    }
  }
  CHECK(compared == c.n_layer * S);
}

TEST_CASE("SFT: a step is bit-reproducible, loss falls, resume after a kill equals an uninterrupted run",
          "[unit][train]") {
  const std::string base = tmp_dir("sft");
  train::SftConfig c;
  c.model = test::load_bundle("qwen2_g2_bias").dir;
  c.traces = labelled_traces(tmp_dir("traces_sft"), 4);
  c.store = base + "/store";
  c.budget = 16;
  c.window = 8;
  c.steps = 6;
  c.warmup = 1;
  c.batch = 2;
  c.lr = 5e-3;
  c.checkpoint_every = 2;
  c.threads = 1;
  c.eval_traces = c.traces;  // the training data as eval set: logged after every step
  c.eval_store = base + "/eval_store";
  c.eval_every = 1;
  train::SftResult a = train::run_sft(c, base + "/a", false);
  train::SftResult b = train::run_sft(c, base + "/b", false);
  REQUIRE(file_exists(base + "/a/final.safetensors"));
  judge::Judge ja = judge::Judge::load(base + "/a/final.safetensors"), jb = judge::Judge::load(base + "/b/final.safetensors");
  for (size_t i = 0; i < ja.parameters().size(); ++i) REQUIRE(at::equal(ja.parameters()[i], jb.parameters()[i]));
  CHECK(read_file(base + "/a/log.jsonl").size() > 0);
  CHECK(ja.meta()["step"] == 6);
  CHECK(ja.meta()["budget"] == 16);
  CHECK(ja.meta()["variant"] == "intended");
  // the loss on the training traces falls: after update 1 (lr 0: the initial judge) vs after the last
  std::vector<double> loss;
  {
    std::ifstream in(base + "/a/log.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      json j = json::parse(line);
      if (j["split"] == "eval") loss.push_back(j["loss"].get<double>());
    }
  }
  REQUIRE(loss.size() == 6);
  CHECK(loss.back() < 0.8 * loss.front());
  // kill after step 3 (checkpoint at 2 survives), resume: same final weights, same log
  train::run_sft(c, base + "/k", false, 3);
  CHECK_FALSE(file_exists(base + "/k/final.safetensors"));
  CHECK_THROWS_WITH(train::run_sft(c, base + "/k", false), Catch::Contains("--resume"));
  train::SftConfig other = c;
  other.lr = 1e-3;
  CHECK_THROWS_WITH(train::run_sft(other, base + "/k", true), Catch::Contains("another config"));
  train::run_sft(c, base + "/k", true);
  judge::Judge jk = judge::Judge::load(base + "/k/final.safetensors");
  for (size_t i = 0; i < ja.parameters().size(); ++i) REQUIRE(at::equal(ja.parameters()[i], jk.parameters()[i]));
  auto strip = [](const std::string& s) {  // timing fields differ between runs
    std::istringstream in(s);
    std::string line, out;
    while (std::getline(in, line)) {
      json j = json::parse(line);
      for (const char* k : {"seconds", "rows_per_s"}) j.erase(k);
      out += j.dump() + "\n";
    }
    return out;
  };
  CHECK(strip(read_file(base + "/k/log.jsonl")) == strip(read_file(base + "/a/log.jsonl")));
  (void)a;
  (void)b;
}

TEST_CASE("SFT config: strict keys, types and ranges", "[unit][train]") {
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"stepz", 3}}), Catch::Contains("unknown key 'stepz'"));
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"steps", "many"}}), Catch::Contains("wrong value type"));
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"budget", 20}, {"window", 8}}), Catch::Contains("multiple"));
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"variant", "paper"}}), Catch::Contains("intended or parity"));
  train::SftConfig c = train::SftConfig::from_json(json{{"steps", 20}, {"lr", 0.5}});
  CHECK(train::SftConfig::from_json(c.to_json()).to_json() == c.to_json());
}
