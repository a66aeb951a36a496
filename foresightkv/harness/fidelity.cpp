#include "foresightkv/harness/fidelity.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <numeric>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/core/timer.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/evict/policy.h"
#include "foresightkv/judge/policy.h"
#include "foresightkv/runtime/evictor_taps.h"

namespace fkv::harness {
namespace {

struct RunOut {
  std::vector<at::Tensor> logits;  // per trace [n_scored, V]: logits at positions prompt-1 .. T-2
  int64_t events = 0;
  double seconds = 0, eviction_seconds = 0;
  std::shared_ptr<cache::KvCache> cache;  // the final cache (kept for the full run: its prefix is shared)
};

// Teacher-forced chunked run of a batch of traces under `cfg` (policy "full": no eviction). With `full`, the run
// starts at chunk boundary `start`: the cache is seeded with the full run's first `start` entries and the logits
// of earlier positions are the full run's. Exact, because nothing can be evicted before the cache holds B + L
// entries (start <= B) and the chunks (hence every floating-point operation) are the same.
RunOut run_chunks(const model::Transformer& m, const std::vector<const trace::Trace*>& batch,
                  const evict::EvictionConfig& cfg, int64_t L, bool kv_f16, const RunOut* full = nullptr,
                  int64_t start_at = 0, const std::function<void(evict::Evictor&)>& prepare = {},
                  bool want_logits = true) {
  const auto& mc = m.config();
  const int64_t n = static_cast<int64_t>(batch.size());
  int64_t Tmax = 0;
  for (const auto* t : batch) Tmax = std::max(Tmax, t->length());
  evict::Evictor ev(cfg, n, mc.n_layer, mc.n_head_q, mc.n_head_kv, mc.head_dim);
  if (ev.enabled() && ev.config().policy == "golden") {
    auto* g = dynamic_cast<evict::GoldenPolicy*>(ev.policy());
    for (int64_t s = 0; s < n; ++s) {
      const trace::GoldenLabels* lb = batch[s]->find_labels(cfg.budget, L);
      FKV_CHECK_ARG(lb != nullptr,
                    "trace '{}' has no golden labels for budget {} window {}; add them with `fkv-trace label "
                    "--budget {} --window {}` (it has: {})",
                    batch[s]->id, cfg.budget, L, cfg.budget, L, [&] {
                      std::string h;
                      for (const auto& x : batch[s]->labels) h += fmt::format("{}x{} ", x.budget, x.window);
                      return h.empty() ? std::string("none") : h;
                    }());
      g->set_labels(s, lb->drops);
    }
  }
  if (prepare) prepare(ev);
  const int64_t cap = ev.enabled() ? std::min(Tmax + L, ev.config().capacity_for_chunk(L)) : Tmax + L;
  auto kvp = std::make_shared<cache::KvCache>(m.make_cache(n, cap, kv_f16 ? at::kHalf : at::kFloat));
  cache::KvCache& kv = *kvp;
  runtime::EvictorTaps tap(ev);
  RunOut out;
  out.cache = kvp;
  if (want_logits)
    for (int64_t s = 0; s < n; ++s)
      out.logits.push_back(at::empty({batch[s]->length() - batch[s]->prompt_len, mc.n_vocab}, at::kFloat));
  const double t0 = now_seconds();
  start_at = std::min(start_at, (Tmax / L) * L);
  if (full && start_at > 0) {
    FKV_CHECK(start_at % L == 0 && start_at <= cap, "fidelity: bad shared prefix {}", start_at);
    const cache::KvCache& src = *full->cache;
    for (int64_t l = 0; l < mc.n_layer; ++l)
      kv.append(l, src.k(l).narrow(2, 0, start_at), src.v(l).narrow(2, 0, start_at),
                src.pos(l).select(1, 0).narrow(1, 0, start_at));
    for (int64_t s = 0; s < n; ++s) {
      const int64_t len = batch[s]->length();
      if (len < start_at) kv.pop_back(s, start_at - len);
      const int64_t p0 = batch[s]->prompt_len - 1, upto = std::min(start_at, len - 1);  // positions p0 .. upto-1
      if (upto > p0 && want_logits) out.logits[s].narrow(0, 0, upto - p0).copy_(full->logits[s].narrow(0, 0, upto - p0));
    }
  } else {
    start_at = 0;
  }
  for (int64_t start = start_at; start < Tmax; start += L) {
    const int64_t T = std::min(L, Tmax - start);
    at::Tensor ids = at::zeros({n, T}, at::kLong), pos = at::empty({n, T}, at::kLong);
    std::vector<int64_t> real(n);
    for (int64_t s = 0; s < n; ++s) {
      const auto& tok = batch[s]->tokens;
      real[s] = std::clamp<int64_t>(batch[s]->length() - start, 0, T);
      for (int64_t i = 0; i < T; ++i) {
        pos[s][i] = start + i;
        if (i < real[s]) ids[s][i] = tok[start + i];
      }
    }
    ev.begin_forward(pos, real);
    at::Tensor lg = m.forward(ids, pos, kv, want_logits ? model::Logits::All : model::Logits::None,
                              ev.enabled() ? &tap : nullptr);  // [n, T, V]
    for (int64_t s = 0; s < n; ++s) {
      if (real[s] < T) kv.pop_back(s, T - real[s]);
      if (!want_logits) continue;
      const int64_t p0 = batch[s]->prompt_len - 1, last = batch[s]->length() - 2;
      for (int64_t i = 0; i < real[s]; ++i) {
        const int64_t q = start + i;
        if (q >= p0 && q <= last) out.logits[s][q - p0].copy_(lg[s][i]);
      }
    }
    ev.end_forward(kv);
  }
  out.seconds = now_seconds() - t0;
  out.events = ev.stats().events;
  out.eviction_seconds = ev.stats().seconds;
  return out;
}

struct TokenStats {
  std::vector<double> nll_full, nll, kl, entropy;
  std::vector<char> top1;
};

}  // namespace

TeacherForcedStats run_teacher_forced(const model::Transformer& m, const std::vector<const trace::Trace*>& batch,
                                      const evict::EvictionConfig& cfg, bool kv_f16,
                                      const std::function<void(evict::Evictor&)>& prepare) {
  judge::register_policies();
  evict::EvictionConfig c = cfg;
  c.trigger = evict::Trigger::Length;
  RunOut r = run_chunks(m, batch, c.resolved(), c.window, kv_f16, nullptr, 0, prepare, /*want_logits=*/false);
  return {r.events, r.seconds, r.eviction_seconds};
}

json FidelityRow::to_json() const {
  return json{{"policy", policy},
              {"variant", variant},
              {"budget", budget},
              {"window", window},
              {"lm_loss_ratio", lm_loss_ratio},
              {"mean_delta_nll", mean_delta_nll},
              {"kl", kl},
              {"top1_agreement", top1_agreement},
              {"low_entropy_loss_increase", low_entropy_loss_increase},
              {"high_entropy_loss_increase", high_entropy_loss_increase},
              {"low_entropy_delta_nll", low_entropy_delta_nll},
              {"high_entropy_delta_nll", high_entropy_delta_nll},
              {"mean_nll", mean_nll},
              {"mean_nll_full", mean_nll_full},
              {"tokens", tokens},
              {"traces", traces},
              {"eviction_events", eviction_events},
              {"seconds", seconds},
              {"eviction_seconds", eviction_seconds},
              {"config", resolved_config}};
}

FidelityReport run_fidelity(const model::Transformer& m, const trace::TraceSet& set, const FidelityOptions& opt) {
  judge::register_policies();
  const int64_t L = opt.base.window;
  FKV_CHECK_ARG(L > 0, "fidelity: --window (eviction interval L) must be > 0");
  FKV_CHECK_ARG(!opt.policies.empty(), "fidelity: no policies given");
  FKV_CHECK_ARG(opt.batch > 0, "fidelity: batch must be > 0");
  const auto& mc = m.config();
  std::vector<const trace::Trace*> traces;
  for (const auto& t : set.traces) {
    if (opt.limit > 0 && static_cast<int64_t>(traces.size()) >= opt.limit) break;
    FKV_CHECK_ARG(t.prompt_len >= 1 && t.prompt_len < t.length(), "trace '{}': needs a prompt and a response",
                  t.id);
    for (int32_t id : t.tokens)
      FKV_CHECK_ARG(id >= 0 && id < mc.n_vocab, "trace '{}': token {} outside the model's vocabulary [0, {}) "
                    "(traces from another model?)", t.id, id, mc.n_vocab);
    traces.push_back(&t);
  }
  // Rows (policy x budget) with resolved configs; validated before any compute.
  struct RowSpec {
    evict::EvictionConfig cfg;
    FidelityRow row;
    TokenStats st;
  };
  std::vector<RowSpec> rows;
  for (const auto& p : opt.policies) {
    if (p == "full") {
      RowSpec r;
      r.cfg = opt.base;
      r.cfg.policy = "full";
      r.row.policy = "full";
      r.row.window = L;
      r.row.variant = evict::to_string(opt.base.variant);
      r.row.resolved_config = r.cfg.resolved().to_json();
      rows.push_back(std::move(r));
      continue;
    }
    for (int64_t b : opt.budgets) {
      RowSpec r;
      r.cfg = opt.base;
      r.cfg.policy = p;
      r.cfg.budget = b;
      r.cfg.trigger = evict::Trigger::Length;  // chunk schedule of spec §A.1, whatever the variant
      r.cfg = r.cfg.resolved();
      judge::resolve_judge(r.cfg, opt.model_path, opt.model_sha256,
                           {mc.n_layer, mc.n_head_kv, mc.head_dim, mc.n_head_q / mc.n_head_kv, 0});
      FKV_CHECK_ARG(p != "golden" || b % L == 0, "golden: budget {} must be a multiple of the window {}", b, L);
      r.row.policy = p;
      r.row.budget = b;
      r.row.window = L;
      r.row.variant = evict::to_string(r.cfg.variant);
      r.row.resolved_config = r.cfg.to_json();
      rows.push_back(std::move(r));
    }
  }
  FKV_CHECK_ARG(!rows.empty(), "fidelity: no (policy, budget) rows (give --budgets for evicting policies)");
  std::string dump;
  FidelityReport rep;
  rep.traces = static_cast<int64_t>(traces.size());
  for (size_t b0 = 0; b0 < traces.size(); b0 += static_cast<size_t>(opt.batch)) {
    std::vector<const trace::Trace*> batch(traces.begin() + b0,
                                           traces.begin() + std::min(traces.size(), b0 + opt.batch));
    evict::EvictionConfig full = opt.base;
    full.policy = "full";
    RunOut ref = run_chunks(m, batch, full, L, opt.kv_f16);
    rep.full_seconds += ref.seconds;
    std::vector<at::Tensor> logp_full, tgt, ent, arg_full, nll_full;
    for (size_t s = 0; s < batch.size(); ++s) {
      const auto* t = batch[s];
      at::Tensor lp = at::log_softmax(ref.logits[s], -1);
      std::vector<int64_t> y(t->tokens.begin() + t->prompt_len, t->tokens.end());
      at::Tensor yt = at::tensor(y, at::kLong).unsqueeze(1);
      logp_full.push_back(lp);
      tgt.push_back(yt);
      nll_full.push_back(-lp.gather(1, yt).squeeze(1));
      ent.push_back(-(lp.exp() * lp).nan_to_num(0.0).sum(1));
      arg_full.push_back(lp.argmax(1));
      rep.tokens += static_cast<int64_t>(y.size());
    }
    for (auto& r : rows) {
      RunOut ev;
      if (r.cfg.policy == "full") {
        ev = ref;  // same chunks, same numbers
      } else {
        // share the full run's prefix up to the last chunk boundary <= B (no eviction can happen before it)
        // (not when the first event observes more than the last chunk's queries: intended accumulators see every
        // query since the start)
        const bool acc_first = evict::make_policy(r.cfg)->first_event_sees_history(r.cfg.variant);
        const int64_t start_at =
            opt.share_prefix && r.cfg.query_window <= L && !acc_first ? (r.cfg.budget / L) * L : 0;
        // random choices (random, foresightkv) keyed by the trace's index in the set, not its batch row
        ev = run_chunks(m, batch, r.cfg, L, opt.kv_f16, &ref, start_at, [&](evict::Evictor& e) {
          for (size_t s = 0; s < batch.size(); ++s) e.set_stream(static_cast<int64_t>(s), b0 + s);
        });
      }
      r.row.seconds += ev.seconds;
      r.row.eviction_seconds += ev.eviction_seconds;
      r.row.eviction_events += ev.events;
      for (size_t s = 0; s < batch.size(); ++s) {
        at::Tensor lp = r.cfg.policy == "full" ? logp_full[s] : at::log_softmax(ev.logits[s], -1);
        at::Tensor nll = -lp.gather(1, tgt[s]).squeeze(1);
        at::Tensor kl = (logp_full[s].exp() * (logp_full[s] - lp)).nan_to_num(0.0).sum(1);
        at::Tensor top1 = lp.argmax(1).eq(arg_full[s]).to(at::kDouble).contiguous();
        at::Tensor nf = nll_full[s].to(at::kDouble).contiguous(), ne = nll.to(at::kDouble).contiguous();
        at::Tensor kd = kl.to(at::kDouble).contiguous(), en = ent[s].to(at::kDouble).contiguous();
        const int64_t k = nll.size(0);
        for (int64_t i = 0; i < k; ++i) {
          r.st.nll_full.push_back(nf.data_ptr<double>()[i]);
          r.st.nll.push_back(ne.data_ptr<double>()[i]);
          r.st.kl.push_back(std::max(0.0, kd.data_ptr<double>()[i]));
          r.st.entropy.push_back(en.data_ptr<double>()[i]);
          r.st.top1.push_back(top1.data_ptr<double>()[i] != 0.0);
          if (!opt.per_token_path.empty())
            dump += json{{"policy", r.row.policy}, {"budget", r.row.budget}, {"window", L}, {"trace", batch[s]->id},
                         {"position", batch[s]->prompt_len + i}, {"token", batch[s]->tokens[batch[s]->prompt_len + i]},
                         {"nll_full", r.st.nll_full.back()}, {"nll", r.st.nll.back()}, {"kl", r.st.kl.back()},
                         {"entropy", r.st.entropy.back()}, {"top1", static_cast<bool>(r.st.top1.back())}}
                        .dump() +
                    "\n";
        }
      }
    }
    FKV_LOG_INFO("fidelity: {}/{} traces done", std::min(traces.size(), b0 + opt.batch), traces.size());
  }
  for (auto& r : rows) {
    const auto& st = r.st;
    const size_t n = st.nll.size();
    FidelityRow& row = r.row;
    row.tokens = static_cast<int64_t>(n);
    row.traces = rep.traces;
    if (n == 0) {
      rep.rows.push_back(row);
      continue;
    }
    const double sf = std::accumulate(st.nll_full.begin(), st.nll_full.end(), 0.0);
    const double se = std::accumulate(st.nll.begin(), st.nll.end(), 0.0);
    row.mean_nll_full = sf / n;
    row.mean_nll = se / n;
    row.lm_loss_ratio = sf > 0 ? se / sf : 1.0;
    row.mean_delta_nll = (se - sf) / n;
    row.kl = std::accumulate(st.kl.begin(), st.kl.end(), 0.0) / n;
    row.top1_agreement = static_cast<double>(std::count(st.top1.begin(), st.top1.end(), 1)) / n;
    // entropy split: the bottom `low_entropy_fraction` of tokens by full-cache predictive entropy
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return st.entropy[a] < st.entropy[b]; });
    const size_t n_low = static_cast<size_t>(opt.low_entropy_fraction * n);
    double lf = 0, le = 0, hf = 0, he = 0;
    for (size_t i = 0; i < n; ++i) {
      const size_t j = order[i];
      if (i < n_low) {
        lf += st.nll_full[j];
        le += st.nll[j];
      } else {
        hf += st.nll_full[j];
        he += st.nll[j];
      }
    }
    const size_t n_high = n - n_low;
    row.low_entropy_loss_increase = lf > 0 ? le / lf - 1.0 : 0.0;
    row.high_entropy_loss_increase = hf > 0 ? he / hf - 1.0 : 0.0;
    row.low_entropy_delta_nll = n_low ? (le - lf) / n_low : 0.0;
    row.high_entropy_delta_nll = n_high ? (he - hf) / n_high : 0.0;
    rep.rows.push_back(row);
  }
  if (!opt.per_token_path.empty()) write_file_atomic(opt.per_token_path, dump);
  return rep;
}

}  // namespace fkv::harness
