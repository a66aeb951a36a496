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
#include "foresightkv/golden/schedule.h"
#include "foresightkv/judge/features.h"
#include "foresightkv/judge/judge.h"
#include "foresightkv/judge/policy.h"
#include "foresightkv/trace/labeler.h"
#include "foresightkv/train/feature_store.h"
#include "foresightkv/train/sft.h"
#include "support/model_fixtures.h"
#include "support/paths.h"
#include "support/traces.h"

using namespace fkv;
namespace fs = std::filesystem;

namespace {

std::string tmp_dir(const std::string& name) { return test::fresh_tmp_dir("train_test", name); }

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

TEST_CASE("oracle future scores: equal a naive suffix max, reproduce the golden labels on the golden trajectory",
          "[unit][train]") {
  auto m = model::Transformer::load(test::load_bundle("qwen2_g2_bias").dir);
  const auto& c = m->config();
  const int64_t B = 16, W = 8;
  trace::Trace t = test::random_trace(75, 4, c.n_vocab, 7);
  trace::LabelOptions lo;
  lo.budgets = {B};
  lo.window = W;
  trace::label_trace(*m, t, lo);
  const trace::GoldenLabels& lb = *t.find_labels(B, W);
  const int64_t T = t.length(), S = lb.drops.size(1), H = c.n_head_kv;
  REQUIRE(S == golden::golden_steps(T, B, W));
  at::Tensor fut = trace::future_score_tables(*m, t, B, W);  // [L, H, T, S]
  REQUIRE(fut.sizes() == at::IntArrayRef({c.n_layer, H, T, S}));
  // naive: dense pooled scores of layer 0 from the same q/k, then the max over future blocks by loops
  {
    golden::GoldenOptions go;
    go.budget = B;
    go.window = W;
    std::vector<at::Tensor> q(c.n_layer), k(c.n_layer);
    struct Tap final : model::ForwardTaps {
      std::vector<at::Tensor>*q, *k;
      void on_qkv(int64_t l, const at::Tensor& qq, const at::Tensor& kk, const at::Tensor&) override {
        (*q)[l] = qq[0].clone();
        (*k)[l] = kk[0].clone();
      }
    } tap;
    tap.q = &q;
    tap.k = &k;
    cache::KvCache kv = m->make_cache(1, T);
    at::Tensor ids = at::tensor(std::vector<int64_t>(t.tokens.begin(), t.tokens.end()), at::kLong).view({1, T});
    m->forward(ids, at::arange(T, at::kLong).view({1, T}), kv, model::Logits::None, &tap);
    at::Tensor dense = golden::block_scores_dense(q[0], k[0], W, true);  // [H, T, nb]
    const int64_t nb = dense.size(2), b0 = 1 + B / W;
    int64_t checked = 0;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < T; ++n)
        for (int64_t s = 0; s < S; ++s) {
          float mx = -INFINITY;
          for (int64_t b = b0 + s; b < nb; ++b) mx = std::max(mx, dense[h][n][b].item<float>());
          REQUIRE(fut[0][h][n][s].item<float>() == Approx(mx).margin(1e-7));
          ++checked;
        }
    CHECK(checked == H * T * S);
  }
  // on the golden trajectory: the candidates at step s are the survivors of step s-1; -alpha there == the labels'
  // target scores, and the oracle's choice from that state == the labels' drops
  for (int64_t s = 0; s < S; ++s) {
    at::Tensor cand = s == 0 ? at::arange(B, at::kLong).view({1, 1, B}).expand({c.n_layer, H, B})
                             : trace::replay_survivors(lb, T, s - 1);
    for (int64_t l = 0; l < c.n_layer; ++l)
      for (int64_t h = 0; h < H; ++h) {
        at::Tensor alpha = fut[l][h].index_select(0, cand[l][h]).select(1, s).contiguous();
        REQUIRE(at::equal(-alpha, lb.scores[l][s][h]));
        const std::vector<int64_t> d = golden::oracle_drops(alpha.data_ptr<float>(), B, W);
        for (int64_t w = 0; w < W; ++w) REQUIRE(d[w] == lb.drops[l][s][h][w].item<int64_t>());
      }
  }
  // oracle_drops: the d smallest, ties to the lower slot, ascending
  const std::vector<float> a = {0.5f, 0.1f, 0.1f, 0.9f, 0.1f};
  CHECK(golden::oracle_drops(a.data(), 5, 2) == std::vector<int64_t>{1, 2});
  CHECK(golden::oracle_drops(a.data(), 5, 4) == std::vector<int64_t>{0, 1, 2, 4});
}

