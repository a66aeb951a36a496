// Golden Eviction oracle (spec §C.2): step count arithmetic, streamed vs dense block-pooled attention, a schedule
// derived by hand, the fast schedule against the naive reference, invariants and argument checks.
#include "support/catch.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <limits>
#include <set>
#include <vector>

#include "foresightkv/core/error.h"
#include "foresightkv/golden/schedule.h"

using namespace fkv;
using namespace fkv::golden;

namespace {

at::Tensor randn(std::vector<int64_t> shape, at::Generator& gen) {
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
}

GoldenOptions opts(int64_t B, int64_t W, bool bf16 = true) {
  GoldenOptions o;
  o.budget = B;
  o.window = W;
  o.bf16_probs = bf16;
  return o;
}

std::vector<int64_t> to_vec(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

void require_equal_labels(const GoldenLayerLabels& a, const GoldenLayerLabels& b) {
  REQUIRE(a.drops.sizes() == b.drops.sizes());
  REQUIRE(a.scores.sizes() == b.scores.sizes());
  REQUIRE(at::equal(a.drops, b.drops));
  REQUIRE(at::equal(a.scores, b.scores));
}

}  // namespace

TEST_CASE("golden_steps counts steps while T - s*W > B + W", "[unit][golden]") {
  // B = 8, W = 4: B + W = 12.
  CHECK(golden_steps(0, 8, 4) == 0);
  CHECK(golden_steps(5, 8, 4) == 0);
  CHECK(golden_steps(12, 8, 4) == 0);  // T = B + W
  CHECK(golden_steps(13, 8, 4) == 1);  // T = B + W + 1
  CHECK(golden_steps(16, 8, 4) == 1);  // T = B + 2W: s=0 (16 > 12), s=1 (12 > 12 no)
  CHECK(golden_steps(17, 8, 4) == 2);
  CHECK(golden_steps(20, 8, 4) == 2);  // T = B + 3W
  CHECK(golden_steps(21, 8, 4) == 3);
  // Spec §C.4: B = 1024, W = 256, T = 16384 -> S = 59.
  CHECK(golden_steps(16384, 1024, 256) == 59);
  CHECK(golden_steps(16384 + 1, 1024, 256) == 60);
  REQUIRE_THROWS_AS(golden_steps(20, 6, 4), InvalidArgument);
  REQUIRE_THROWS_AS(golden_steps(20, 0, 4), InvalidArgument);
  REQUIRE_THROWS_AS(golden_steps(20, 8, 0), InvalidArgument);
  REQUIRE_THROWS_AS(golden_steps(-1, 8, 4), InvalidArgument);
}

TEST_CASE("block_scores pools uniform attention with a zero-padded last block", "[unit][golden]") {
  // q = 0 -> every query attends uniformly to its prefix: A[t, n] = 1/(t+1) for n <= t.
  // T = 3, W = 2, G = 1: block 0 = queries {0, 1}, block 1 = query {2} padded with one zero row.
  //   abar[0, 0] = (1 + 1/2) / 2 = 0.75, abar[1, 0] = (0 + 1/2) / 2 = 0.25, abar[2, 0] = 0
  //   abar[n, 1] = (1/3) / 2 = 1/6 for n = 0, 1, 2
  at::Tensor q = at::zeros({1, 3, 4}), k = at::ones({1, 3, 4});
  const float sixth = static_cast<float>(1.0 / 6.0);
  at::Tensor expected = at::tensor({0.75f, sixth, 0.25f, sixth, 0.0f, sixth}).view({1, 3, 2});
  at::Tensor got = block_scores(q, k, 2, /*bf16_probs=*/false);
  REQUIRE(got.sizes() == expected.sizes());
  REQUIRE(got.scalar_type() == at::kFloat);
  CHECK(at::allclose(got, expected, 1e-7, 1e-7));
  CHECK(at::allclose(block_scores_dense(q, k, 2, false), expected, 1e-7, 1e-7));
  // With G = 2 the pooled value is the mean over both (identical) heads.
  CHECK(at::allclose(block_scores(at::zeros({2, 3, 4}), k, 2, false), expected, 1e-7, 1e-7));
}

TEST_CASE("block_scores (streamed) equals block_scores_dense", "[unit][golden]") {
  at::Generator gen = at::detail::createCPUGenerator(1234);
  struct Case {
    int64_t Hkv, G, T, D, W;
  };
  const std::vector<Case> cases = {{1, 1, 16, 8, 4}, {2, 2, 37, 16, 8}, {1, 3, 50, 8, 7}, {3, 3, 29, 32, 5},
                                   {2, 1, 5, 8, 8},  {1, 2, 1, 4, 3}};
  for (const Case& c : cases)
    for (bool bf16 : {false, true}) {
      INFO("Hkv=" << c.Hkv << " G=" << c.G << " T=" << c.T << " D=" << c.D << " W=" << c.W << " bf16=" << bf16);
      at::Tensor q = randn({c.Hkv * c.G, c.T, c.D}, gen), k = randn({c.Hkv, c.T, c.D}, gen);
      at::Tensor s = block_scores(q, k, c.W, bf16), d = block_scores_dense(q, k, c.W, bf16);
      const int64_t nb = (c.T + c.W - 1) / c.W;
      REQUIRE(s.sizes() == at::IntArrayRef({c.Hkv, c.T, nb}));
      REQUIRE(d.sizes() == s.sizes());
      REQUIRE(s.scalar_type() == at::kFloat);
      CHECK(at::allclose(s, d, 1e-6, 1e-9));
      CHECK((s - d).abs().max().item<float>() <= 1e-6f * d.abs().max().item<float>());
      // Causality: block b only sees keys n < min((b+1)W, T).
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t end = std::min((b + 1) * c.W, c.T);
        if (end < c.T) CHECK(s.select(2, b).narrow(1, end, c.T - end).abs().max().item<float>() == 0.0f);
      }
      // Each full block's column sums to 1 (probabilities over keys, averaged); bf16 rounding perturbs it slightly.
      if (c.T >= c.W) CHECK(at::allclose(s.select(2, 0).sum(1), at::ones({c.Hkv}), 0, bf16 ? 1e-2 : 1e-5));
    }
}

