#include "foresightkv/trace/labeler.h"

#include <ATen/ATen.h>

#include "foresightkv/core/error.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/golden/schedule.h"

namespace fkv::trace {
namespace {

// Collects the chunk's post-RoPE q/k of every layer into preallocated [H, T, D] buffers.
class QkTap final : public model::ForwardTaps {
 public:
  QkTap(std::vector<at::Tensor>& q, std::vector<at::Tensor>& k) : q_(q), k_(k) {}
  int64_t start = 0;
  void on_qkv(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor&) override {
    const int64_t T = q.size(2);
    q_[layer].narrow(1, start, T).copy_(q[0]);
    k_[layer].narrow(1, start, T).copy_(k[0]);
  }

 private:
  std::vector<at::Tensor>& q_;
  std::vector<at::Tensor>& k_;
};

// One full-cache teacher-forced pass over t in chunks: the post-RoPE q/k of every layer (when want_qk) and the
// per-token NLL/entropy (when nll is non-null).
void full_cache_pass(const model::Transformer& m, const Trace& t, int64_t chunk, bool want_qk,
                     std::vector<at::Tensor>& q, std::vector<at::Tensor>& k, at::Tensor* nll, at::Tensor* ent) {
  const auto& c = m.config();
  const int64_t T = t.length();
  FKV_CHECK_ARG(T >= 2, "trace '{}': needs at least 2 tokens", t.id);
  FKV_CHECK_ARG(chunk > 0, "label: chunk must be > 0");
  for (int32_t id : t.tokens)
    FKV_CHECK_ARG(id >= 0 && id < c.n_vocab, "trace '{}': token {} outside the model's vocabulary [0, {})", t.id, id,
                  c.n_vocab);
  if (want_qk)
    for (int64_t l = 0; l < c.n_layer; ++l) {
      q.push_back(at::empty({c.n_head_q, T, c.head_dim}, at::kFloat));
      k.push_back(at::empty({c.n_head_kv, T, c.head_dim}, at::kFloat));
    }
  QkTap tap(q, k);
  cache::KvCache kv = m.make_cache(1, T + chunk);
  if (nll) {
    *nll = at::zeros({T - 1}, at::kFloat);
    *ent = at::zeros({T - 1}, at::kFloat);
  }
  for (int64_t start = 0; start < T; start += chunk) {
    const int64_t n = std::min(chunk, T - start);
    at::Tensor ids = at::empty({1, n}, at::kLong), pos = at::arange(start, start + n, at::kLong).view({1, n});
    for (int64_t i = 0; i < n; ++i) ids[0][i] = t.tokens[start + i];
    tap.start = start;
    at::Tensor lg = m.forward(ids, pos, kv, nll ? model::Logits::All : model::Logits::None, want_qk ? &tap : nullptr);
    if (nll) {
      // position i (< T-1) predicts token i+1
      const int64_t m_rows = std::min(n, T - 1 - start);
      if (m_rows > 0) {
        at::Tensor lp = at::log_softmax(lg[0].narrow(0, 0, m_rows), -1);
        std::vector<int64_t> y(t.tokens.begin() + start + 1, t.tokens.begin() + start + 1 + m_rows);
        at::Tensor yt = at::tensor(y, at::kLong).unsqueeze(1);
        nll->narrow(0, start, m_rows).copy_(-lp.gather(1, yt).squeeze(1));
        ent->narrow(0, start, m_rows).copy_(-(lp.exp() * lp).nan_to_num(0.0).sum(1));
      }
    }
  }
}

}  // namespace

void label_trace(const model::Transformer& m, Trace& t, const LabelOptions& opt) {
  const auto& c = m.config();
  const int64_t T = t.length();
  std::vector<int64_t> todo;
  for (int64_t b : opt.budgets) {
    FKV_CHECK_ARG(opt.window > 0 && b > 0 && b % opt.window == 0,
                  "label: budget {} must be a positive multiple of the window {}", b, opt.window);
    if (opt.replace || !t.find_labels(b, opt.window)) todo.push_back(b);
  }
  const bool need_nll = !t.nll.defined();
  if (todo.empty() && !need_nll) return;
  std::vector<at::Tensor> q, k;
  at::Tensor nll, ent;
  full_cache_pass(m, t, opt.chunk, !todo.empty(), q, k, need_nll ? &nll : nullptr, &ent);
  if (need_nll) {
    t.nll = nll;
    t.entropy = ent;
  }
  if (todo.empty()) return;
  // Per layer: pooled scores once, then the schedule for every budget.
  std::vector<std::vector<at::Tensor>> drops(todo.size()), scores(todo.size());
  for (int64_t l = 0; l < c.n_layer; ++l) {
    at::Tensor abar = golden::block_scores(q[l], k[l], opt.window, opt.bf16_probs);
    q[l] = at::Tensor();  // release as we go
    k[l] = at::Tensor();
    for (size_t i = 0; i < todo.size(); ++i) {
      golden::GoldenOptions go;
      go.budget = todo[i];
      go.window = opt.window;
      go.bf16_probs = opt.bf16_probs;
      golden::GoldenLayerLabels lb = golden::golden_schedule(abar, T, go);
      drops[i].push_back(lb.drops.to(at::kInt));
      scores[i].push_back(lb.scores.to(at::kFloat));
    }
  }
  for (size_t i = 0; i < todo.size(); ++i) {
    GoldenLabels g;
    g.budget = todo[i];
    g.window = opt.window;
    g.drops = at::stack(drops[i]);    // [layers, steps, Hkv, W]
    g.scores = at::stack(scores[i]);  // [layers, steps, Hkv, B]
    t.labels.erase(std::remove_if(t.labels.begin(), t.labels.end(),
                                  [&](const GoldenLabels& x) { return x.budget == g.budget && x.window == g.window; }),
                   t.labels.end());
    t.labels.push_back(std::move(g));
  }
}

at::Tensor future_score_tables(const model::Transformer& m, const Trace& t, int64_t budget, int64_t window,
                               bool bf16_probs, int64_t chunk) {
  FKV_CHECK_ARG(window > 0 && budget > 0 && budget % window == 0,
                "future scores: budget {} must be a positive multiple of the window {}", budget, window);
  std::vector<at::Tensor> q, k, fut;
  full_cache_pass(m, t, chunk, true, q, k, nullptr, nullptr);
  golden::GoldenOptions go;
  go.budget = budget;
  go.window = window;
  go.bf16_probs = bf16_probs;
  for (size_t l = 0; l < q.size(); ++l) {
    fut.push_back(golden::future_scores(golden::block_scores(q[l], k[l], window, bf16_probs), t.length(), go));
    q[l] = at::Tensor();
    k[l] = at::Tensor();
  }
  return at::stack(fut);
}

at::Tensor replay_survivors(const GoldenLabels& lb, int64_t T, int64_t step) {
  const int64_t Lc = lb.drops.size(0), S = lb.drops.size(1), H = lb.drops.size(2), W = lb.window, B = lb.budget;
  FKV_CHECK_ARG(step >= 0 && step < S, "replay_survivors: step {} outside [0, {})", step, S);
  at::Tensor d = lb.drops.to(at::kLong).contiguous();
  at::Tensor out = at::empty({Lc, H, B}, at::kLong);
  for (int64_t l = 0; l < Lc; ++l)
    for (int64_t h = 0; h < H; ++h) {
      // cache = rows[0:B] + the next W positions; each step drops W of the first B
      std::vector<int64_t> cache;
      for (int64_t i = 0; i < B + W && i < T; ++i) cache.push_back(i);
      int64_t next = B + W;
      for (int64_t s = 0; s <= step; ++s) {
        std::vector<char> drop(cache.size(), 0);
        for (int64_t w = 0; w < W; ++w) drop[d[l][s][h][w].item<int64_t>()] = 1;
        std::vector<int64_t> kept;
        for (size_t i = 0; i < cache.size(); ++i)
          if (!drop[i]) kept.push_back(cache[i]);
        cache = kept;
        if (s < step)
          for (int64_t w = 0; w < W && next < T; ++w) cache.push_back(next++);
      }
      FKV_CHECK(static_cast<int64_t>(cache.size()) == B, "replay_survivors: {} survivors, expected {}", cache.size(), B);
      for (int64_t i = 0; i < B; ++i) out[l][h][i] = cache[i];
    }
  return out;
}

}  // namespace fkv::trace
