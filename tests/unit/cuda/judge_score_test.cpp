// GPU parity of the judge kernels (fkv_cuda/judge_score.h) against the CPU policy code (foresightkv/judge/):
// judge_score vs build_features + Judge::score (both feature variants, segment lengths around 8/16/32, GQA groups
// 1-8, fp32/fp16/bf16 K/V storage, ragged candidate counts, padding filled with NaN so any read past a row's live
// length shows), judge_select_drops vs choose_drops (foresightkv and foresightkv_topk, parity and intended, ties,
// +-0, pool clamped to the candidates, D == C, C < D, large C needing opt-in shared memory), and the fused path
// (GPU phi -> GPU drops) vs choose_drops on the same phi. [cpu] cases check judge_gumbel_noise against the CPU
// policy's draws and the host argument validation, without a GPU.
//
// Tolerance for phi: |phi_gpu - phi_cpu| <= 2e-5 + 1e-4 |phi_cpu| (fp32 with different summation orders over
// F ~ 300 products of magnitude ~1: observed ~1e-6; a wrong feature index moves phi by O(0.1)).
// Drop sets are compared exactly: the selection is exact given phi (same order, same fp64 Gumbel keys).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/BFloat16.h>

#include "support/catch.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "fkv_cuda/judge_score.h"
#include "foresightkv/evict/policy.h"
#include "foresightkv/judge/features.h"
#include "foresightkv/judge/judge.h"
#include "foresightkv/judge/policy.h"

using namespace fkv;

