#include "foresightkv/train/grpo.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/core/timer.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/golden/schedule.h"
#include "foresightkv/harness/generate_eval.h"
#include "foresightkv/judge/features.h"
#include "foresightkv/judge/policy.h"
#include "foresightkv/runtime/bench.h"
#include "foresightkv/runtime/evictor_taps.h"
#include "foresightkv/train/dist.h"
#include "foresightkv/train/sft.h"

namespace fkv::train {
namespace fs = std::filesystem;

// ---- config -----------------------------------------------------------------------------------------------------

const std::vector<std::string>& GrpoConfig::keys() {
  static const std::vector<std::string> k = {
      "model", "traces", "init", "budget", "window", "variant", "steps", "sequences_per_step", "group_size",
      "rollout_rows", "lr", "beta1", "beta2", "eps", "warmup", "clip_eps", "kl_beta", "kl_steps", "grad_clip",
      "reward", "eta", "high_entropy_frac", "logprob", "score_scale", "seed", "checkpoint_every", "log_every", "limit",
      "threads", "device"};
  return k;
}

json GrpoConfig::to_json() const {
  return json{{"model", model}, {"traces", traces}, {"init", init}, {"budget", budget}, {"window", window},
              {"variant", variant}, {"steps", steps}, {"sequences_per_step", sequences_per_step},
              {"group_size", group_size}, {"rollout_rows", rollout_rows}, {"lr", lr}, {"beta1", beta1},
              {"beta2", beta2}, {"eps", eps}, {"warmup", warmup}, {"clip_eps", clip_eps}, {"kl_beta", kl_beta},
              {"kl_steps", kl_steps}, {"grad_clip", grad_clip}, {"reward", reward}, {"eta", eta},
              {"high_entropy_frac", high_entropy_frac}, {"logprob", logprob}, {"score_scale", score_scale},
              {"seed", seed}, {"checkpoint_every", checkpoint_every}, {"log_every", log_every}, {"limit", limit},
              {"threads", threads}, {"device", device}};
}

GrpoConfig GrpoConfig::from_json(const json& j) {
  check_config_keys(j, keys(), "grpo config");
  GrpoConfig c;
  try {
    auto s = [&](const char* k, std::string& v) { if (j.contains(k)) v = j.at(k).get<std::string>(); };
    auto i = [&](const char* k, int64_t& v) { if (j.contains(k)) v = j.at(k).get<int64_t>(); };
    auto d = [&](const char* k, double& v) { if (j.contains(k)) v = j.at(k).get<double>(); };
    s("model", c.model); s("traces", c.traces); s("init", c.init); i("budget", c.budget); i("window", c.window);
    s("variant", c.variant); i("steps", c.steps); i("sequences_per_step", c.sequences_per_step);
    i("group_size", c.group_size); i("rollout_rows", c.rollout_rows); d("lr", c.lr); d("beta1", c.beta1);
    d("beta2", c.beta2); d("eps", c.eps); i("warmup", c.warmup); d("clip_eps", c.clip_eps); d("kl_beta", c.kl_beta);
    i("kl_steps", c.kl_steps); d("grad_clip", c.grad_clip); s("reward", c.reward); d("eta", c.eta);
    d("high_entropy_frac", c.high_entropy_frac); s("logprob", c.logprob);
    d("score_scale", c.score_scale);
    if (j.contains("seed")) c.seed = j.at("seed").get<uint64_t>();
    i("checkpoint_every", c.checkpoint_every); i("log_every", c.log_every); i("limit", c.limit);
    i("threads", c.threads); s("device", c.device);
  } catch (const json::exception& e) {
    throw InvalidArgument(fmt::format("grpo config: wrong value type ({})", e.what()));
  }
  FKV_CHECK_ARG(c.variant == "intended" || c.variant == "parity", "grpo config: variant must be intended or parity, got '{}'",
                c.variant);
  FKV_CHECK_ARG(c.reward == "delta_sq_threshold" || c.reward == "low_entropy_loss",
                "grpo config: reward must be delta_sq_threshold (the Qwen3 code, the paper) or low_entropy_loss (the "
                "Qwen2 code), got '{}'",
                c.reward);
  FKV_CHECK_ARG(c.logprob == "independent" || c.logprob == "plackett_luce",
                "grpo config: logprob must be independent (the official loss) or plackett_luce, got '{}'", c.logprob);
  FKV_CHECK_ARG(c.steps > 0 && c.sequences_per_step > 0 && c.group_size >= 2 && c.rollout_rows > 0,
                "grpo config: need steps > 0, sequences_per_step > 0, group_size >= 2 (advantages are relative to the "
                "group), rollout_rows > 0");
  FKV_CHECK_ARG(c.budget > 0 && c.window > 0 && c.budget % c.window == 0,
                "grpo config: budget {} must be a positive multiple of window {}", c.budget, c.window);
  FKV_CHECK_ARG(c.lr >= 0 && std::isfinite(c.lr) && c.warmup >= 1 && c.clip_eps > 0 && c.kl_beta >= 0 &&
                    c.kl_steps >= 0 && c.grad_clip > 0 && c.eta >= 0 && c.high_entropy_frac >= 0 &&
                    c.high_entropy_frac < 1,
                "grpo config: need lr >= 0, warmup >= 1, clip_eps > 0, kl_beta >= 0, kl_steps >= 0, grad_clip > 0, "
                "eta >= 0, 0 <= high_entropy_frac < 1");
  FKV_CHECK_ARG(c.score_scale > 0 && std::isfinite(c.score_scale),
                "grpo config: score_scale must be a finite number > 0 (1 = the paper's sampler), got {}",
                c.score_scale);
  FKV_CHECK_ARG(c.checkpoint_every > 0 && c.log_every > 0 && c.threads > 0 && c.limit >= 0,
                "grpo config: checkpoint_every, log_every, threads must be > 0, limit >= 0");
  return c;
}

// ---- reward, advantage, objective -------------------------------------------------------------------------------

Reward compute_reward(const at::Tensor& lm_in, const at::Tensor& full_in, const at::Tensor& ent_in, int64_t first,
                      const std::string& kind, double eta, double frac) {
  FKV_CHECK_ARG(lm_in.dim() == 1 && lm_in.sizes() == full_in.sizes() && lm_in.sizes() == ent_in.sizes(),
                "reward: lm_nll, full_nll and entropy must be [T-1] vectors of one length");
  at::Tensor lm = lm_in.to(at::kDouble).contiguous(), full = full_in.to(at::kDouble).contiguous(),
             ent = ent_in.to(at::kDouble).contiguous();
  const double* l = lm.data_ptr<double>();
  const double* f = full.data_ptr<double>();
  const double* e = ent.data_ptr<double>();
  const int64_t n = lm.size(0);
  Reward r;
  std::vector<int64_t> tail;
  for (int64_t t = std::max<int64_t>(0, first); t < n; ++t) tail.push_back(t);
  r.tail = static_cast<int64_t>(tail.size());
  // highest entropy first; equal entropy: the earlier position first (stable)
  std::stable_sort(tail.begin(), tail.end(), [&](int64_t a, int64_t b) { return e[a] > e[b]; });
  const int64_t nh = static_cast<int64_t>(std::floor(frac * static_cast<double>(r.tail)));
  double sum = 0, dsum = 0;
  for (size_t i = static_cast<size_t>(nh); i < tail.size(); ++i) {
    const int64_t t = tail[i];
    FKV_CHECK(std::isfinite(l[t]) && std::isfinite(f[t]), "reward: non-finite NLL at position {}", t);
    const double d = l[t] - f[t];
    dsum += d;
    if (kind == "low_entropy_loss") {
      sum += l[t];
    } else {
      if (d > eta) {
        sum += d * d;
        ++r.above;
      }
    }
    ++r.low;
  }
  if (r.low > 0) {
    r.value = -sum / static_cast<double>(r.low);
    r.mean_delta = dsum / static_cast<double>(r.low);
  }
  return r;
}

std::vector<double> group_advantages(const std::vector<double>& r) {
  const double n = static_cast<double>(r.size());
  double mean = 0, var = 0;
  for (double x : r) mean += x / n;
  for (double x : r) var += (x - mean) * (x - mean) / n;
  const double sd = std::sqrt(var);
  std::vector<double> a;
  for (double x : r) a.push_back((x - mean) / (sd + 1e-8));
  return a;
}

at::Tensor drop_logprobs(const at::Tensor& phi, const at::Tensor& drops_in, const at::Tensor& pool, bool pl) {
  FKV_CHECK_ARG(phi.dim() == 2 && drops_in.dim() == 2 && phi.size(0) == drops_in.size(0),
                "drop_logprobs: phi [R, C] and drops [R, D] expected");
  at::Tensor drops = drops_in.to(at::kLong);
  if (!pl) return at::log_softmax(phi, 1).gather(1, drops);
  FKV_CHECK_ARG(pool.dim() == 2 && pool.size(0) == phi.size(0), "drop_logprobs: pool [R, P] expected");
  at::Tensor avail = at::zeros(phi.sizes(), at::kBool).scatter(1, pool.to(at::kLong), true);
  std::vector<at::Tensor> out;
  for (int64_t k = 0; k < drops.size(1); ++k) {
    at::Tensor dk = drops.narrow(1, k, 1);  // [R, 1]
    at::Tensor lse = at::logsumexp(phi.masked_fill(avail.logical_not(), -INFINITY), 1, /*keepdim=*/true);
    out.push_back(phi.gather(1, dk) - lse);
    avail = avail.scatter(1, dk, false);
  }
  return at::cat(out, 1);
}

void SurrogateStats::add(const SurrogateStats& o) {
  n += o.n;
  clipped += o.clipped;
  rho_sum += o.rho_sum;
  rho_min = std::min(rho_min, o.rho_min);
  rho_max = std::max(rho_max, o.rho_max);
  kl_sum += o.kl_sum;
}

at::Tensor surrogate_loss(const at::Tensor& lp_new, const at::Tensor& lp_old, const at::Tensor& lp_ref, double adv,
                          double eps, double beta, SurrogateStats* st) {
  if (lp_new.numel() == 0) return (lp_new * 0).sum();
  at::Tensor rho = at::exp(at::clamp(lp_new - lp_old, -10.0, 10.0));
  at::Tensor pg = -at::minimum(rho * adv, at::clamp(rho, 1.0 - eps, 1.0 + eps) * adv).mean();
  at::Tensor d = lp_ref - lp_new;
  at::Tensor kl = (at::expm1(d) - d).mean();  // = exp(d) - d - 1, without fp32 cancellation near d = 0
  if (st) {
    at::Tensor r = rho.detach().to(at::kDouble);
    const double n = static_cast<double>(r.numel());
    st->n += n;
    st->clipped += ((r < 1.0 - eps) | (r > 1.0 + eps)).sum().item<double>();
    st->rho_sum += r.sum().item<double>();
    st->rho_min = std::min(st->rho_min, r.min().item<double>());
    st->rho_max = std::max(st->rho_max, r.max().item<double>());
    st->kl_sum += kl.detach().item<double>() * n;
  }
  return beta != 0.0 ? pg + beta * kl : pg + 0.0 * kl;
}

double surrogate_loss_reference(const at::Tensor& a_in, const at::Tensor& b_in, const at::Tensor& c_in, double adv,
                                double eps, double beta) {
  at::Tensor a = a_in.detach().to(at::kDouble).contiguous().flatten(), b = b_in.detach().to(at::kDouble).contiguous().flatten(),
             c = c_in.detach().to(at::kDouble).contiguous().flatten();
  const int64_t n = a.numel();
  if (n == 0) return 0;
  double pg = 0, kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double ln = a.data_ptr<double>()[i], lo = b.data_ptr<double>()[i], lr = c.data_ptr<double>()[i];
    const double rho = std::exp(std::min(10.0, std::max(-10.0, ln - lo)));
    const double clipped = std::min(1.0 + eps, std::max(1.0 - eps, rho));
    pg += -std::min(rho * adv, clipped * adv);
    kl += std::expm1(lr - ln) - (lr - ln);
  }
  return pg / n + beta * kl / n;
}

