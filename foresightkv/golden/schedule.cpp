// Golden Eviction oracle (see schedule.h): block-pooled attention and the greedy drop schedule.
#include "foresightkv/golden/schedule.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include <fmt/ostream.h>

#include "foresightkv/core/error.h"

namespace fkv::golden {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void check_window_budget(int64_t budget, int64_t window) {
  FKV_CHECK_ARG(window > 0, "golden: window W must be positive, got {}", window);
  FKV_CHECK_ARG(budget > 0 && budget % window == 0,
                "golden: budget B must be a positive multiple of the window W={}, got B={}", window, budget);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct QkShape {
  int64_t Hq, Hkv, G, T, D;
};

QkShape check_qk(const at::Tensor& q, const at::Tensor& k, int64_t window) {
  FKV_CHECK_ARG(window > 0, "golden: window W must be positive, got {}", window);
  FKV_CHECK_ARG(q.defined() && k.defined(), "golden: q and k must be defined tensors");
  FKV_CHECK_ARG(q.dim() == 3 && k.dim() == 3, "golden: expected q [Hq, T, D] and k [Hkv, T, D], got q {} and k {}",
                fmt::streamed(q.sizes()), fmt::streamed(k.sizes()));
  FKV_CHECK_ARG(at::isFloatingType(q.scalar_type()) && at::isFloatingType(k.scalar_type()),
                "golden: q and k must be floating point, got {} and {}", c10::toString(q.scalar_type()),
                c10::toString(k.scalar_type()));
  FKV_CHECK_ARG(q.device() == k.device(), "golden: q and k must be on the same device, got {} and {}",
                q.device().str(), k.device().str());
  QkShape s{q.size(0), k.size(0), 0, q.size(1), q.size(2)};
  FKV_CHECK_ARG(k.size(1) == s.T && k.size(2) == s.D,
                "golden: q [Hq, T, D] and k [Hkv, T, D] must agree on T and D, got q {} and k {}",
                fmt::streamed(q.sizes()), fmt::streamed(k.sizes()));
  FKV_CHECK_ARG(s.Hkv > 0 && s.D > 0 && s.Hq % s.Hkv == 0,
                "golden: Hq must be a positive multiple of Hkv (and D > 0), got q {} and k {}",
                fmt::streamed(q.sizes()), fmt::streamed(k.sizes()));
  s.G = s.Hq / s.Hkv;
  return s;
}

/// Raw scaled logits q.k / sqrt(D): accumulated in fp64, rounded once to fp32 (so the value does not depend on the
/// GEMM's blocking, which differs between the streamed and the dense computation).
at::Tensor logits_fp32(const at::Tensor& qd, const at::Tensor& kd_t, double scale) {
  return at::matmul(qd, kd_t).mul_(scale).to(at::kFloat);
}

/// fp32 softmax over the last axis, optionally rounded to bf16 (kept as fp32 values).
at::Tensor probs(const at::Tensor& logits, bool bf16_probs) {
  at::Tensor p = at::softmax(logits, -1);
  return bf16_probs ? p.to(at::kBFloat16).to(at::kFloat) : p;
}

/// abar on the CPU as contiguous fp32, checked against [Hkv, T, ceil(T/W)] and for NaN.
at::Tensor checked_abar(const at::Tensor& abar, int64_t T, int64_t window) {
  FKV_CHECK_ARG(abar.defined() && abar.dim() == 3, "golden: abar must be [Hkv, T, nb], got {}",
                fmt::streamed(abar.defined() ? abar.sizes() : at::IntArrayRef{}));
  FKV_CHECK_ARG(at::isFloatingType(abar.scalar_type()), "golden: abar must be floating point, got {}",
                c10::toString(abar.scalar_type()));
  FKV_CHECK_ARG(T >= 0 && abar.size(1) == T && abar.size(2) == ceil_div(T, window),
                "golden: abar must be [Hkv, T={}, ceil(T/W)={}], got {}", T, ceil_div(T, window),
                fmt::streamed(abar.sizes()));
  FKV_CHECK_ARG(abar.size(0) > 0, "golden: abar needs at least one KV head, got {}", fmt::streamed(abar.sizes()));
  at::Tensor a = abar.detach().to(at::kCPU, at::kFloat).contiguous();
  FKV_CHECK_ARG(!at::isnan(a).any().item<bool>(), "golden: abar contains NaN");
  return a;
}

GoldenLayerLabels empty_labels(int64_t steps, int64_t Hkv, const GoldenOptions& opt) {
  return {at::empty({steps, Hkv, opt.window}, at::kLong), at::empty({steps, Hkv, opt.budget}, at::kFloat)};
}

}  // namespace

int64_t golden_steps(int64_t T, int64_t budget, int64_t window) {
  check_window_budget(budget, window);
  FKV_CHECK_ARG(T >= 0, "golden: sequence length T must be >= 0, got {}", T);
  // s is taken iff T - s*W > B + W, i.e. s < (T - B - W) / W.
  return T <= budget + window ? 0 : ceil_div(T - budget - window, window);
}

at::Tensor block_scores(const at::Tensor& q, const at::Tensor& k, int64_t window, bool bf16_probs) {
  const QkShape s = check_qk(q, k, window);
  at::NoGradGuard no_grad;
  const int64_t W = window, nb = ceil_div(s.T, W);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  const at::TensorOptions fopt = q.options().dtype(at::kFloat);
  const at::Tensor qd = q.detach().to(at::kDouble), kd = k.detach().to(at::kDouble);
  const at::Tensor pos = at::arange(s.T, q.options().dtype(at::kLong));
  at::Tensor out = at::empty({s.Hkv, nb, s.T}, fopt);  // pooled rows, transposed to [Hkv, T, nb] at the end
  for (int64_t j = 0; j < s.Hkv; ++j) {
    const at::Tensor qj = qd.narrow(0, j * s.G, s.G);  // [G, T, D]
    const at::Tensor kj_t = kd[j].t();                  // [D, T]
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t t0 = b * W, w = std::min(W, s.T - t0), end = t0 + w;  // keys >= end are masked for all queries
      // Full-length rows [G, w, T] so the softmax sees exactly the rows of the dense computation.
      at::Tensor lg = at::full({s.G, w, s.T}, kNegInf, fopt);
      at::Tensor vis = lg.narrow(2, 0, end);
      vis.copy_(logits_fp32(qj.narrow(1, t0, w), kj_t.narrow(1, 0, end), scale));
      vis.masked_fill_(pos.narrow(0, 0, end).unsqueeze(0) > pos.narrow(0, t0, w).unsqueeze(1), kNegInf);
      at::Tensor p = probs(lg, bf16_probs);
      out[j][b].copy_(p.to(at::kDouble).sum({0, 1}).div_(static_cast<double>(s.G * W)));
    }
  }
  return out.permute({0, 2, 1}).contiguous();
}