TEST_CASE("golden_schedule on a hand-derived case", "[unit][golden]") {
  // Hkv = 1, T = 10, W = 2, B = 4: b0 = 1 + B/W = 3, nb = 5, future blocks b = 3, 4 (R = 2).
  // Steps while T - 2s > B + W = 6: s = 0 (10 > 6), s = 1 (8 > 6); s = 2 stops (6 > 6 false).
  // Blocks 0..2 are not future blocks: fill them with 9 to show they are ignored.
  //   pos: abar[., 3]  abar[., 4]
  //    0     0.2        0.1
  //    1     0.2        0.2
  //    2     0.1        0.6
  //    3     0.2        0.05
  //    4     0.7        0.3
  //    5     0.9        0.15
  // Step 0: cache = positions [0, 1, 2, 3]; alpha_0 = max(abar[., 3], abar[., 4]) = [0.2, 0.2, 0.6, 0.2].
  //   Position 2 survives only thanks to the suffix max (its block-3 score alone is the lowest).
  //   Three-way tie at 0.2 between slots 0, 1, 3: the lower slots drop first -> drops [0, 1].
  //   scores = [-0.2, -0.2, -0.6, -0.2]. rows -> [2, 3, 4, 5, 6, ...].
  // Step 1: cache = positions [2, 3, 4, 5]; alpha_1 = abar[., 4] = [0.6, 0.05, 0.3, 0.15] -> drops [1, 3],
  //   scores = [-0.6, -0.05, -0.3, -0.15].
  at::Tensor abar = at::full({1, 10, 5}, 9.0f);
  const std::vector<std::pair<float, float>> fut = {{0.2f, 0.1f}, {0.2f, 0.2f}, {0.1f, 0.6f},
                                                    {0.2f, 0.05f}, {0.7f, 0.3f}, {0.9f, 0.15f}};
  for (int64_t n = 0; n < 6; ++n) {
    abar[0][n][3] = fut[n].first;
    abar[0][n][4] = fut[n].second;
  }
  for (int64_t n = 6; n < 10; ++n) abar[0][n].narrow(0, 3, 2).fill_(0.0f);
  const GoldenOptions o = opts(4, 2);
  for (const GoldenLayerLabels& L : {golden_schedule(abar, 10, o), golden_schedule_reference(abar, 10, o)}) {
    REQUIRE(L.drops.sizes() == at::IntArrayRef({2, 1, 2}));
    REQUIRE(L.scores.sizes() == at::IntArrayRef({2, 1, 4}));
    REQUIRE(L.drops.scalar_type() == at::kLong);
    REQUIRE(L.scores.scalar_type() == at::kFloat);
    CHECK(to_vec(L.drops) == std::vector<int64_t>{0, 1, 1, 3});
    at::Tensor want = at::tensor({-0.2f, -0.2f, -0.6f, -0.2f, -0.6f, -0.05f, -0.3f, -0.15f}).view({2, 1, 4});
    CHECK(at::equal(L.scores, want));
  }
}