double grpo_lr_factor(int64_t k, int64_t warmup) {
  return k <= warmup ? static_cast<double>(k + 1) / static_cast<double>(warmup) : 1.0;
}

// ---- rollouts ---------------------------------------------------------------------------------------------------

uint64_t rollout_stream(uint64_t seed, int64_t step, int64_t trace_index, int64_t g) {
  uint64_t h = evict::splitmix64(seed ^ 0x6772706fULL);  // "grpo"
  h = evict::splitmix64(h ^ static_cast<uint64_t>(step));
  h = evict::splitmix64(h ^ static_cast<uint64_t>(trace_index));
  return evict::splitmix64(h ^ static_cast<uint64_t>(g));
}

namespace {

// The `foresightkv` sampler with the judge, recording every step s < S of every row into its Rollout.
class RolloutPolicy final : public evict::Policy {
 public:
  RolloutPolicy(const judge::Judge& j, const RolloutSpec& spec, std::vector<Rollout>* out, int64_t steps,
                std::vector<char>* seen)
      : j_(j), spec_(spec), out_(out), steps_(steps), seen_(seen) {
    fo_.parity = spec.parity;
    fo_.segment = spec.window;
  }
  std::string name() const override { return "foresightkv"; }
  bool needs_attention() const override { return true; }
  bool needs_accumulators() const override { return true; }
  bool first_event_sees_history(evict::Variant) const override { return true; }
  at::Tensor select(const evict::LayerView& v) override {
    FKV_CHECK(out_, "grpo rollout: an eviction event inside the shared prefix (internal error)");
    const int64_t C = v.n - v.protect, d = v.n - v.budget;
    c10::AutoGradMode no_grad(false);
    at::Tensor x = judge::build_features(v, C, fo_);  // [H, C, F]
    at::Tensor phi = j_.score(v.layer, x).contiguous();  // [H, C]
    at::Tensor pool;  // the slots the sampler drew from: the top min(2d, C) by phi, ties to the lower slot
    at::Tensor drops =
        judge::choose_drops(phi, d, /*sampled=*/true, spec_.parity, spec_.seed, v.stream, v.layer, v.event, &pool);
    if (v.event < steps_) {
      FKV_CHECK(C == spec_.budget && d == spec_.window,
                "grpo rollout: event {} of layer {} has {} candidates and {} drops (expected B = {}, W = {})", v.event,
                v.layer, C, d, spec_.budget, spec_.window);
      Rollout& r = (*out_)[v.seq];
      const int64_t H = x.size(0), D2 = r.states.kv.size(3);
      at::Tensor pos = v.pos.narrow(1, 0, C);
      r.states.pos[v.layer][v.event].copy_(pos);
      r.states.stats[v.layer][v.event].copy_(x.narrow(2, D2, x.size(2) - D2));
      at::Tensor table = r.states.kv[v.layer];
      at::Tensor p = pos.to(at::kLong);
      for (int64_t h = 0; h < H; ++h) table[h].index_copy_(0, p[h], x[h].narrow(1, 0, D2));
      r.drops[v.layer][v.event].copy_(drops);
      r.phi_old[v.layer][v.event].copy_(phi);
      const int64_t P = r.pool.size(3);
      FKV_CHECK(pool.size(1) == P, "grpo rollout: a pool of {} slots (expected {})", pool.size(1), P);
      r.pool[v.layer][v.event].copy_(pool);
      for (int64_t h = 0; h < H; ++h) {
        const float* ph = phi[h].data_ptr<float>();
        const int64_t* idx = pool[h].data_ptr<int64_t>();
        double mx = -1e300, z = 0, ez = 0;
        for (int64_t i = 0; i < P; ++i) mx = std::max(mx, static_cast<double>(ph[idx[i]]));
        for (int64_t i = 0; i < P; ++i) {
          const double a = ph[idx[i]] - mx, w = std::exp(a);
          z += w;
          ez += w * a;
        }
        r.drop_entropy += std::log(z) - ez / z;  // entropy of softmax over the pool; averaged at the end
      }
      (*seen_)[(v.seq * static_cast<int64_t>(seen_->size() / out_->size())) + v.layer * steps_ + v.event] = 1;
    }
    return judge::keep_from_drops(drops, v.n);
  }