at::Tensor block_scores_dense(const at::Tensor& q, const at::Tensor& k, int64_t window, bool bf16_probs) {
  const QkShape s = check_qk(q, k, window);
  at::NoGradGuard no_grad;
  const int64_t W = window, nb = ceil_div(s.T, W);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  const at::Tensor qd = q.detach().to(at::kDouble);
  const at::Tensor kd = k.detach().to(at::kDouble).repeat_interleave(s.G, 0);  // [Hq, T, D]
  at::Tensor lg = logits_fp32(qd, kd.transpose(1, 2), scale);                  // [Hq, T, T]
  const at::Tensor pos = at::arange(s.T, q.options().dtype(at::kLong));
  lg.masked_fill_(pos.unsqueeze(0) > pos.unsqueeze(1), kNegInf);
  at::Tensor p = probs(lg, bf16_probs);
  at::Tensor padded = at::zeros({s.Hq, nb * W, s.T}, p.options());
  padded.narrow(1, 0, s.T).copy_(p);
  at::Tensor pooled = padded.to(at::kDouble).view({s.Hkv, s.G, nb, W, s.T}).sum({1, 3}).div_(
      static_cast<double>(s.G * W));  // [Hkv, nb, T]
  return pooled.to(at::kFloat).permute({0, 2, 1}).contiguous();
}

GoldenLayerLabels golden_schedule(const at::Tensor& abar, int64_t T, const GoldenOptions& opt) {
  // alpha_s(n) for every position and step (the suffix max over future blocks), then the greedy schedule on it
  const at::Tensor fut = future_scores(abar, T, opt);  // [Hkv, T, S], checks budget/window/abar
  const int64_t B = opt.budget, W = opt.window, Hkv = fut.size(0), S = fut.size(2);
  GoldenLayerLabels out = empty_labels(S, Hkv, opt);
  if (S == 0) return out;
  const float* fp = fut.data_ptr<float>();
  int64_t* drops = out.drops.data_ptr<int64_t>();
  float* scores = out.scores.data_ptr<float>();
  std::vector<int64_t> cache(B), next_cache(B);
  std::vector<float> alpha(B);
  std::vector<char> dropped(B);
  for (int64_t j = 0; j < Hkv; ++j) {
    const float* fj = fp + j * T * S;
    // rows = cache (the B oldest alive tokens, in order) ++ [next, T): the tail is never dropped before it
    // enters the cache, so after a drop the cache is the survivors followed by the next W positions.
    std::iota(cache.begin(), cache.end(), int64_t{0});
    int64_t next = B;
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t n = 0; n < B; ++n) alpha[n] = fj[cache[n] * S + s];
      const std::vector<int64_t> d = oracle_drops(alpha.data(), B, W);
      int64_t* dd = drops + (s * Hkv + j) * W;
      float* sc = scores + (s * Hkv + j) * B;
      std::fill(dropped.begin(), dropped.end(), 0);
      for (int64_t i = 0; i < W; ++i) {
        dd[i] = d[i];
        dropped[d[i]] = 1;
      }
      for (int64_t n = 0; n < B; ++n) sc[n] = -alpha[n];
      int64_t m = 0;
      for (int64_t n = 0; n < B; ++n)
        if (!dropped[n]) next_cache[m++] = cache[n];
      for (int64_t i = 0; i < W; ++i) next_cache[m++] = next + i;  // < T because T - s*W > B + W
      next += W;
      cache.swap(next_cache);
    }
  }
  return out;
}