namespace {

constexpr uint64_t kSeed = 1234;  // EvictionConfig::seed of the simulated run
constexpr int64_t kLayer = 1, kEvent = 3;

at::Tensor cuda(const at::Tensor& t) { return t.contiguous().to(at::kCUDA); }

void check_cuda(cudaError_t e, const char* what) {
  INFO(what << ": " << cudaGetErrorString(e));
  REQUIRE(e == cudaSuccess);
}

uint64_t stream_of(int64_t seq) { return 1000 + 17 * static_cast<uint64_t>(seq); }

/// Per-row keys of the CPU policy's random streams: row = s * Hkv + j.
std::vector<uint64_t> row_keys(int64_t n_seq, int64_t Hkv) {
  std::vector<uint64_t> keys;
  for (int64_t s = 0; s < n_seq; ++s)
    for (int64_t j = 0; j < Hkv; ++j) keys.push_back(evict::choice_key(kSeed, stream_of(s), kLayer, kEvent, j));
  return keys;
}

/// choose_drops of one sequence (phi [Hkv, C]) with each head's drops sorted ascending.
at::Tensor cpu_drops(const at::Tensor& phi, int64_t d, bool sampled, bool parity, int64_t seq) {
  at::Tensor dr = judge::choose_drops(phi, d, sampled, parity, kSeed, stream_of(seq), kLayer, kEvent);
  return std::get<0>(dr.sort(1));
}

/// GPU drops for phi [rows, stride] (CPU tensor) with per-row candidate counts.
at::Tensor gpu_drops(const at::Tensor& phi_dev, const std::vector<int64_t>& n_cand, int64_t n_seq, int64_t Hkv,
                     int64_t d, bool sampled, bool parity) {
  const int64_t rows = n_seq * Hkv;
  std::vector<double> noise(static_cast<size_t>(rows * 2 * d));
  const std::vector<uint64_t> keys = row_keys(n_seq, Hkv);
  fkv_cuda::judge_gumbel_noise(keys.data(), rows, d, noise.data());
  const at::Tensor noise_dev = cuda(at::from_blob(noise.data(), {rows, 2 * d}, at::kDouble).clone());
  const at::Tensor nc = cuda(at::tensor(n_cand, at::kLong));
  at::Tensor out = at::full({rows, d}, -7, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
  check_cuda(
      fkv_cuda::judge_select_drops(phi_dev.data_ptr<float>(), rows, phi_dev.size(1), nc.data_ptr<int64_t>(), d, sampled,
                                   parity, noise_dev.data_ptr<double>(), out.data_ptr<int64_t>(), nullptr),
      "judge_select_drops");
  check_cuda(cudaDeviceSynchronize(), "sync");
  return out.cpu();
}

struct Case {
  std::string name;
  int64_t Hkv, G, D, nq;
  std::vector<int64_t> N;  // live length per sequence
  int64_t protect, cap;    // protected newest entries; storage capacity (>= every N)
  bool parity;
  int64_t segment;
  at::ScalarType kv;
};

struct Inputs {
  at::Tensor k, v;             // [n_seq, Hkv, cap, D] storage dtype, NaN past N
  at::Tensor probs, cum, dec;  // [n_seq, Hkv, G, nq, cap], [n_seq, Hkv, G, cap] fp32, NaN past N
  std::vector<evict::LayerView> views;
  std::vector<int64_t> n_cand;  // [n_seq * Hkv]
  int64_t max_cand = 0;
};

Inputs make_inputs(const Case& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t S = static_cast<int64_t>(c.N.size());
  Inputs in;
  in.k = at::full({S, c.Hkv, c.cap, c.D}, NAN, at::kFloat).to(c.kv);
  in.v = in.k.clone();
  in.probs = at::full({S, c.Hkv, c.G, c.nq, c.cap}, NAN, at::kFloat);
  in.cum = at::full({S, c.Hkv, c.G, c.cap}, NAN, at::kFloat);
  in.dec = in.cum.clone();
  for (int64_t s = 0; s < S; ++s) {
    const int64_t N = c.N[s];
    in.k[s].narrow(1, 0, N).copy_(at::randn({c.Hkv, N, c.D}, gen, at::kFloat));
    in.v[s].narrow(1, 0, N).copy_(at::randn({c.Hkv, N, c.D}, gen, at::kFloat));
    in.probs[s].narrow(3, 0, N).copy_(at::softmax(at::randn({c.Hkv, c.G, c.nq, N}, gen, at::kFloat).mul_(2), -1));
    in.cum[s].narrow(2, 0, N).copy_(at::rand({c.Hkv, c.G, N}, gen, at::kFloat).mul_(5));
    in.dec[s].narrow(2, 0, N).copy_(at::rand({c.Hkv, c.G, N}, gen, at::kFloat).mul_(3));
    evict::LayerView v;
    v.seq = s;
    v.layer = kLayer;
    v.stream = stream_of(s);
    v.event = kEvent;
    v.n = N;
    v.protect = c.protect;
    v.budget = N - c.protect;
    v.group = c.G;
    v.k = in.k[s].narrow(1, 0, N).to(at::kFloat);  // exact: the Evictor's fp32 view of 16-bit storage
    v.v = in.v[s].narrow(1, 0, N).to(at::kFloat);
    v.pos = at::arange(N, at::kLong).unsqueeze(0).expand({c.Hkv, N}).contiguous();
    v.probs = in.probs[s].narrow(3, 0, N).contiguous();
    v.cum = in.cum[s].narrow(2, 0, N).contiguous();
    v.dec = in.dec[s].narrow(2, 0, N).contiguous();
    in.views.push_back(v);
    for (int64_t j = 0; j < c.Hkv; ++j) in.n_cand.push_back(N - c.protect);
    in.max_cand = std::max(in.max_cand, N - c.protect);
  }
  return in;
}

/// Form (b) inputs: MAX, MIN, SUM, SUM16, SUM8, SUM32 of every sequence's candidates, taken from the CPU's
/// attention_features [Hkv, C, 8G] (index f*G + g) into arrays [n_seq, Hkv, G, cap] (NaN past the candidates).
std::vector<at::Tensor> pack_stats(const std::vector<evict::LayerView>& views, const std::vector<int64_t>& n_cand_seq,
                                   const judge::FeatureOptions& fo, int64_t Hkv, int64_t G, int64_t cap) {
  const int64_t S = static_cast<int64_t>(views.size());
  std::vector<at::Tensor> out;
  for (int f = 0; f < 6; ++f) out.push_back(at::full({S, Hkv, G, cap}, NAN, at::kFloat));
  for (int64_t s = 0; s < S; ++s) {
    const int64_t C = n_cand_seq[s];
    if (C == 0) continue;
    const at::Tensor a = judge::attention_features(views[s], C, fo).view({Hkv, C, 8, G});
    for (int f = 0; f < 6; ++f) out[f][s].narrow(2, 0, C).copy_(a.select(2, f).transpose(1, 2));
  }
  return out;
}

}  // namespace

TEST_CASE("judge_score matches build_features + Judge::score, and fused drops match choose_drops",
          "[cuda][gpu][judge]") {
  FKV_REQUIRE_GPU();
  const std::vector<Case> cases = {
      {"parity G=4 D=64 fp32", 2, 4, 64, 33, {300, 257}, 16, 320, true, 0, at::kFloat},
      {"intended seg=36 nq=40 G=2 D=40 bf16", 3, 2, 40, 40, {77, 129, 50}, 8, 140, false, 36, at::kBFloat16},
      {"intended seg=0 nq=5 G=8 D=128 fp16", 1, 8, 128, 5, {1000}, 64, 1030, false, 0, at::kHalf},
      {"intended seg=20 nq=24 G=1 D=16 fp32", 4, 1, 16, 24, {33, 31}, 1, 40, false, 20, at::kFloat},
      {"parity G=7 D=64 nq=3 bf16", 2, 7, 64, 3, {200, 199}, 32, 210, true, 0, at::kBFloat16},
      {"intended seg=100 nq=64 G=3 D=8 (C = 0 and 1)", 2, 3, 8, 64, {5, 6, 70}, 5, 72, false, 100, at::kFloat},
      {"parity G=4 D=256 fp16 (F = 544: opt-in shared memory)", 1, 4, 256, 8, {100, 37}, 4, 128, true, 0, at::kHalf},
  };
  uint64_t seed = 50;
  for (const Case& c : cases) {
    INFO(c.name);
    const Inputs in = make_inputs(c, ++seed);
    const int64_t n_seq = static_cast<int64_t>(c.N.size()), rows = n_seq * c.Hkv;
    judge::JudgeShape shape;
    shape.n_layer = 2;
    shape.n_head_kv = c.Hkv;
    shape.head_dim = c.D;
    shape.group = c.G;
    // init_std 0.3 (not the official 0.02): phi spread wide enough that a wrong feature shows clearly
    const judge::Judge judge = judge::Judge::init(shape, 0.3, seed);
    const std::vector<at::Tensor> params = judge.parameters();
    const at::Tensor w1 = cuda(params[4 * kLayer]), b1 = cuda(params[4 * kLayer + 1]),
                     w2 = cuda(params[4 * kLayer + 2]), b2 = cuda(params[4 * kLayer + 3]);
    judge::FeatureOptions fo;
    fo.parity = c.parity;
    fo.segment = c.segment;

    const at::Tensor k = cuda(in.k), v = cuda(in.v), probs = cuda(in.probs), cum = cuda(in.cum), dec = cuda(in.dec);
    const at::Tensor nc = cuda(at::tensor(in.n_cand, at::kLong));
    const int64_t stride = in.max_cand + 3;
    constexpr float kSentinel = 12345.f;
    at::Tensor phi = at::full({rows, stride}, kSentinel, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
    fkv_cuda::JudgeScoreArgs a;
    a.n_seq = n_seq;
    a.n_head_kv = c.Hkv;
    a.head_dim = c.D;
    a.group = c.G;
    a.k = k.data_ptr();
    a.v = v.data_ptr();
    a.kv_type = c.kv == at::kFloat  ? fkv_cuda::KvDtype::F32
                : c.kv == at::kHalf ? fkv_cuda::KvDtype::F16
                                    : fkv_cuda::KvDtype::BF16;
    a.kv_capacity = c.cap;
    a.probs = probs.data_ptr<float>();
    a.cum = cum.data_ptr<float>();
    a.dec = dec.data_ptr<float>();
    a.n_query = c.nq;
    a.stat_capacity = c.cap;
    a.n_cand = nc.data_ptr<int64_t>();
    a.parity = c.parity;
    a.segment = c.segment;
    a.w1 = w1.data_ptr<float>();
    a.b1 = b1.data_ptr<float>();
    a.w2 = w2.data_ptr<float>();
    a.b2 = b2.data_ptr<float>();
    a.phi = phi.data_ptr<float>();
    a.phi_stride = stride;
    check_cuda(fkv_cuda::judge_score(a, nullptr), "judge_score");
    check_cuda(cudaDeviceSynchronize(), "sync");
    const at::Tensor got = phi.cpu().view({n_seq, c.Hkv, stride});

    // form (b): the same statistics precomputed (as the attention pass writes them); parity leaves SUM16/8/32 null
    std::vector<int64_t> n_cand_seq;
    for (int64_t s = 0; s < n_seq; ++s) n_cand_seq.push_back(c.N[s] - c.protect);
    std::vector<at::Tensor> st;
    for (const at::Tensor& t : pack_stats(in.views, n_cand_seq, fo, c.Hkv, c.G, c.cap)) st.push_back(cuda(t));
    at::Tensor phi_b = at::full({rows, stride}, kSentinel, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
    fkv_cuda::JudgeScoreArgs ab = a;
    ab.probs = nullptr;
    ab.n_query = 0;
    ab.stat_max = st[0].data_ptr<float>();
    ab.stat_min = st[1].data_ptr<float>();
    ab.stat_sum = st[2].data_ptr<float>();
    ab.stat_sum16 = c.parity ? nullptr : st[3].data_ptr<float>();
    ab.stat_sum8 = c.parity ? nullptr : st[4].data_ptr<float>();
    ab.stat_sum32 = c.parity ? nullptr : st[5].data_ptr<float>();
    ab.phi = phi_b.data_ptr<float>();
    check_cuda(fkv_cuda::judge_score(ab, nullptr), "judge_score (precomputed statistics)");
    check_cuda(cudaDeviceSynchronize(), "sync");
    const at::Tensor got_b = phi_b.cpu().view({n_seq, c.Hkv, stride});

    for (int64_t s = 0; s < n_seq; ++s) {
      const int64_t C = c.N[s] - c.protect;
      INFO("sequence " << s << ", " << C << " candidates");
      if (C == 0) {  // nothing written
        REQUIRE(at::equal(got[s], at::full({c.Hkv, stride}, kSentinel)));
        REQUIRE(at::equal(got_b[s], at::full({c.Hkv, stride}, kSentinel)));
        continue;
      }
      const at::Tensor ref = judge.score(kLayer, judge::build_features(in.views[s], C, fo));  // [Hkv, C]
      for (const at::Tensor& gt : {got, got_b}) {
        const bool b = gt.data_ptr() == got_b.data_ptr();
        INFO((b ? "precomputed statistics" : "probabilities reduced in the kernel"));
        REQUIRE(at::equal(gt[s].narrow(1, C, stride - C), at::full({c.Hkv, stride - C}, kSentinel)));
        const at::Tensor g = gt[s].narrow(1, 0, C);
        const at::Tensor diff = (g - ref).abs();
        INFO("max |dphi| " << diff.max().item<double>() << ", max |phi| " << ref.abs().max().item<double>());
        REQUIRE_FALSE(at::isnan(g).any().item<bool>());
        REQUIRE((diff <= 2e-5 + 1e-4 * ref.abs()).all().item<bool>());
      }
    }

    // fused path: drops chosen on the device from the device phi equal choose_drops on that same phi
    const int64_t min_c = *std::min_element(in.n_cand.begin(), in.n_cand.end());
    if (min_c < 2) continue;
    const int64_t d = std::max<int64_t>(1, min_c / 3);
    for (bool sampled : {true, false}) {
      INFO((sampled ? "foresightkv" : "foresightkv_topk") << ", D = " << d);
      const at::Tensor dg = gpu_drops(phi, in.n_cand, n_seq, c.Hkv, d, sampled, c.parity).view({n_seq, c.Hkv, d});
      for (int64_t s = 0; s < n_seq; ++s) {
        const int64_t C = c.N[s] - c.protect;
        REQUIRE(at::equal(dg[s], cpu_drops(got[s].narrow(1, 0, C).contiguous(), d, sampled, c.parity, s)));
      }
    }
  }
}

TEST_CASE("judge_select_drops equals choose_drops: ties, signed zeros, pool clamp, D == C, C < D, large C",
          "[cuda][gpu][judge]") {
  FKV_REQUIRE_GPU();
  struct SelCase {
    std::string name;
    int64_t Hkv, d;
    std::vector<int64_t> C;
    int tie_mode;  // 0: continuous, 1: quantised to halves (many ties), 2: quantised + signed zeros
  };
  const std::vector<SelCase> cases = {
      {"continuous, 2D > C in one sequence", 4, 18, {50, 30, 100}, 0},
      {"many ties", 3, 7, {64, 15, 200}, 1},
      {"ties and signed zeros", 2, 5, {40, 11, 97}, 2},
      {"D == C", 2, 9, {9, 30}, 0},
      {"D = 1", 5, 1, {1, 2, 3, 1000}, 1},
      {"C = 5000, D = 1024 (opt-in shared memory)", 2, 1024, {5000, 2049}, 0},
      {"C = 9000, D = 2048 (pow2 16384)", 1, 2048, {9000}, 1},
  };
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(77);
  for (const SelCase& c : cases)
    for (bool parity : {false, true})
      for (bool sampled : {true, false}) {
        INFO(c.name << (parity ? ", parity" : ", intended") << (sampled ? ", foresightkv" : ", foresightkv_topk"));
        const int64_t n_seq = static_cast<int64_t>(c.C.size()), rows = n_seq * c.Hkv;
        const int64_t stride = *std::max_element(c.C.begin(), c.C.end()) + 5;
        at::Tensor phi = at::full({n_seq, c.Hkv, stride}, NAN, at::kFloat);  // NaN past the candidates
        std::vector<int64_t> n_cand;
        for (int64_t s = 0; s < n_seq; ++s) {
          at::Tensor x = at::randn({c.Hkv, c.C[s]}, gen, at::kFloat).mul_(1.5);
          if (c.tie_mode >= 1) x = x.mul(2).round().div(2);
          if (c.tie_mode == 2) {  // zeros: -0 everywhere, then +0 in the first third (equal on the CPU)
            const at::Tensor z = x == 0;
            x.masked_fill_(z, -0.f);
            x.narrow(1, 0, c.C[s] / 3).masked_fill_(z.narrow(1, 0, c.C[s] / 3), 0.f);
          }
          phi[s].narrow(1, 0, c.C[s]).copy_(x);
          for (int64_t j = 0; j < c.Hkv; ++j) n_cand.push_back(c.C[s]);
        }
        const at::Tensor dg = gpu_drops(cuda(phi.view({rows, stride})), n_cand, n_seq, c.Hkv, c.d, sampled, parity)
                                  .view({n_seq, c.Hkv, c.d});
        for (int64_t s = 0; s < n_seq; ++s) {
          INFO("sequence " << s << ": C = " << c.C[s]);
          REQUIRE(at::equal(dg[s], cpu_drops(phi[s].narrow(1, 0, c.C[s]).contiguous(), c.d, sampled, parity, s)));
        }
      }
  // a row with fewer candidates than drops gets -1 (the CPU policy throws); the other rows are unaffected
  at::Tensor phi = at::randn({2, 8}, gen, at::kFloat);
  const at::Tensor dg = gpu_drops(cuda(phi), {3, 8}, 1, 2, 4, true, false);
  REQUIRE(at::equal(dg[0], at::full({4}, -1, at::kLong)));
  REQUIRE_THROWS(judge::choose_drops(phi.narrow(1, 0, 3), 4, true, false, kSeed, stream_of(0), kLayer, kEvent));
  const at::Tensor ref_row1 =
      std::get<0>(judge::choose_drops(phi, 4, true, false, kSeed, stream_of(0), kLayer, kEvent)[1].sort(0));
  REQUIRE(at::equal(dg[1], ref_row1));
}

TEST_CASE("judge_gumbel_noise reproduces the foresightkv policy's draws", "[cuda][cpu][judge]") {
  // Host emulation of judge_select_drops' documented algorithm fed with judge_gumbel_noise must give exactly the
  // drop sets of fkv::judge::choose_drops (the CPU policy), for both variants, with ties and a clamped pool.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const int64_t Hkv = 3;
  int64_t checked = 0;
  for (int64_t C : {1, 7, 20, 64, 301})
    for (int64_t d : {1, 3, 10, 40})
      for (bool parity : {false, true})
        for (bool ties : {false, true}) {
          if (d > C) continue;
          at::Tensor phi = at::randn({Hkv, C}, gen, at::kFloat).mul_(2);
          if (ties) phi = phi.mul(2).round().div(2);
          const at::Tensor ref = cpu_drops(phi, d, true, parity, 0);
          const std::vector<uint64_t> keys = row_keys(1, Hkv);
          std::vector<double> noise(static_cast<size_t>(Hkv * 2 * d));
          fkv_cuda::judge_gumbel_noise(keys.data(), Hkv, d, noise.data());
          for (int64_t j = 0; j < Hkv; ++j) {
            const float* p = phi[j].data_ptr<float>();
            std::vector<int64_t> order(static_cast<size_t>(C));
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
            const int64_t P = std::min(2 * d, C);
            std::vector<double> key(static_cast<size_t>(P));
            for (int64_t i = 0; i < P; ++i) {
              const float s = parity ? static_cast<float>(c10::BFloat16(p[order[i]])) : p[order[i]];
              key[i] = static_cast<double>(s) + noise[j * 2 * d + i];
            }
            std::vector<int64_t> pick(static_cast<size_t>(P));
            std::iota(pick.begin(), pick.end(), 0);
            std::stable_sort(pick.begin(), pick.end(), [&](int64_t a, int64_t b) { return key[a] > key[b]; });
            std::vector<int64_t> drop;
            for (int64_t i = 0; i < d; ++i) drop.push_back(order[pick[i]]);
            std::sort(drop.begin(), drop.end());
            INFO("C=" << C << " d=" << d << " parity=" << parity << " ties=" << ties << " head " << j);
            REQUIRE(drop == std::vector<int64_t>(ref[j].data_ptr<int64_t>(), ref[j].data_ptr<int64_t>() + d));
            ++checked;
          }
        }
  REQUIRE(checked > 100);
  // the noise is the stream's, not a fixed table: different keys give different noise, the same key the same
  const uint64_t k2[2] = {1, 2};
  double n2[2 * 2 * 4];
  fkv_cuda::judge_gumbel_noise(k2, 2, 4, n2);
  CHECK(n2[0] != n2[8]);
  const uint64_t k1[1] = {1};
  double n1[2 * 4];
  fkv_cuda::judge_gumbel_noise(k1, 1, 4, n1);
  CHECK(std::equal(n1, n1 + 8, n2));
}

TEST_CASE("the documented feature gather of judge_score reproduces build_features", "[cuda][cpu][judge]") {
  // Host emulation of judge_score's gather (x = [k | v | stat f of head g at 2D + f*G + g], f = MAX, MIN, SUM,
  // SUM16, SUM8, SUM32 from the precomputed arrays, CUM, DEC from the accumulators) on the packed form-(b) inputs
  // must equal build_features exactly, for both variants (this pins the layout the kernel and pack_stats assume).
  for (bool parity : {false, true}) {
    const Case c{"gather", 2, 3, 8, 40, {30, 21}, 4, 32, parity, parity ? 0 : 36, at::kFloat};
    const Inputs in = make_inputs(c, parity ? 9 : 10);
    judge::FeatureOptions fo;
    fo.parity = parity;
    fo.segment = c.segment;
    const std::vector<int64_t> n_cand_seq = {c.N[0] - c.protect, c.N[1] - c.protect};
    const std::vector<at::Tensor> st = pack_stats(in.views, n_cand_seq, fo, c.Hkv, c.G, c.cap);
    const int64_t D = c.D, G = c.G, F = 2 * D + 8 * G;
    for (int64_t s = 0; s < 2; ++s) {
      const int64_t C = n_cand_seq[s];
      const at::Tensor ref = judge::build_features(in.views[s], C, fo);  // [Hkv, C, F]
      at::Tensor x = at::empty({c.Hkv, C, F}, at::kFloat);
      for (int64_t j = 0; j < c.Hkv; ++j)
        for (int64_t n = 0; n < C; ++n) {
          for (int64_t d = 0; d < D; ++d) {
            x[j][n][d] = in.k[s][j][n][d];
            x[j][n][D + d] = in.v[s][j][n][d];
          }
          for (int64_t g = 0; g < G; ++g) {
            for (int f = 0; f < 6; ++f) x[j][n][2 * D + f * G + g] = st[f][s][j][g][n];
            x[j][n][2 * D + 6 * G + g] = in.cum[s][j][g][n];
            x[j][n][2 * D + 7 * G + g] = in.dec[s][j][g][n];
          }
        }
      INFO((parity ? "parity" : "intended") << ", sequence " << s);
      REQUIRE(at::equal(x, ref));
      if (parity) {  // the null SUM16/8/32 fallback of form (b) is right for parity: they equal SUM
        REQUIRE(at::equal(st[3].nan_to_num(0), st[2].nan_to_num(0)));
        REQUIRE(at::equal(st[4].nan_to_num(0), st[2].nan_to_num(0)));
      } else {  // intended with 36 of 40 queries: the three windowed sums differ from SUM
        REQUIRE_FALSE(at::equal(st[4].nan_to_num(0), st[2].nan_to_num(0)));
      }
    }
  }
}

TEST_CASE("judge host API rejects bad arguments without launching", "[cuda][cpu][judge]") {
  float f[4] = {};
  int64_t n[4] = {};
  double g[4] = {};
  fkv_cuda::JudgeScoreArgs a;
  a.n_seq = 1;
  a.n_head_kv = 2;
  a.head_dim = 8;
  a.group = 2;
  a.k = a.v = f;
  a.kv_capacity = 4;
  a.probs = a.cum = a.dec = f;
  a.n_query = 1;
  a.stat_capacity = 4;
  a.n_cand = n;
  a.w1 = a.b1 = a.w2 = a.b2 = f;
  a.phi = f;
  a.phi_stride = 4;
  auto with = [&](auto mutate) {
    fkv_cuda::JudgeScoreArgs b = a;
    mutate(b);
    return fkv_cuda::judge_score(b, nullptr);
  };
  CHECK(with([](auto& b) { b.n_seq = 0; }) == cudaErrorInvalidValue);
  CHECK(with([](auto& b) { b.group = 0; }) == cudaErrorInvalidValue);
  CHECK(with([](auto& b) { b.head_dim = 0; }) == cudaErrorInvalidValue);
  CHECK(with([](auto& b) { b.n_query = 0; }) == cudaErrorInvalidValue);
  CHECK(with([](auto& b) { b.segment = -1; }) == cudaErrorInvalidValue);
  CHECK(with([](auto& b) { b.kv_type = static_cast<fkv_cuda::KvDtype>(7); }) == cudaErrorInvalidValue);
  CHECK(with([](auto& b) { b.probs = nullptr; }) == cudaErrorInvalidValue);
  CHECK(with([](auto& b) { b.w2 = nullptr; }) == cudaErrorInvalidValue);
  CHECK(with([](auto& b) { b.phi = nullptr; }) == cudaErrorInvalidValue);
  CHECK(with([](auto& b) {
          b.phi_stride = 0;
          b.phi = nullptr;
        }) == cudaSuccess);  // nothing to score
  CHECK(fkv_cuda::judge_select_drops(f, 1, 4, n, -1, true, false, g, n, nullptr) == cudaErrorInvalidValue);
  CHECK(fkv_cuda::judge_select_drops(f, 1, 4, n, 2, true, false, nullptr, n, nullptr) == cudaErrorInvalidValue);
  CHECK(fkv_cuda::judge_select_drops(nullptr, 1, 4, n, 2, false, false, nullptr, n, nullptr) == cudaErrorInvalidValue);
  CHECK(fkv_cuda::judge_select_drops(f, -1, 4, n, 2, false, false, nullptr, n, nullptr) == cudaErrorInvalidValue);
  CHECK(fkv_cuda::judge_select_drops(nullptr, 0, 4, nullptr, 2, true, false, nullptr, nullptr, nullptr) ==
        cudaSuccess);  // no rows
}