 private:
  const judge::Judge& j_;
  RolloutSpec spec_;
  std::vector<Rollout>* out_;
  int64_t steps_;
  std::vector<char>* seen_;
  judge::FeatureOptions fo_;
};

evict::EvictionConfig rollout_config(const RolloutSpec& s) {
  evict::EvictionConfig c;
  c.policy = "golden";  // replaced by the RolloutPolicy
  c.budget = s.budget;
  c.window = s.window;
  c.query_window = s.window;
  c.variant = s.parity ? evict::Variant::Parity : evict::Variant::Intended;
  c.trigger = evict::Trigger::Length;
  return c.resolved();
}

}  // namespace

std::vector<Rollout> run_rollouts(const model::Transformer& m, const trace::Trace& t, const judge::Judge& j,
                                  const RolloutSpec& spec, const std::vector<uint64_t>& streams) {
  const auto& mc = m.config();
  const int64_t T = t.length(), B = spec.budget, W = spec.window, L = mc.n_layer, H = mc.n_head_kv;
  const int64_t D2 = 2 * mc.head_dim, G8 = 8 * (mc.n_head_q / mc.n_head_kv);
  const int64_t S = golden::golden_steps(T, B, W), P = std::min(2 * W, B);
  FKV_CHECK_ARG(S >= 1, "grpo: trace '{}' ({} tokens) has no eviction step at B = {}, W = {}", t.id, T, B, W);
  const evict::EvictionConfig cfg = rollout_config(spec);
  std::vector<Rollout> all;
  c10::AutoGradMode no_grad(false);
  for (size_t c0 = 0; c0 < streams.size(); c0 += static_cast<size_t>(spec.rows)) {
    const int64_t n = static_cast<int64_t>(std::min(streams.size(), c0 + static_cast<size_t>(spec.rows)) - c0);
    std::vector<Rollout> rows(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) {
      Rollout& x = rows[r];
      x.index = static_cast<int64_t>(c0) + r;
      x.stream = streams[c0 + r];
      x.states.id = t.id;
      x.states.length = T;
      x.states.steps = S;
      x.states.kv = at::zeros({L, H, T, D2}, at::kFloat);
      x.states.pos = at::zeros({L, S, H, B}, at::kInt);
      x.states.stats = at::zeros({L, S, H, B, G8}, at::kFloat);
      x.drops = at::zeros({L, S, H, W}, at::kLong);
      x.pool = at::zeros({L, S, H, P}, at::kLong);
      x.phi_old = at::zeros({L, S, H, B}, at::kFloat);
      x.lm_nll = at::zeros({T - 1}, at::kFloat);
    }
    std::vector<char> seen(static_cast<size_t>(n * L * S), 0);
    evict::Evictor ev(cfg, n, L, mc.n_head_q, H, mc.head_dim);
    ev.set_policy(std::make_unique<RolloutPolicy>(j, spec, &rows, S, &seen));
    const int64_t cap = std::min(T + W, ev.config().capacity_for_chunk(W));
    cache::KvCache kv = m.make_cache(n, cap);
    runtime::EvictorTaps tap(ev);
    int64_t start = 0;
    auto chunk_ids = [&](int64_t s0, int64_t nt, int64_t rows_n) {
      at::Tensor ids = at::empty({rows_n, nt}, at::kLong), pos = at::empty({rows_n, nt}, at::kLong);
      for (int64_t r = 0; r < rows_n; ++r)
        for (int64_t i = 0; i < nt; ++i) {
          ids[r][i] = t.tokens[s0 + i];
          pos[r][i] = s0 + i;
        }
      return std::make_pair(ids, pos);
    };
    if (spec.share_prefix && B >= W) {
      // the first B tokens: one row, then copied (cache and evictor state) into every row
      evict::Evictor ev1(cfg, 1, L, mc.n_head_q, H, mc.head_dim);
      ev1.set_policy(std::make_unique<RolloutPolicy>(j, spec, nullptr, S, nullptr));
      cache::KvCache kv1 = m.make_cache(1, cap);
      runtime::EvictorTaps tap1(ev1);
      for (; start < B; start += W) {
        auto [ids, pos] = chunk_ids(start, W, 1);
        ev1.begin_forward(pos, {W});
        m.forward(ids, pos, kv1, model::Logits::None, &tap1);
        ev1.end_forward(kv1);
      }
      for (int64_t r = 0; r < n; ++r) {
        kv.copy_sequence(r, kv1, 0);
        ev.import_sequence(r, ev1, 0);
      }
    }
    for (int64_t r = 0; r < n; ++r) ev.set_stream(r, rows[r].stream);
    for (; start < T; start += W) {
      const int64_t nt = std::min(W, T - start);
      auto [ids, pos] = chunk_ids(start, nt, n);
      ev.begin_forward(pos, std::vector<int64_t>(static_cast<size_t>(n), nt));
      at::Tensor lg = m.forward(ids, pos, kv, model::Logits::All, &tap);  // [n, nt, V]
      const int64_t m_rows = std::min(nt, T - 1 - start);                 // positions with a next token
      if (m_rows > 0) {
        at::Tensor lp = at::log_softmax(lg.narrow(1, 0, m_rows), -1);
        std::vector<int64_t> y(t.tokens.begin() + start + 1, t.tokens.begin() + start + 1 + m_rows);
        at::Tensor yt = at::tensor(y, at::kLong).view({1, m_rows, 1}).expand({n, m_rows, 1});
        at::Tensor nll = -lp.gather(2, yt).squeeze(2);  // [n, m_rows]
        for (int64_t r = 0; r < n; ++r) rows[r].lm_nll.narrow(0, start, m_rows).copy_(nll[r]);
      }
      ev.end_forward(kv);
    }
    for (char c : seen) FKV_CHECK(c, "grpo rollout of '{}': not every (layer, step) was recorded", t.id);
    for (auto& r : rows) {
      r.drop_entropy /= static_cast<double>(L * S * H);
      all.push_back(std::move(r));
    }
  }
  return all;
}