TEST_CASE("golden_schedule equals golden_schedule_reference on random abar", "[unit][golden]") {
  at::Generator gen = at::detail::createCPUGenerator(42);
  struct Case {
    int64_t Hkv, T, B, W;
  };
  const std::vector<Case> cases = {{1, 37, 8, 4},  {3, 64, 16, 8},  {4, 101, 12, 3}, {2, 200, 32, 16},
                                   {2, 33, 4, 4},  {1, 45, 30, 5},  {5, 130, 8, 8},  {2, 1000, 64, 16}};
  for (const Case& c : cases) {
    INFO("Hkv=" << c.Hkv << " T=" << c.T << " B=" << c.B << " W=" << c.W);
    const int64_t nb = (c.T + c.W - 1) / c.W;
    at::Tensor abar = at::rand({c.Hkv, c.T, nb}, gen);
    const GoldenOptions o = opts(c.B, c.W);
    GoldenLayerLabels fast = golden_schedule(abar, c.T, o), ref = golden_schedule_reference(abar, c.T, o);
    const int64_t S = golden_steps(c.T, c.B, c.W);
    REQUIRE(S > 0);
    REQUIRE(fast.drops.sizes() == at::IntArrayRef({S, c.Hkv, c.W}));
    REQUIRE(fast.scores.sizes() == at::IntArrayRef({S, c.Hkv, c.B}));
    require_equal_labels(fast, ref);
    if (c.Hkv > 1 && c.B > c.W) CHECK_FALSE(at::equal(fast.drops[0][0], fast.drops[0][1]));  // heads differ
    // Also with ties everywhere (quantised scores): the lower-slot rule makes both agree exactly.
    at::Tensor coarse = at::floor(abar * 4) / 4;
    require_equal_labels(golden_schedule(coarse, c.T, o), golden_schedule_reference(coarse, c.T, o));
  }
}

TEST_CASE("golden_schedule invariants: W distinct ascending slots < B, lowest alpha dropped", "[unit][golden]") {
  at::Generator gen = at::detail::createCPUGenerator(7);
  const int64_t Hkv = 3, T = 150, B = 24, W = 6;
  at::Tensor abar = at::rand({Hkv, T, (T + W - 1) / W}, gen);
  GoldenLayerLabels L = golden_schedule(abar, T, opts(B, W));
  const int64_t S = golden_steps(T, B, W);
  REQUIRE(S == 20);  // 150 - 20*6 = 30 = B + W stops
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < Hkv; ++j) {
      const std::vector<int64_t> d = to_vec(L.drops[s][j]);
      REQUIRE(static_cast<int64_t>(d.size()) == W);
      std::set<int64_t> uniq(d.begin(), d.end());
      CHECK(static_cast<int64_t>(uniq.size()) == W);
      CHECK(std::is_sorted(d.begin(), d.end()));
      CHECK(d.front() >= 0);
      CHECK(d.back() < B);
      // every dropped slot's alpha (= -score) is <= every kept slot's alpha
      at::Tensor alpha = -L.scores[s][j];
      at::Tensor mask = at::zeros({B}, at::kBool);
      for (int64_t x : d) mask[x] = true;
      CHECK(alpha.masked_select(mask).max().item<float>() <= alpha.masked_select(~mask).min().item<float>());
      CHECK((alpha >= 0).all().item<bool>());
    }
}

TEST_CASE("golden_schedule: KV heads are independent", "[unit][golden]") {
  at::Generator gen = at::detail::createCPUGenerator(99);
  const int64_t T = 90, B = 16, W = 4, nb = (T + W - 1) / W;
  at::Tensor abar = at::rand({2, T, nb}, gen);
  at::Tensor other = abar.clone();
  other[1].copy_(at::rand({T, nb}, gen));
  GoldenLayerLabels a = golden_schedule(abar, T, opts(B, W)), b = golden_schedule(other, T, opts(B, W));
  CHECK(at::equal(a.drops.select(1, 0), b.drops.select(1, 0)));
  CHECK(at::equal(a.scores.select(1, 0), b.scores.select(1, 0)));
  CHECK_FALSE(at::equal(a.drops.select(1, 1), b.drops.select(1, 1)));
  // A single head alone gives the same labels as inside the stack.
  GoldenLayerLabels solo = golden_schedule(abar.narrow(0, 0, 1), T, opts(B, W));
  CHECK(at::equal(solo.drops, a.drops.narrow(1, 0, 1)));
  CHECK(at::equal(solo.scores, a.scores.narrow(1, 0, 1)));
}