TEST_CASE("on-policy store: the states the judge reaches itself, labelled by the oracle", "[unit][train]") {
  judge::register_policies();
  const std::string tp = labelled_traces(tmp_dir("traces_onpolicy"), 3);
  const std::string model_dir = test::load_bundle("qwen2_g2_bias").dir;
  auto m = model::Transformer::load(model_dir);
  const auto& c = m->config();
  const int64_t B = 16, W = 8, H = c.n_head_kv;
  trace::TraceSet set = trace::read_trace_set(tp);
  auto jg = std::make_shared<const judge::Judge>(
      judge::Judge::init({c.n_layer, c.n_head_kv, c.head_dim, c.n_head_q / c.n_head_kv, 16}, 0.5, 9));
  train::ExtractOptions eo;
  eo.budget = B;
  eo.window = W;
  eo.batch = 2;
  eo.model_sha256 = "test";
  eo.traces_path = tp;
  for (bool sampled : {false, true}) {
    const std::string dir = tmp_dir(sampled ? "onpolicy_sampled" : "onpolicy_topk");
    train::RolloutOptions ro;
    ro.judge = jg;
    ro.judge_sha256 = "j";
    ro.sampled = sampled;
    ro.seed = 5;
    train::ExtractReport r = train::extract_features(*m, set, eo, dir, &ro);
    CHECK(r.extracted_now == 3);
    train::FeatureStore st(dir);
    CHECK(st.manifest()["trajectory"] == "judge");
    // the golden store's directory or another judge cannot be mixed into it
    train::RolloutOptions other = ro;
    other.judge_sha256 = "k";
    CHECK_THROWS_WITH(train::extract_features(*m, set, eo, dir, &other), Catch::Contains("other states"));
    CHECK_THROWS_WITH(train::extract_features(*m, set, eo, dir), Catch::Contains("other states"));
    // resume after losing a file reproduces it bit for bit (the draws are keyed by the trace, not the batch row)
    const std::string before = read_file(dir + "/000002.safetensors");
    fs::remove(dir + "/000002.safetensors");
    CHECK(train::extract_features(*m, set, eo, dir, &ro).extracted_now == 1);
    CHECK(read_file(dir + "/000002.safetensors") == before);
    for (int64_t i = 0; i < st.size(); ++i) {
      const trace::Trace& t = set.traces[i];
      train::StoredTrace s = st.load(i);
      const int64_t S = s.steps;
      // the trajectory: the candidate positions the judge policy holds at every event, run live and alone
      evict::EvictionConfig ec;
      ec.policy = "golden";
      ec.budget = B;
      ec.window = W;
      ec.query_window = W;
      ec.seed = 5;
      std::vector<at::Tensor> live;  // [layer * S + s] -> [H, B] positions
      live.resize(static_cast<size_t>(c.n_layer * S));
      struct Live final : public evict::Policy {
        std::unique_ptr<judge::JudgePolicy> p;
        std::vector<at::Tensor>* x = nullptr;
        int64_t S = 0, B = 0;
        std::string name() const override { return p->name(); }
        bool needs_attention() const override { return true; }
        bool needs_accumulators() const override { return true; }
        bool first_event_sees_history(evict::Variant) const override { return true; }
        at::Tensor select(const evict::LayerView& v) override {
          if (v.event < S) (*x)[v.layer * S + v.event] = v.pos.narrow(1, 0, B).to(at::kLong).clone();
          return p->select(v);
        }
      };
      harness::run_teacher_forced(*m, {&t}, ec, false, [&](evict::Evictor& ev) {
        ev.set_stream(0, static_cast<uint64_t>(i));
        auto p = std::make_unique<Live>();
        evict::EvictionConfig jc = ec;
        jc.policy = sampled ? "foresightkv" : "foresightkv_topk";
        p->p = std::make_unique<judge::JudgePolicy>(jg, sampled, jc);
        p->x = &live;
        p->S = S;
        p->B = B;
        ev.set_policy(std::move(p));
      });
      at::Tensor fut = trace::future_score_tables(*m, t, B, W);
      bool off_golden = false;
      for (int64_t l = 0; l < c.n_layer; ++l)
        for (int64_t k = 0; k < S; ++k) {
          REQUIRE(live[l * S + k].defined());
          REQUIRE(at::equal(s.pos[l][k].to(at::kLong), live[l * S + k]));
          for (int64_t h = 0; h < H; ++h) {
            // targets: -alpha_k of the held positions; drops: the W smallest alpha (naive loop, ties lower slot)
            std::vector<std::pair<float, int64_t>> al;
            for (int64_t n = 0; n < B; ++n) {
              const float a = fut[l][h][s.pos[l][k][h][n].item<int32_t>()][k].item<float>();
              REQUIRE(s.target[l][k][h][n].item<float>() == -a);
              al.push_back({a, n});
            }
            std::sort(al.begin(), al.end());
            std::vector<int64_t> want;
            for (int64_t w = 0; w < W; ++w) want.push_back(al[w].second);
            std::sort(want.begin(), want.end());
            for (int64_t w = 0; w < W; ++w) REQUIRE(s.drops[l][k][h][w].item<int32_t>() == want[w]);
          }
          if (k > 0) {
            at::Tensor gold = trace::replay_survivors(*t.find_labels(B, W), t.length(), k - 1)[l];
            off_golden = off_golden || !at::equal(gold, s.pos[l][k].to(at::kLong));
          }
        }
      CHECK(off_golden);  // a random judge leaves the golden trajectory
    }
  }
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

TEST_CASE("SFT on-policy rounds: rollouts of the current judge, resume across a round boundary is exact",
          "[unit][train]") {
  const std::string base = tmp_dir("sft_rounds");
  train::SftConfig c;
  c.model = test::load_bundle("qwen2_g2_bias").dir;
  c.traces = labelled_traces(tmp_dir("traces_rounds"), 3);
  c.store = base + "/store";
  c.budget = 16;
  c.window = 8;
  c.steps = 3;
  c.warmup = 1;
  c.batch = 2;
  c.lr = 5e-3;
  c.checkpoint_every = 100;  // only the round boundaries checkpoint
  c.threads = 1;
  c.rounds = 2;
  c.round_steps = 2;
  c.round_limit = 2;
  c.trajectory = "mixed";
  train::SftResult a = train::run_sft(c, base + "/a", false);
  CHECK(a.steps_run == 7);
  train::FeatureStore r1(base + "/a/round_1"), r2(base + "/a/round_2");
  CHECK(r1.size() == 2);
  CHECK(r2.size() == 2);
  // round r rolled out the judge of step 3 + 2 (r - 1)
  CHECK(judge::Judge::load(base + "/a/round_1/judge.safetensors").meta()["step"] == 3);
  CHECK(judge::Judge::load(base + "/a/round_2/judge.safetensors").meta()["step"] == 5);
  std::vector<json> rollout;
  {
    std::ifstream in(base + "/a/log.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      json j = json::parse(line);
      if (j["split"] == "rollout") rollout.push_back(j);
    }
  }
  REQUIRE(rollout.size() == 2);
  CHECK(rollout[0]["round"] == 1);
  CHECK(rollout[0]["step"] == 3);
  CHECK(rollout[1]["step"] == 5);
  CHECK(rollout[0]["acc"].get<double>() >= 0.0);
  // kills at the boundary (step 3, before round 1's rollouts) and inside round 1 (step 4): resume == uninterrupted
  auto strip = [](const std::string& s) {
    std::istringstream in(s);
    std::string line, out;
    while (std::getline(in, line)) {
      json j = json::parse(line);
      for (const char* k : {"seconds", "rows_per_s", "rollout_seconds"}) j.erase(k);
      out += j.dump() + "\n";
    }
    return out;
  };
  judge::Judge ja = judge::Judge::load(base + "/a/final.safetensors");
  for (int64_t kill : {3, 4}) {
    const std::string d = base + "/k" + std::to_string(kill);
    train::run_sft(c, d, false, kill);
    train::run_sft(c, d, true);
    judge::Judge jk = judge::Judge::load(d + "/final.safetensors");
    for (size_t i = 0; i < ja.parameters().size(); ++i) REQUIRE(at::equal(ja.parameters()[i], jk.parameters()[i]));
    CHECK(strip(read_file(d + "/log.jsonl")) == strip(read_file(base + "/a/log.jsonl")));
  }
  // the equal-compute control (golden states only, same restarts) rolls nothing out and ends elsewhere;
  // judge-only data differs from mixed
  train::SftConfig g = c;
  g.trajectory = "golden";
  train::run_sft(g, base + "/g", false);
  CHECK_FALSE(fs::exists(base + "/g/round_1"));
  train::SftConfig jo = c;
  jo.trajectory = "judge";
  train::run_sft(jo, base + "/j", false);
  judge::Judge jg = judge::Judge::load(base + "/g/final.safetensors"), jj = judge::Judge::load(base + "/j/final.safetensors");
  CHECK_FALSE(at::equal(ja.parameters()[0], jg.parameters()[0]));
  CHECK_FALSE(at::equal(ja.parameters()[0], jj.parameters()[0]));
  // the golden phase (first 3 steps) is the same whatever comes after it
  CHECK(at::equal(judge::Judge::load(base + "/j/round_1/judge.safetensors").parameters()[0],
                  judge::Judge::load(base + "/a/round_1/judge.safetensors").parameters()[0]));
}

TEST_CASE("SFT config: strict keys, types and ranges", "[unit][train]") {
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"stepz", 3}}), Catch::Contains("unknown key 'stepz'"));
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"steps", "many"}}), Catch::Contains("wrong value type"));
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"budget", 20}, {"window", 8}}), Catch::Contains("multiple"));
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"variant", "paper"}}), Catch::Contains("intended or parity"));
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"trajectory", "expert"}}), Catch::Contains("golden, judge or mixed"));
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"trajectory", "mixed"}}), Catch::Contains("rounds >= 1"));
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"rounds", 1}, {"round_policy", "greedy"}}),
                    Catch::Contains("sampled or topk"));
  CHECK_THROWS_WITH(train::SftConfig::from_json(json{{"rounds", 1}, {"round_steps", 5}, {"warmup", 10}, {"steps", 20}}),
                    Catch::Contains("warmup < round_steps"));
  CHECK(train::SftConfig::from_json(json{{"rounds", 2}, {"round_steps", 50}, {"trajectory", "mixed"}}).total_steps() ==
        1100);
  train::SftConfig c = train::SftConfig::from_json(json{{"steps", 20}, {"lr", 0.5}});
  CHECK(train::SftConfig::from_json(c.to_json()).to_json() == c.to_json());
}
