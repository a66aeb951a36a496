// fkv-train grpo (train/grpo.h): reward, advantages, log-probabilities, surrogate and KL against naive
// implementations; rho = 1 reduces to REINFORCE with a group baseline; stored-feature rollouts (prefix computed
// once, batched rows) against the plain three-pass formulation (rollout, reference pass, update pass, each a
// chunked teacher-forced forward, one row at a time); resume after a kill.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "support/catch.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "foresightkv/core/file.h"
#include "foresightkv/core/json.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/golden/schedule.h"
#include "foresightkv/judge/features.h"
#include "foresightkv/judge/judge.h"
#include "foresightkv/judge/policy.h"
#include "foresightkv/runtime/evictor_taps.h"
#include "foresightkv/trace/labeler.h"
#include "foresightkv/train/dist.h"
#include "foresightkv/train/grpo.h"
#include "foresightkv/train/sft.h"
#include "support/model_fixtures.h"
#include "support/paths.h"
#include "support/traces.h"

using namespace fkv;
namespace fs = std::filesystem;

namespace {

std::string tmp_dir(const std::string& name) { return test::fresh_tmp_dir("grpo_test", name); }

at::Tensor vec(std::vector<double> v) { return at::tensor(v, at::kDouble).to(at::kFloat); }

// A GRPO run's inputs on the tiny qwen2 model: n labelled random traces (lengths len0 + step * i, seeds
// seed0 + i) in base/traces.safetensors, the model's judge shape, and a config with small-run settings.
struct RunFixture {
  std::string model_dir;
  judge::JudgeShape shape;
  train::GrpoConfig cfg;
};
RunFixture run_fixture(const std::string& base, int n, int64_t len0, int64_t step, uint64_t seed0) {
  RunFixture f;
  f.model_dir = test::load_bundle("qwen2_g2_bias").dir;
  auto m = model::Transformer::load(f.model_dir);
  const auto& c = m->config();
  trace::TraceSet set;
  set.header = json{{"model", {{"sha256", ""}}}};
  trace::LabelOptions lo;
  for (int i = 0; i < n; ++i) {
    trace::Trace t = test::random_trace(len0 + step * i, 4, c.n_vocab, seed0 + i);
    trace::label_trace(*m, t, lo);
    set.traces.push_back(std::move(t));
  }
  trace::write_trace_set(base + "/traces.safetensors", set);
  f.shape = {c.n_layer, c.n_head_kv, c.head_dim, c.n_head_q / c.n_head_kv, 16};
  train::GrpoConfig& cfg = f.cfg;
  cfg.model = f.model_dir;
  cfg.traces = base + "/traces.safetensors";
  cfg.budget = 16;
  cfg.window = 8;
  cfg.sequences_per_step = 2;
  cfg.group_size = 4;
  cfg.rollout_rows = 2;
  cfg.lr = 1e-2;
  cfg.warmup = 1;
  cfg.eta = 0.0;
  cfg.threads = 1;
  return f;
}

}  // namespace