at::Tensor future_scores(const at::Tensor& abar, int64_t T, const GoldenOptions& opt) {
  check_window_budget(opt.budget, opt.window);
  const at::Tensor a = checked_abar(abar, T, opt.window);
  const int64_t B = opt.budget, W = opt.window, Hkv = a.size(0), nb = a.size(2);
  const int64_t S = golden_steps(T, B, W), b0 = 1 + B / W, R = nb - b0;
  at::Tensor out = at::empty({Hkv, T, S}, at::kFloat);
  if (S == 0) return out;
  FKV_CHECK(R >= S, "golden: internal error: {} steps but only {} future blocks (T={}, B={}, W={})", S, R, T, B, W);
  const float* ap = a.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t j = 0; j < Hkv; ++j)
    for (int64_t n = 0; n < T; ++n) {
      const float* row = ap + (j * T + n) * nb;
      float* o = op + (j * T + n) * S;
      float m = kNegInf;
      for (int64_t r = R - 1; r >= 0; --r) {
        m = std::max(m, row[b0 + r]);
        if (r < S) o[r] = m;
      }
    }
  return out;
}

std::vector<int64_t> oracle_drops(const float* alpha, int64_t n, int64_t d) {
  FKV_CHECK_ARG(d >= 0 && d <= n, "oracle_drops: {} drops from {} candidates", d, n);
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  std::partial_sort(idx.begin(), idx.begin() + d, idx.end(), [&](int64_t x, int64_t y) {
    return alpha[x] < alpha[y] || (alpha[x] == alpha[y] && x < y);
  });
  idx.resize(static_cast<size_t>(d));
  std::sort(idx.begin(), idx.end());
  return idx;
}

GoldenLayerLabels golden_layer_labels(const at::Tensor& q, const at::Tensor& k, const GoldenOptions& opt) {
  check_window_budget(opt.budget, opt.window);
  const at::Tensor abar = block_scores(q, k, opt.window, opt.bf16_probs);
  return golden_schedule(abar, abar.size(1), opt);
}

GoldenLayerLabels golden_schedule_reference(const at::Tensor& abar_dense, int64_t T, const GoldenOptions& opt) {
  check_window_budget(opt.budget, opt.window);
  const at::Tensor a = checked_abar(abar_dense, T, opt.window);
  const int64_t B = opt.budget, W = opt.window, Hkv = a.size(0), nb = a.size(2);
  const int64_t b0 = 1 + B / W, R = nb - b0;
  auto acc = a.accessor<float, 3>();
  std::vector<std::vector<int64_t>> drops(Hkv);
  std::vector<std::vector<float>> scores(Hkv);
  int64_t steps = -1;
  for (int64_t j = 0; j < Hkv; ++j) {
    std::vector<int64_t> rows(T);
    std::iota(rows.begin(), rows.end(), int64_t{0});
    int64_t s = 0;
    for (; static_cast<int64_t>(rows.size()) > B + W; ++s) {
      FKV_CHECK(s < R, "golden reference: step {} has no future block (R={})", s, R);
      std::vector<float> alpha(B);
      for (int64_t n = 0; n < B; ++n) {
        float m = kNegInf;
        for (int64_t r = s; r < R; ++r) m = std::max(m, acc[j][rows[n]][b0 + r]);
        alpha[n] = m;
        scores[j].push_back(-m);
      }
      std::vector<int64_t> order(B);
      std::iota(order.begin(), order.end(), int64_t{0});
      std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return alpha[x] < alpha[y]; });
      std::vector<int64_t> drop(order.begin(), order.begin() + W);
      std::sort(drop.begin(), drop.end());
      drops[j].insert(drops[j].end(), drop.begin(), drop.end());
      for (auto it = drop.rbegin(); it != drop.rend(); ++it) rows.erase(rows.begin() + *it);
    }
    FKV_CHECK(steps < 0 || steps == s, "golden reference: heads disagree on the number of steps");
    steps = s;
  }
  FKV_CHECK(steps == golden_steps(T, B, W), "golden reference: {} steps, expected {}", steps, golden_steps(T, B, W));
  GoldenLayerLabels out = empty_labels(steps, Hkv, opt);
  auto d = out.drops.accessor<int64_t, 3>();
  auto sc = out.scores.accessor<float, 3>();
  for (int64_t s = 0; s < steps; ++s)
    for (int64_t j = 0; j < Hkv; ++j) {
      for (int64_t i = 0; i < W; ++i) d[s][j][i] = drops[j][s * W + i];
      for (int64_t n = 0; n < B; ++n) sc[s][j][n] = scores[j][s * B + n];
    }
  return out;
}

}  // namespace fkv::golden