at::Tensor rollout_loss(const judge::Judge& j, const judge::Judge& ref, const Rollout& r, double adv,
                        const GrpoConfig& cfg, double beta, SurrogateStats* st) {
  const int64_t L = r.states.pos.size(0), S = r.states.pos.size(1), H = r.states.pos.size(2), B = r.states.pos.size(3);
  const int64_t D = r.drops.size(3), P = r.pool.size(3);
  const bool pl = cfg.logprob == "plackett_luce";
  at::Tensor loss;
  for (int64_t l = 0; l < L; ++l) {
    at::Tensor x = assemble_features(r.states, l);  // [H, S*B, F]
    auto rows = [&](const at::Tensor& phi) { return phi.view({H, S, B}).transpose(0, 1).reshape({S * H, B}); };
    at::Tensor phi_new = rows(j.score(l, x));
    at::Tensor drops = r.drops[l].reshape({S * H, D}), pool = r.pool[l].reshape({S * H, P});
    at::Tensor lp_ref, lp_old;
    {
      c10::AutoGradMode no_grad(false);
      lp_ref = drop_logprobs(rows(ref.score(l, x)), drops, pool, pl);
      lp_old = drop_logprobs(r.phi_old[l].reshape({S * H, B}), drops, pool, pl);
    }
    at::Tensor lp_new = drop_logprobs(phi_new, drops, pool, pl);
    at::Tensor ll = surrogate_loss(lp_new, lp_old, lp_ref, adv, cfg.clip_eps, beta, st);
    loss = loss.defined() ? loss + ll : ll;
  }
  return loss;
}