TEST_CASE("GRPO reward equals a hand computation (tail, 80 % entropy split, threshold, square, mean)",
          "[unit][train][grpo]") {
  // 12 positions, first = 2: tail = positions 2..11 (10 tokens); floor(0.2 * 10) = 2 highest-entropy excluded.
  // entropy: positions 5 and 9 tie at 3.0 (highest), 7 has 2.5: excluded = {5, 9} (the two highest).
  const at::Tensor ent = vec({9, 9, 0.1, 0.2, 0.3, 3.0, 0.5, 2.5, 0.7, 3.0, 0.9, 1.0});
  const at::Tensor full = vec({0, 0, 1.0, 0.5, 0.2, 0.0, 1.0, 0.0, 0.3, 0.0, 0.0, 2.0});
  const at::Tensor lm = vec({5, 5, 3.0, 0.6, 2.0, 9.0, 1.0, 4.0, 2.3, 9.0, 1.6, 2.1});
  // low = {2,3,4,6,7,8,10,11}; delta = 2.0, 0.1, 1.8, 0.0, 4.0, 2.0, 1.6, 0.1
  // delta > 1.5: 2.0, 1.8, 4.0, 2.0, 1.6 -> squares 4 + 3.24 + 16 + 4 + 2.56 = 29.8; / 8 = 3.725
  const train::Reward r = train::compute_reward(lm, full, ent, 2, "delta_sq_threshold", 1.5, 0.2);
  CHECK(r.tail == 10);
  CHECK(r.low == 8);
  CHECK(r.above == 5);
  CHECK(r.value == Approx(-3.725).epsilon(1e-6));
  // low_entropy_loss (the Qwen2 code): -mean lm over low = -(3 + 0.6 + 2 + 1 + 4 + 2.3 + 1.6 + 2.1) / 8
  CHECK(train::compute_reward(lm, full, ent, 2, "low_entropy_loss", 1.5, 0.2).value ==
        Approx(-16.6 / 8).epsilon(1e-6));
  // ties at the 20 % boundary: three positions share the top entropy, only two are excluded (the earlier ones)
  const at::Tensor ent2 = vec({0, 0, 5, 5, 5, 1, 1, 1, 1, 1, 1, 1});
  const at::Tensor lm2 = vec({0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0});
  const at::Tensor zero = at::zeros({12}, at::kFloat);
  // excluded = {2, 3}; position 4 (delta 7) stays: -49 / 8
  CHECK(train::compute_reward(lm2, zero, ent2, 2, "delta_sq_threshold", 1.5, 0.2).value == Approx(-49.0 / 8));
  CHECK_THROWS(train::compute_reward(lm, full, at::zeros({3}), 2, "delta_sq_threshold", 1.5, 0.2));
}

TEST_CASE("GRPO advantages, log-probabilities, surrogate and k3 KL equal naive implementations",
          "[unit][train][grpo]") {
  // advantages: (r - mean) / (population std + 1e-8)
  const std::vector<double> a = train::group_advantages({1.0, 2.0, 4.0, 5.0});
  const double sd = std::sqrt((4.0 + 1.0 + 1.0 + 4.0) / 4.0);
  CHECK(a[0] == Approx(-2.0 / (sd + 1e-8)));
  CHECK(a[3] == Approx(2.0 / (sd + 1e-8)));
  CHECK(train::group_advantages({3.0, 3.0})[0] == 0.0);

  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd(0.0, 1.0);
  const int64_t R = 5, C = 12, D = 3, P = 6;
  at::Tensor phi = at::empty({R, C}, at::kDouble);
  for (int64_t i = 0; i < R * C; ++i) phi.view(-1)[i] = nd(rng);
  // pool = top-P, drops = 3 distinct pool members in some draw order
  at::Tensor pool = std::get<1>(phi.topk(P, 1));
  at::Tensor drops = at::stack({pool.select(1, 2), pool.select(1, 0), pool.select(1, 5)}, 1);
  at::Tensor ind = train::drop_logprobs(phi, drops, pool, false);
  at::Tensor pl = train::drop_logprobs(phi, drops, pool, true);
  for (int64_t r = 0; r < R; ++r) {
    double z = 0;
    for (int64_t c = 0; c < C; ++c) z += std::exp(phi[r][c].item<double>());
    std::vector<char> gone(C, 0);
    for (int64_t k = 0; k < D; ++k) {
      const int64_t d = drops[r][k].item<int64_t>();
      CHECK(ind[r][k].item<double>() == Approx(phi[r][d].item<double>() - std::log(z)).epsilon(1e-12));
      double zp = 0;
      for (int64_t q = 0; q < P; ++q) {
        const int64_t c = pool[r][q].item<int64_t>();
        if (!gone[c]) zp += std::exp(phi[r][c].item<double>());
      }
      CHECK(pl[r][k].item<double>() == Approx(phi[r][d].item<double>() - std::log(zp)).epsilon(1e-12));
      gone[d] = 1;
    }
  }
  // surrogate + KL: value vs double loops, with ratios inside and outside the clip range and both signs of A
  at::Tensor lp_old = ind.detach() + 0.3 * at::randn({R, D}, at::kDouble);
  at::Tensor lp_ref = ind.detach() - 0.2 * at::randn({R, D}, at::kDouble);
  for (double adv : {1.3, -0.7}) {
    train::SurrogateStats st;
    const double got = train::surrogate_loss(ind, lp_old, lp_ref, adv, 0.2, 0.05, &st).item<double>();
    CHECK(got == Approx(train::surrogate_loss_reference(ind, lp_old, lp_ref, adv, 0.2, 0.05)).epsilon(1e-12));
    CHECK(st.n == R * D);
    CHECK(st.clipped > 0);
  }
  // autograd check of the whole chain phi -> Plackett-Luce log-probs -> clipped surrogate + KL (central differences)
  at::Tensor x = phi.clone().requires_grad_(true);
  auto f = [&](const at::Tensor& p) {
    return train::surrogate_loss(train::drop_logprobs(p, drops, pool, true), lp_old, lp_ref, 0.9, 0.2, 0.05);
  };
  f(x).backward();
  at::Tensor g = x.grad().clone();
  double worst = 0;
  for (int64_t i = 0; i < R * C; ++i) {
    at::Tensor xp = phi.clone(), xm = phi.clone();
    xp.view(-1)[i] += 1e-6;
    xm.view(-1)[i] -= 1e-6;
    const double num = (f(xp).item<double>() - f(xm).item<double>()) / 2e-6;
    worst = std::max(worst, std::abs(num - g.view(-1)[i].item<double>()));
  }
  CHECK(worst < 1e-7);
  CHECK(train::grpo_lr_factor(0, 10) == Approx(0.1));
  CHECK(train::grpo_lr_factor(10, 10) == Approx(1.1));  // the official schedule's step-10 quirk
  CHECK(train::grpo_lr_factor(11, 10) == 1.0);
}