TEST_CASE("golden_layer_labels: streamed and dense abar give identical drops", "[unit][golden]") {
  at::Generator gen = at::detail::createCPUGenerator(2024);
  struct Case {
    int64_t Hkv, G, T, D, B, W;
  };
  const std::vector<Case> cases = {{2, 2, 77, 16, 8, 4}, {1, 3, 64, 8, 16, 8}, {3, 1, 50, 32, 9, 3}};
  for (const Case& c : cases)
    for (bool bf16 : {false, true}) {
      INFO("Hkv=" << c.Hkv << " G=" << c.G << " T=" << c.T << " B=" << c.B << " W=" << c.W << " bf16=" << bf16);
      at::Tensor q = randn({c.Hkv * c.G, c.T, c.D}, gen), k = randn({c.Hkv, c.T, c.D}, gen);
      const GoldenOptions o = opts(c.B, c.W, bf16);
      GoldenLayerLabels fast = golden_layer_labels(q, k, o);
      GoldenLayerLabels ref = golden_schedule_reference(block_scores_dense(q, k, c.W, bf16), c.T, o);
      REQUIRE(fast.drops.size(0) == golden_steps(c.T, c.B, c.W));
      CHECK(at::equal(fast.drops, ref.drops));
      CHECK(at::allclose(fast.scores, ref.scores, 1e-6, 1e-9));
    }
}

TEST_CASE("golden_schedule: T <= B + W gives zero steps with shaped empty tensors", "[unit][golden]") {
  const int64_t Hkv = 3, B = 8, W = 4;
  for (int64_t T : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{11}, int64_t{12}}) {
    INFO("T=" << T);
    at::Tensor abar = at::rand({Hkv, T, (T + W - 1) / W});
    for (const GoldenLayerLabels& L : {golden_schedule(abar, T, opts(B, W)),
                                       golden_schedule_reference(abar, T, opts(B, W))}) {
      CHECK(L.drops.sizes() == at::IntArrayRef({0, Hkv, W}));
      CHECK(L.scores.sizes() == at::IntArrayRef({0, Hkv, B}));
      CHECK(L.drops.scalar_type() == at::kLong);
      CHECK(L.scores.scalar_type() == at::kFloat);
    }
  }
  at::Tensor q = at::randn({2, 12, 8}), k = at::randn({1, 12, 8});
  GoldenLayerLabels L = golden_layer_labels(q, k, opts(B, W));
  CHECK(L.drops.sizes() == at::IntArrayRef({0, 1, W}));
  CHECK(L.scores.sizes() == at::IntArrayRef({0, 1, B}));
}

TEST_CASE("golden: bad inputs throw InvalidArgument", "[unit][golden]") {
  const int64_t T = 20, W = 4;
  at::Tensor abar = at::rand({2, T, 5});
  // B not a positive multiple of W, W not positive
  CHECK_THROWS_AS(golden_schedule(abar, T, opts(6, W)), InvalidArgument);
  CHECK_THROWS_AS(golden_schedule(abar, T, opts(0, W)), InvalidArgument);
  CHECK_THROWS_AS(golden_schedule(abar, T, opts(8, 0)), InvalidArgument);
  CHECK_THROWS_AS(golden_schedule_reference(abar, T, opts(6, W)), InvalidArgument);
  // abar shape mismatch: wrong T, wrong block count, wrong rank, NaN
  CHECK_THROWS_AS(golden_schedule(abar, T + 1, opts(8, W)), InvalidArgument);
  CHECK_THROWS_AS(golden_schedule(at::rand({2, T, 6}), T, opts(8, W)), InvalidArgument);
  CHECK_THROWS_AS(golden_schedule(at::rand({T, 5}), T, opts(8, W)), InvalidArgument);
  CHECK_THROWS_AS(golden_schedule_reference(at::rand({2, T, 4}), T, opts(8, W)), InvalidArgument);
  at::Tensor nan = abar.clone();
  nan[1][3][2] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(golden_schedule(nan, T, opts(8, W)), InvalidArgument);
  // q/k mismatches: Hq not a multiple of Hkv, T or D differ, wrong rank
  at::Tensor q = at::randn({6, T, 8}), k = at::randn({2, T, 8});
  CHECK_NOTHROW(block_scores(q, k, W));
  CHECK_THROWS_AS(block_scores(at::randn({5, T, 8}), k, W), InvalidArgument);
  CHECK_THROWS_AS(block_scores_dense(at::randn({5, T, 8}), k, W), InvalidArgument);
  CHECK_THROWS_AS(block_scores(q, at::randn({2, T + 1, 8}), W), InvalidArgument);
  CHECK_THROWS_AS(block_scores(q, at::randn({2, T, 16}), W), InvalidArgument);
  CHECK_THROWS_AS(block_scores(q.view({6 * T, 8}), k, W), InvalidArgument);
  CHECK_THROWS_AS(block_scores(q, k, 0), InvalidArgument);
  CHECK_THROWS_AS(golden_layer_labels(at::randn({5, T, 8}), k, opts(8, W)), InvalidArgument);
  CHECK_THROWS_AS(golden_layer_labels(q, k, opts(10, W)), InvalidArgument);
}