// ---- training loop ----------------------------------------------------------------------------------------------

GrpoResult run_grpo(const GrpoConfig& cfg, const std::string& out, bool resume, int64_t stop_after) {
  at::set_num_threads(static_cast<int>(cfg.threads));
  const double t_start = now_seconds();
  std::unique_ptr<Comm> comm = Comm::from_env();
  const int64_t rank = comm->rank(), world = comm->world();
  const bool lead = rank == 0;
  FKV_CHECK_ARG(cfg.group_size % world == 0,
                "grpo: group_size {} must split evenly over {} ranks (each rank runs group_size / world rollouts per "
                "sequence); use a group_size that is a multiple of the number of processes",
                cfg.group_size, world);
  FKV_CHECK_ARG(!cfg.model.empty() && !cfg.traces.empty() && !cfg.init.empty(),
                "grpo: config needs 'model', 'traces' and 'init' (the SFT judge) (or --model, --traces, --init)");
  // under torchrun, a bare "cuda" is each rank's own GPU (cuda:LOCAL_RANK)
  const std::string device = rank_device_from_env(cfg.device);
  load_options(device);  // an unusable --device fails here, before anything is written
  GrpoResult res;
  const std::string ckpt = out + "/checkpoint.safetensors", log_path = out + "/log.jsonl";
  if (lead) {
    fs::create_directories(out);
    FKV_CHECK_ARG(resume || !file_exists(ckpt),
                  "{} already holds a training run (checkpoint.safetensors); pass --resume to continue it or use another "
                  "--output",
                  out);
  }
  const std::string model_path = model::resolve_model_path(cfg.model);
  const std::string model_sha = harness::model_sha256(model_path);
  auto model = model::Transformer::load(model_path, load_options(device));
  const auto& mc = model->config();
  if (world > 1) FKV_LOG_INFO("grpo: rank {} of {} on {}", rank, world, device);

  // reference (frozen SFT judge) and the policy
  judge::Judge reference = judge::Judge::load(cfg.init);
  reference.check_model({mc.n_layer, mc.n_head_kv, mc.head_dim, mc.n_head_q / mc.n_head_kv, 0}, cfg.init);
  {
    const std::string jv = reference.meta().value("variant", std::string());
    FKV_CHECK_ARG(jv.empty() || jv == cfg.variant, "grpo: the init judge {} uses '{}' features, the config '{}'",
                  cfg.init, jv, cfg.variant);
    const std::string js = reference.meta().value("model_sha256", std::string());
    FKV_CHECK_ARG(js.empty() || js == model_sha, "grpo: the init judge {} was trained for another model (sha256 {})",
                  cfg.init, js.substr(0, 12));
  }
  const std::string init_sha = harness::model_sha256(cfg.init);
  // the policy starts as a copy of the (scaled) reference; the judge files record the cumulative scale
  if (cfg.score_scale != 1.0) reference.scale_output(cfg.score_scale);

  // traces with per-token NLL/entropy and at least one eviction step
  trace::TraceSet set = trace::read_trace_set(cfg.traces);
  {
    const std::string have = set.header.value("model", json::object()).value("sha256", std::string());
    FKV_CHECK_ARG(have.empty() || have == model_sha, "{} was labelled with another model (sha256 {})", cfg.traces,
                  have.substr(0, 12));
  }
  std::vector<const trace::Trace*> pool;
  for (const auto& t : set.traces) {
    if (cfg.limit > 0 && static_cast<int64_t>(pool.size()) >= cfg.limit) break;
    if (golden::golden_steps(t.length(), cfg.budget, cfg.window) < 1) continue;
    FKV_CHECK_ARG(t.nll.defined() && t.entropy.defined(),
                  "trace '{}' of {} has no full-cache NLL/entropy (the reward needs them): run `fkv-trace label`", t.id,
                  cfg.traces);
    pool.push_back(&t);
  }
  FKV_CHECK_ARG(!pool.empty(), "grpo: no trace of {} is long enough for an eviction at B = {}, W = {}", cfg.traces,
                cfg.budget, cfg.window);

  judge::Judge j;
  Adam opt;
  opt.beta1 = cfg.beta1;
  opt.beta2 = cfg.beta2;
  opt.eps = cfg.eps;
  json train_cfg = cfg.to_json();
  json meta = {{"kind", "grpo"},        {"model_sha256", model_sha}, {"model", model_path},
               {"variant", cfg.variant}, {"budget", cfg.budget},     {"window", cfg.window},
               {"training", train_cfg},  {"init_sha256", init_sha},  {"train_traces", pool.size()},
               {"world_size", world},    {"score_scale", reference.meta().value("score_scale", 1.0)}};
  int64_t start = 0;
  if (resume && file_exists(ckpt)) {
    j = judge::Judge::load(ckpt);
    const json& cm = j.meta();
    json a = cm.value("training", json::object()), b = train_cfg;
    for (const char* k : {"checkpoint_every", "log_every", "threads", "device"}) {
      a.erase(k);
      b.erase(k);
    }
    FKV_CHECK_ARG(a == b, "--resume: {} was trained with another config ({}); this run: {}", ckpt, a.dump(), b.dump());
    FKV_CHECK_ARG(cm.value("init_sha256", "") == init_sha, "--resume: {} started from another init judge", ckpt);
    start = cm.value("step", int64_t{0});
    opt.init(j.parameters());
    load_adam_state(opt, j, ckpt);
    if (lead) truncate_log(log_path, start);
    FKV_LOG_INFO("grpo: resuming {} at step {}", out, start);
  } else {
    j = reference.clone();
    opt.init(j.parameters());
    if (lead) write_file_atomic(log_path, "");
    if (lead) save_run_state(j, opt, out, meta, 0, true, false);  // step_000000: the policy before any update
  }
  j.set_requires_grad(true);
  const std::vector<at::Tensor> params = j.parameters();
  std::ofstream log;
  if (lead) {
    log.open(log_path, std::ios::app);
    FKV_CHECK(log.good(), "cannot append to {}", log_path);
  }
  auto save_all = [&](int64_t step, bool final_too) {
    if (lead) save_run_state(j, opt, out, meta, step, step % cfg.checkpoint_every == 0, final_too);
  };

  RolloutSpec spec;
  spec.budget = cfg.budget;
  spec.window = cfg.window;
  spec.parity = cfg.variant == "parity";
  spec.seed = cfg.seed;
  // rollout_rows is a speed knob (rows per batched forward), not part of the method: a rank runs its
  // group_size / world rollouts of a sequence in forwards of the largest divisor of that count not above it.
  const int64_t per_rank = cfg.group_size / world, g0 = rank * per_rank;
  int64_t rows = std::min(cfg.rollout_rows, per_rank);
  while (per_rank % rows != 0) --rows;
  if (lead && rows != cfg.rollout_rows)
    FKV_LOG_INFO("grpo: {} rollouts per sequence on each of {} rank(s): {} rows per forward (rollout_rows {})",
                 per_rank, world, rows, cfg.rollout_rows);
  spec.rows = rows;
  const int64_t n_roll = cfg.sequences_per_step * cfg.group_size;
  DataOrder order(cfg.seed, static_cast<int64_t>(pool.size()));
  for (int64_t k = start; k < cfg.steps; ++k) {
    const double beta = k < cfg.kl_steps ? cfg.kl_beta : 0.0;
    std::vector<int64_t> seqs;
    if (lead)
      for (int64_t i = 0; i < cfg.sequences_per_step; ++i) seqs.push_back(order.item(k * cfg.sequences_per_step + i));
    seqs = comm->broadcast(seqs);
    FKV_CHECK(static_cast<int64_t>(seqs.size()) == cfg.sequences_per_step, "grpo: rank {} got {} sequences", rank,
              seqs.size());
    // Gradients are summed per rollout index g over the step's sequences (in step order), then over g in g
    // order: the same floating-point sum for any world size and any rows per forward. (It matters beyond
    // rounding: the output bias's gradient is zero up to rounding, as every score of a head shifts with it, and
    // Adam turns rounding noise of any size into steps of up to lr.)
    std::vector<std::vector<at::Tensor>> slot_grads(static_cast<size_t>(per_rank));
    for (auto& sg : slot_grads)
      for (const auto& p : params) sg.push_back(at::zeros_like(p));
    double t_roll = 0, t_upd = 0, tokens = 0, ent_sum = 0;
    SurrogateStats st;
    std::vector<double> rewards_all, adv_all, delta_all;
    const int64_t bytes0 = comm->bytes_sent();
    for (int64_t i = 0; i < cfg.sequences_per_step; ++i) {
      const trace::Trace& t = *pool[static_cast<size_t>(seqs[i])];
      std::vector<uint64_t> streams;
      for (int64_t g = g0; g < g0 + per_rank; ++g) streams.push_back(rollout_stream(cfg.seed, k, seqs[i], g));
      double t0 = now_seconds();
      std::vector<Rollout> rolls = run_rollouts(*model, t, j, spec, streams);
      t_roll += now_seconds() - t0;
      std::vector<double> mine;
      for (const auto& r : rolls) {
        const Reward rw = compute_reward(r.lm_nll, t.nll, t.entropy, cfg.budget + cfg.window, cfg.reward, cfg.eta,
                                         cfg.high_entropy_frac);
        mine.push_back(rw.value);
        mine.push_back(rw.mean_delta);
        tokens += static_cast<double>(t.length() - cfg.budget);
        ent_sum += r.drop_entropy;
      }
      const std::vector<double> both = comm->all_gather(mine);  // (reward, mean delta) per rollout, g order
      std::vector<double> rewards;
      for (size_t q = 0; q < both.size(); q += 2) {
        rewards.push_back(both[q]);
        delta_all.push_back(both[q + 1]);
      }
      const std::vector<double> adv = group_advantages(rewards);
      rewards_all.insert(rewards_all.end(), rewards.begin(), rewards.end());
      adv_all.insert(adv_all.end(), adv.begin(), adv.end());
      t0 = now_seconds();
      for (size_t q = 0; q < rolls.size(); ++q) {
        std::vector<at::Tensor>& sg = slot_grads[q];
        for (size_t pi = 0; pi < params.size(); ++pi) params[pi].mutable_grad() = sg[pi];
        at::Tensor loss = rollout_loss(j, reference, rolls[q], adv[static_cast<size_t>(g0) + q], cfg, beta, &st) /
                          static_cast<double>(n_roll);
        FKV_CHECK(std::isfinite(loss.item<double>()), "grpo: non-finite loss at step {} (trace {})", k + 1, t.id);
        loss.backward();
        for (size_t pi = 0; pi < params.size(); ++pi) sg[pi] = params[pi].grad();
      }
      t_upd += now_seconds() - t0;
    }
    {
      std::vector<at::Tensor> mine;
      for (const auto& sg : slot_grads) mine.insert(mine.end(), sg.begin(), sg.end());
      const std::vector<at::Tensor> every = comm->all_gather_tensors(mine);  // rollouts in g order
      const size_t np = params.size();
      for (size_t pi = 0; pi < np; ++pi) {
        at::Tensor g = every[pi].clone();
        for (size_t b = 1; b < every.size() / np; ++b) g.add_(every[b * np + pi]);
        params[pi].mutable_grad() = g;
      }
    }
    const std::vector<double> sv = comm->all_gather({st.n, st.clipped, st.rho_sum, st.rho_min, st.rho_max, st.kl_sum,
                                                     ent_sum, tokens, t_roll});
    SurrogateStats tot;
    double ent_tot = 0, tok_tot = 0, roll_max = 0;
    for (size_t q = 0; q < sv.size(); q += 9) {
      tot.add({sv[q], sv[q + 1], sv[q + 2], sv[q + 3], sv[q + 4], sv[q + 5]});
      ent_tot += sv[q + 6];
      tok_tot += sv[q + 7];
      roll_max = std::max(roll_max, sv[q + 8]);
    }
    const double gnorm = clip_grad_norm(params, cfg.grad_clip);
    const double lr = cfg.lr * grpo_lr_factor(k, cfg.warmup);
    const double t_opt = now_seconds();
    opt.step(params, lr);
    t_upd += now_seconds() - t_opt;
    const int64_t step = k + 1;
    auto mean_sd = [](const std::vector<double>& v) {
      double m = 0, s = 0;
      for (double x : v) m += x / v.size();
      for (double x : v) s += (x - m) * (x - m) / v.size();
      return std::make_pair(m, std::sqrt(s));
    };
    const auto [rm, rs] = mean_sd(rewards_all);
    const auto [am, as] = mean_sd(adv_all);
    const auto [dm, ds] = mean_sd(delta_all);
    json line = {{"step", step},
                 {"reward_mean", rm},
                 {"reward_std", rs},
                 {"reward_min", *std::min_element(rewards_all.begin(), rewards_all.end())},
                 {"reward_max", *std::max_element(rewards_all.begin(), rewards_all.end())},
                 {"adv_mean", am},
                 {"adv_std", as},
                 {"adv_min", *std::min_element(adv_all.begin(), adv_all.end())},
                 {"adv_max", *std::max_element(adv_all.begin(), adv_all.end())},
                 {"mean_delta_nll_low", dm},
                 {"kl", tot.n > 0 ? tot.kl_sum / tot.n : 0.0},
                 {"kl_beta", beta},
                 {"clip_frac", tot.n > 0 ? tot.clipped / tot.n : 0.0},
                 {"rho_mean", tot.n > 0 ? tot.rho_sum / tot.n : 1.0},
                 {"rho_min", tot.rho_min},
                 {"rho_max", tot.rho_max},
                 {"drop_entropy", ent_tot / static_cast<double>(n_roll)},
                 {"lr", lr},
                 {"grad_norm", gnorm},
                 {"rollouts", n_roll},
                 {"rollout_tokens", tok_tot},
                 {"rollout_tokens_per_s", tok_tot / std::max(1e-9, roll_max) },
                 {"rollout_seconds", t_roll},
                 {"update_seconds", t_upd},
                 {"bytes_sent", comm->bytes_sent() - bytes0},
                 {"world_size", world}};
    (void)ds;
    if (lead && (step % cfg.log_every == 0 || step == cfg.steps)) {
      log << line.dump() << "\n";
      log.flush();
      std::cerr << fmt::format("\rgrpo step {}/{}  reward {:.4f} ± {:.4f}  kl {:.2e}  |g| {:.3f}  rollout {:.1f} s  "
                               "update {:.1f} s   ",
                               step, cfg.steps, rm, rs, line["kl"].get<double>(), gnorm, t_roll, t_upd)
                << std::flush;
    }
    res.last_log = line;
    if (step % cfg.checkpoint_every == 0 && step != cfg.steps) save_all(step, false);
    ++res.steps_run;
    if (stop_after > 0 && step == stop_after && step != cfg.steps) {
      res.seconds = now_seconds() - t_start;
      return res;
    }
  }
  if (lead) std::cerr << "\n";
  save_all(cfg.steps, true);
  if (lead) res.final_path = out + "/final.safetensors";  // the other ranks write nothing
  res.seconds = now_seconds() - t_start;
  return res;
}

}  // namespace fkv::train