TEST_CASE("GRPO with rho = 1 (one epoch per step) is REINFORCE with a group baseline", "[unit][train][grpo]") {
  std::mt19937_64 rng(9);
  std::normal_distribution<double> nd(0.0, 1.0);
  const int64_t R = 4, C = 10, D = 2;
  at::Tensor phi = at::empty({R, C}, at::kDouble);
  for (int64_t i = 0; i < R * C; ++i) phi.view(-1)[i] = nd(rng);
  at::Tensor pool = std::get<1>(phi.topk(4, 1));
  at::Tensor drops = pool.narrow(1, 0, D).clone();
  for (bool pl : {false, true}) {
    const double adv = -0.8;
    at::Tensor x = phi.clone().requires_grad_(true);
    at::Tensor lp = train::drop_logprobs(x, drops, pool, pl);
    // beta = 0, lp_old = lp (rho = 1: the clip is inactive)
    train::surrogate_loss(lp, lp.detach(), lp.detach(), adv, 0.2, 0.0).backward();
    at::Tensor g_grpo = x.grad().clone();
    at::Tensor y = phi.clone().requires_grad_(true);
    // REINFORCE: -A * mean over elements of log pi
    (-adv * train::drop_logprobs(y, drops, pool, pl).mean()).backward();
    CHECK(at::allclose(g_grpo, y.grad(), 1e-12, 1e-14));
  }
}

namespace {

// The plain formulation, one rollout at a time from position 0: a chunked teacher-forced forward whose policy
// scores live features with `scorer` and either samples (record drops) or replays recorded drops.
struct PlainPolicy final : public evict::Policy {
  const judge::Judge* scorer = nullptr;
  bool replay = false, with_grad = false, parity = false;
  uint64_t seed = 0;
  int64_t S = 0, W = 0;
  std::vector<at::Tensor>* drops = nullptr;  // [layer * S + s] -> [H, W]
  std::vector<at::Tensor>* phi = nullptr;    // [layer * S + s] -> [H, B] (graph attached when with_grad)
  std::string name() const override { return "plain"; }
  bool needs_attention() const override { return true; }
  bool needs_accumulators() const override { return true; }
  bool first_event_sees_history(evict::Variant) const override { return true; }
  at::Tensor select(const evict::LayerView& v) override {
    const int64_t C = v.n - v.protect, d = v.n - v.budget;
    at::Tensor x = judge::build_features(v, C, {parity, W});
    at::Tensor p;
    {
      c10::AutoGradMode mode(with_grad);
      p = scorer->score(v.layer, x);
    }
    at::Tensor dr;
    const int64_t key = v.layer * S + v.event;
    if (replay && v.event < S) {
      dr = (*drops)[key];
    } else {
      dr = judge::choose_drops(p.detach(), d, true, parity, seed, v.stream, v.layer, v.event);
      if (v.event < S) (*drops)[key] = dr;
    }
    if (v.event < S) (*phi)[key] = p;
    return judge::keep_from_drops(dr, v.n);
  }
};

// One plain pass over `t`; returns per-token NLL [T-1] (under the pass's evictions).
at::Tensor plain_pass(const model::Transformer& m, const trace::Trace& t, int64_t B, int64_t W, uint64_t stream,
                      std::unique_ptr<PlainPolicy> pol) {
  evict::EvictionConfig cfg;
  cfg.policy = "golden";
  cfg.budget = B;
  cfg.window = W;
  cfg.query_window = W;
  cfg.trigger = evict::Trigger::Length;
  evict::Evictor ev(cfg.resolved(), 1, m.config().n_layer, m.config().n_head_q, m.config().n_head_kv,
                    m.config().head_dim);
  ev.set_policy(std::move(pol));
  ev.set_stream(0, stream);
  const int64_t T = t.length();
  cache::KvCache kv = m.make_cache(1, T + W);
  runtime::EvictorTaps tap(ev);
  at::Tensor nll = at::zeros({T - 1}, at::kFloat);
  test::run_in_chunks(
      m, t, W, ev, kv, &tap, [](int64_t) {}, model::Logits::All, [&](int64_t s, const at::Tensor& lg) {
        for (int64_t i = 0; i < lg.size(1) && s + i < T - 1; ++i)
          nll[s + i] = -at::log_softmax(lg[0][i], -1)[t.tokens[s + i + 1]];
      });
  return nll;
}

}  // namespace

TEST_CASE("GRPO stored-feature rollouts equal the plain three-pass formulation (rewards, scores, gradients)",
          "[unit][train][grpo]") {
  judge::register_policies();
  auto m = model::Transformer::load(test::load_bundle("qwen2_g2_bias").dir);
  const auto& c = m->config();
  const int64_t B = 16, W = 8, G = 4;
  trace::Trace t = test::random_trace(67, 5, c.n_vocab, 21);
  trace::LabelOptions lo;
  trace::label_trace(*m, t, lo);  // nll + entropy only
  const int64_t S = golden::golden_steps(t.length(), B, W);
  REQUIRE(S >= 3);
  const judge::JudgeShape shape{c.n_layer, c.n_head_kv, c.head_dim, c.n_head_q / c.n_head_kv, 16};
  judge::Judge pol = judge::Judge::init(shape, 0.5, 1), ref = judge::Judge::init(shape, 0.5, 2);
  train::GrpoConfig cfg;
  cfg.budget = B;
  cfg.window = W;
  cfg.logprob = "plackett_luce";
  const double beta = 0.05;
  std::vector<uint64_t> streams;
  for (int64_t g = 0; g < G; ++g) streams.push_back(train::rollout_stream(7, 3, 0, g));
  train::RolloutSpec spec;
  spec.budget = B;
  spec.window = W;
  spec.seed = 7;
  spec.rows = 2;
  const std::vector<train::Rollout> rolls = train::run_rollouts(*m, t, pol, spec, streams);
  REQUIRE(rolls.size() == static_cast<size_t>(G));
  // without the shared prefix (every row from position 0, all G in one forward): the same rollouts
  train::RolloutSpec spec2 = spec;
  spec2.share_prefix = false;
  spec2.rows = G;
  const std::vector<train::Rollout> rolls2 = train::run_rollouts(*m, t, pol, spec2, streams);
  for (int64_t g = 0; g < G; ++g) {
    CHECK(at::equal(rolls[g].drops, rolls2[g].drops));
    // positions < B are the shared prefix's (not computed there)
    const int64_t n = t.length() - 1 - B;
    CHECK(at::allclose(rolls[g].lm_nll.narrow(0, B, n), rolls2[g].lm_nll.narrow(0, B, n), 1e-5, 1e-5));
  }
  std::vector<double> rewards;
  for (const auto& r : rolls)
    rewards.push_back(train::compute_reward(r.lm_nll, t.nll, t.entropy, B + W, cfg.reward, 0.0, 0.2).value);
  const std::vector<double> adv = train::group_advantages(rewards);
  pol.set_requires_grad(true);
  bool differ = false;
  for (int64_t g = 0; g < G; ++g) {
    // 1. the plain rollout: sampled with the policy judge, alone, from position 0
    std::vector<at::Tensor> drops(static_cast<size_t>(c.n_layer * S)), phi_old(drops.size()), phi_ref(drops.size()),
        phi_new(drops.size());
    auto mk = [&](const judge::Judge* j, bool replay, bool grad, std::vector<at::Tensor>* phi) {
      auto p = std::make_unique<PlainPolicy>();
      p->scorer = j;
      p->replay = replay;
      p->with_grad = grad;
      p->seed = 7;
      p->S = S;
      p->W = W;
      p->drops = &drops;
      p->phi = phi;
      return p;
    };
    at::Tensor nll = plain_pass(*m, t, B, W, streams[g], mk(&pol, false, false, &phi_old));
    // 2. reference pass: replay the drops, score with the reference judge
    plain_pass(*m, t, B, W, streams[g], mk(&ref, true, false, &phi_ref));
    // 3. update pass: replay, score with the policy judge with grad
    plain_pass(*m, t, B, W, streams[g], mk(&pol, true, true, &phi_new));
    const train::Rollout& r = rolls[g];
    for (int64_t l = 0; l < c.n_layer; ++l)
      for (int64_t s = 0; s < S; ++s) {
        REQUIRE(at::equal(drops[l * S + s], r.drops[l][s]));
        CHECK(at::allclose(phi_old[l * S + s], r.phi_old[l][s], 1e-4, 1e-5));
      }
    const double rw = train::compute_reward(nll, t.nll, t.entropy, B + W, cfg.reward, 0.0, 0.2).value;
    CHECK(rw == Approx(rewards[g]).epsilon(1e-4).margin(1e-6));
    differ = differ || std::abs(rewards[g] - rewards[0]) > 1e-9;
    // the plain loss and its gradient
    for (const auto& p : pol.parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor plain_loss;
    const int64_t H = c.n_head_kv;
    for (int64_t l = 0; l < c.n_layer; ++l) {
      std::vector<at::Tensor> pn, po, pr, dd, pp;
      for (int64_t s = 0; s < S; ++s) {
        pn.push_back(phi_new[l * S + s]);
        po.push_back(phi_old[l * S + s]);
        pr.push_back(phi_ref[l * S + s]);
        dd.push_back(drops[l * S + s]);
        pp.push_back(r.pool[l][s]);  // the pool is top-2D of phi_old (checked equal above)
      }
      auto rows = [&](const std::vector<at::Tensor>& v) { return at::stack(v).reshape({S * H, -1}); };
      at::Tensor lp_new = train::drop_logprobs(rows(pn), rows(dd), rows(pp), true);
      at::Tensor lp_old = train::drop_logprobs(rows(po), rows(dd), rows(pp), true);
      at::Tensor lp_ref = train::drop_logprobs(rows(pr), rows(dd), rows(pp), true);
      at::Tensor ll = train::surrogate_loss(lp_new, lp_old.detach(), lp_ref.detach(), adv[g], 0.2, beta);
      plain_loss = plain_loss.defined() ? plain_loss + ll : ll;
    }
    plain_loss.backward();
    std::vector<at::Tensor> g_plain;
    for (const auto& p : pol.parameters()) g_plain.push_back(p.grad().clone());
    for (const auto& p : pol.parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor stored = train::rollout_loss(pol, ref, r, adv[g], cfg, beta, nullptr);
    CHECK(stored.item<double>() == Approx(plain_loss.item<double>()).epsilon(1e-4).margin(1e-7));
    stored.backward();
    for (size_t i = 0; i < g_plain.size(); ++i) {
      // features from a batched run with a shared prefix vs one row from position 0: fp32 rounding apart
      const double scale = g_plain[i].abs().max().item<double>();
      CHECK((pol.parameters()[i].grad() - g_plain[i]).abs().max().item<double>() <= 1e-3 * scale + 1e-7);
    }
  }
  CHECK(differ);  // the rollouts are really different samples
}

TEST_CASE("GRPO training: steps change the judge, resume after a kill equals an uninterrupted run, config keys",
          "[unit][train][grpo]") {
  judge::register_policies();
  const std::string base = tmp_dir("run");
  RunFixture f = run_fixture(base, 3, 50, 6, 40);
  judge::Judge init = judge::Judge::init(f.shape, 0.3, 5);
  init.meta() = json{{"variant", "intended"}};
  init.save(base + "/init.safetensors");
  train::GrpoConfig cfg = f.cfg;
  cfg.init = base + "/init.safetensors";
  cfg.steps = 3;
  cfg.checkpoint_every = 1;
  train::run_grpo(cfg, base + "/a", false);
  judge::Judge a = judge::Judge::load(base + "/a/final.safetensors");
  CHECK_FALSE(at::equal(a.parameters()[0], init.parameters()[0]));
  CHECK(a.meta()["step"] == 3);
  int lines = 0;
  {
    std::ifstream in(base + "/a/log.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const json j = json::parse(line);
      CHECK(j.contains("reward_mean"));
      CHECK(j.contains("clip_frac"));
      CHECK(j["rho_mean"].get<double>() == Approx(1.0).margin(1e-4));  // one epoch per step
      ++lines;
    }
  }
  CHECK(lines == 3);
  train::run_grpo(cfg, base + "/k", false, 2);
  CHECK_FALSE(file_exists(base + "/k/final.safetensors"));
  train::run_grpo(cfg, base + "/k", true);
  judge::Judge k = judge::Judge::load(base + "/k/final.safetensors");
  for (size_t i = 0; i < a.parameters().size(); ++i) REQUIRE(at::equal(a.parameters()[i], k.parameters()[i]));
  // config
  CHECK_THROWS_WITH(train::GrpoConfig::from_json(json{{"groupsize", 3}}), Catch::Contains("unknown key"));
  CHECK_THROWS_WITH(train::GrpoConfig::from_json(json{{"reward", "mean"}}), Catch::Contains("low_entropy_loss"));
  CHECK_THROWS_WITH(train::GrpoConfig::from_json(json{{"group_size", 1}}), Catch::Contains("group_size >= 2"));
  // rollout_rows is rows per forward, not part of the method: rollout_rows 4 with a group of 6 runs forwards of
  // 3 rows, and 2, 3 or 6 rows per forward make the same update bit for bit (the gradient is summed per rollout,
  // then in rollout order; every forward here takes the matrix kernels' multi-token path, > 8 tokens)
  train::GrpoConfig odd = cfg;
  odd.steps = 1;
  odd.group_size = 6;
  odd.rollout_rows = 3;
  train::run_grpo(odd, base + "/odd3", false);
  const judge::Judge o3 = judge::Judge::load(base + "/odd3/final.safetensors");
  for (int64_t rows : {4, 2, 6}) {
    odd.rollout_rows = rows;
    const std::string dir = base + "/odd" + std::to_string(rows);
    train::run_grpo(odd, dir, false);
    judge::Judge o = judge::Judge::load(dir + "/final.safetensors");
    for (size_t i = 0; i < o.parameters().size(); ++i) REQUIRE(at::equal(o.parameters()[i], o3.parameters()[i]));
  }
}

TEST_CASE("GRPO score_scale equals a run from a judge with a pre-scaled output layer and samples sharper",
          "[unit][train][grpo]") {
  judge::register_policies();
  const std::string base = tmp_dir("scale");
  RunFixture f = run_fixture(base, 2, 48, 8, 70);
  const judge::JudgeShape& shape = f.shape;
  judge::Judge init = judge::Judge::init(shape, 0.02, 9);  // small scores: a near-uniform pool at T = 1
  init.meta() = json{{"variant", "intended"}};
  init.save(base + "/init.safetensors");
  const double s = 1000.0;  // pool entropy ln 16 - 1e-5 at s = 1, ~0.85 nats at s = 1000
  {  // scale_output: phi -> s * phi (fp32 rounding only)
    judge::Judge sc = init.clone();
    sc.scale_output(s);
    at::Tensor x = at::randn({shape.n_head_kv, 7, shape.n_feature()}, at::TensorOptions().dtype(at::kFloat));
    for (int64_t l = 0; l < shape.n_layer; ++l) {
      at::Tensor a = init.score(l, x) * s, b = sc.score(l, x);
      CHECK((a - b).abs().max().item<double>() <= 1e-5 * (a.abs().max().item<double>() + 1e-6));
    }
    sc.save(base + "/prescaled.safetensors");
    CHECK_THROWS_WITH(sc.scale_output(0.0), Catch::Contains("> 0"));
  }
  train::GrpoConfig cfg = f.cfg;
  cfg.steps = 2;
  auto read_log = [](const std::string& path) {
    std::vector<json> v;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) v.push_back(json::parse(line));
    return v;
  };
  train::GrpoConfig a = cfg, b = cfg, u = cfg;
  a.init = base + "/init.safetensors";
  a.score_scale = s;
  b.init = base + "/prescaled.safetensors";
  u.init = base + "/init.safetensors";
  train::run_grpo(a, base + "/a", false);
  train::run_grpo(b, base + "/b", false);
  train::run_grpo(u, base + "/u", false);
  // step_000000 is the scaled init, the policy before any update
  judge::Judge a0 = judge::Judge::load(base + "/a/step_000000.safetensors");
  judge::Judge pre = judge::Judge::load(base + "/prescaled.safetensors");
  CHECK(a0.meta()["step"] == 0);
  for (size_t i = 0; i < pre.parameters().size(); ++i)
    CHECK(at::allclose(a0.parameters()[i], pre.parameters()[i], 1e-6, 1e-7));
  judge::Judge fa = judge::Judge::load(base + "/a/final.safetensors");
  judge::Judge fb = judge::Judge::load(base + "/b/final.safetensors");
  CHECK(fa.meta()["training"]["score_scale"].get<double>() == s);
  CHECK(fa.meta()["score_scale"].get<double>() == s);
  for (size_t i = 0; i < fa.parameters().size(); ++i)
    CHECK(at::allclose(fa.parameters()[i], fb.parameters()[i], 1e-4, 1e-6));
  const auto la = read_log(base + "/a/log.jsonl"), lb = read_log(base + "/b/log.jsonl"),
             lu = read_log(base + "/u/log.jsonl");
  REQUIRE(la.size() == 2);
  REQUIRE(lb.size() == 2);
  REQUIRE(lu.size() == 2);
  for (size_t k = 0; k < la.size(); ++k) {
    CHECK(la[k]["reward_mean"].get<double>() == Approx(lb[k]["reward_mean"].get<double>()).margin(1e-6));
    CHECK(la[k]["drop_entropy"].get<double>() == Approx(lb[k]["drop_entropy"].get<double>()).margin(1e-5));
  }
  // at T = 1 the small-score judge samples its pool nearly uniformly; scaled, it follows its ranking
  CHECK(la[0]["drop_entropy"].get<double>() < lu[0]["drop_entropy"].get<double>() - 1.0);
  CHECK_THROWS_WITH(train::GrpoConfig::from_json(json{{"score_scale", -1.0}}), Catch::Contains("score_scale"));
}

TEST_CASE("GRPO ranks under torchrun: a bare cuda device is each rank's own GPU", "[unit][train][grpo]") {
  using train::rank_device;
  CHECK(rank_device("cuda", 1, 0) == "cuda");      // one process: as given
  CHECK(rank_device("cuda", 1, -1) == "cuda");
  CHECK(rank_device("cuda", 8, 3) == "cuda:3");    // --nproc_per_node=8 --device cuda: rank 3 on GPU 3
  CHECK(rank_device("cuda", 2, 0) == "cuda:0");
  CHECK(rank_device("cuda:1", 8, 3) == "cuda:1");  // explicit index kept
  CHECK(rank_device("cpu", 8, 3) == "cpu");
  REQUIRE_THROWS_WITH(rank_device("cuda", 2, -1), Catch::Contains("LOCAL_RANK"));
}

TEST_CASE("configs/train presets load with strict keys, the Qwen3-4B ones with the paper's hyper-parameters",
          "[unit][train][grpo]") {
  const std::string dir = test::source_dir() + "/configs/train";
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() != ".json") continue;
    INFO(name);
    const json j = read_json_file(e.path().string());
    json bad = j;
    bad["unknown_key_for_test"] = 1;
    if (name.rfind("sft_", 0) == 0) {
      CHECK_NOTHROW(train::SftConfig::from_json(j));
      CHECK_THROWS_WITH(train::SftConfig::from_json(bad), Catch::Contains("unknown_key_for_test"));
    } else if (name.rfind("grpo_", 0) == 0) {
      CHECK_NOTHROW(train::GrpoConfig::from_json(j));
      CHECK_THROWS_WITH(train::GrpoConfig::from_json(bad), Catch::Contains("unknown_key_for_test"));
    } else {
      FAIL("configs/train/" << name << ": presets are named sft_<model>.json or grpo_<model>.json");
    }
    ++n;
  }
  CHECK(n >= 6);
  // spec §D.4 (SL: code defaults, B = 1024, W = 256) and §E.6 (RL: the paper's 200 steps, 32 x 8, lr 3e-4)
  const auto s = train::SftConfig::from_json(read_json_file(dir + "/sft_qwen3-4b.json"));
  CHECK(s.budget == 1024);
  CHECK(s.window == 256);
  CHECK(s.steps == 1000);
  CHECK(s.lr == 1e-2);
  CHECK(s.margin == 0.01);
  CHECK(s.hidden == 16);
  CHECK(s.seed == 422);
  CHECK(s.device == "cuda");
  const auto g = train::GrpoConfig::from_json(read_json_file(dir + "/grpo_qwen3-4b.json"));
  CHECK(g.budget == s.budget);
  CHECK(g.window == s.window);
  CHECK(g.traces == s.traces);
  CHECK(g.steps == 200);
  CHECK(g.sequences_per_step == 32);
  CHECK(g.group_size == 8);
  CHECK(g.lr == 3e-4);
  CHECK(g.kl_beta == 0.05);
  CHECK(g.kl_steps == 100);
  CHECK(g.eta == 1.5);
  CHECK(g.reward == "delta_sq_threshold");
  CHECK(g.score_scale == 1.0);
}
