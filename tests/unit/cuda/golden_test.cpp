// GPU parity of the Golden Eviction kernels (fkv_cuda/golden.h) against the CPU oracle (foresightkv/golden/schedule.h):
// block-pooled attention vs block_scores / block_scores_dense (fp32 and bf16 probabilities, fp32 and bf16 inputs,
// GQA groups 1-8, T and D not multiples of the 64-tile / 32-chunk / W, W > T, T of several thousand), the future
// suffix max vs future_scores (bit-exact), and the golden schedule built on GPU abar vs on CPU abar (drop sets agree
// except where alpha ties within the tolerance). [cpu] cases check the host-side argument validation and the step
// arithmetic without a GPU.
//
// Tolerances (the GPU computes logits in fp32, the CPU in fp64; softmax sums in fp32 in both, different orders):
//   fp32 probabilities: |abar_gpu - abar_cpu| <= 1e-6 + 1e-4 |abar_cpu|   (observed error ~1e-7 relative; 1e-6 is
//     far below the 1/T scale of an average entry for the T used here, and the brief's 1e-5 absolute is looser)
//   bf16 probabilities: the same + 2^-8 |abar_cpu| (a probability within rounding distance of a bf16 boundary may
//     round to the neighbouring bf16 value: one bf16 ulp is <= 2^-8 p and p/(G*W) <= abar), and at most 1% of the
//     elements may exceed the fp32 bound (a missing or wrong rounding would move nearly all of them).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "support/catch.h"

#include <array>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "fkv_cuda/golden.h"
#include "foresightkv/golden/schedule.h"

using namespace fkv;

namespace {

constexpr double kAtol = 1e-6, kRtol = 1e-4, kBf16Rtol = 0x1.0p-8;

at::Tensor cuda(const at::Tensor& t) { return t.contiguous().to(at::kCUDA); }

void check_cuda(cudaError_t e, const char* what) {
  INFO(what << ": " << cudaGetErrorString(e));
  REQUIRE(e == cudaSuccess);
}

/// q [Hq, T, D], k [Hkv, T, D]: random post-RoPE-like inputs; per query head a different logit scale so that some
/// heads attend nearly uniformly and others are peaked (exercises the max subtraction and tiny probabilities).
std::pair<at::Tensor, at::Tensor> make_qk(int64_t Hkv, int64_t G, int64_t T, int64_t D, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor q = at::randn({Hkv * G, T, D}, gen, at::kFloat);
  at::Tensor k = at::randn({Hkv, T, D}, gen, at::kFloat);
  at::Tensor head_scale = at::linspace(0.3, 3.0, Hkv * G, at::kFloat).view({Hkv * G, 1, 1});
  return {q.mul_(head_scale), k};
}

/// abar on the GPU through golden_block_scores; q and k (CPU, fp32) are converted to `type` first.
at::Tensor gpu_abar(const at::Tensor& q, const at::Tensor& k, int64_t W, bool bf16_probs,
                    fkv_cuda::GoldenInputType type = fkv_cuda::GoldenInputType::F32) {
  const int64_t Hq = q.size(0), Hkv = k.size(0), T = q.size(1), D = q.size(2);
  const at::ScalarType st = type == fkv_cuda::GoldenInputType::F32   ? at::kFloat
                            : type == fkv_cuda::GoldenInputType::F16 ? at::kHalf
                                                                     : at::kBFloat16;
  at::Tensor qd = cuda(q.to(st)), kd = cuda(k.to(st));
  at::Tensor ws = at::empty({static_cast<int64_t>(fkv_cuda::golden_block_scores_workspace_bytes(Hq, T) / 4)},
                            at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
  // NaN-filled: every element must be written by the kernel
  at::Tensor abar = at::full({Hkv, T, fkv_cuda::golden_num_blocks(T, W)}, NAN,
                             at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
  check_cuda(fkv_cuda::golden_block_scores(qd.data_ptr(), kd.data_ptr(), type, Hq, Hkv, T, D, W, bf16_probs,
                                           ws.data_ptr<float>(), abar.data_ptr<float>(), nullptr),
             "golden_block_scores");
  check_cuda(cudaDeviceSynchronize(), "sync");
  return abar.cpu();
}

/// Element-wise |got - ref| <= atol + rtol |ref| (+ 2^-8 |ref| for bf16 probabilities, with at most 1% of the
/// elements beyond the fp32 bound); NaN in got fails.
void require_abar_close(const at::Tensor& got, const at::Tensor& ref, bool bf16_probs, const std::string& what) {
  REQUIRE(got.sizes() == ref.sizes());
  REQUIRE_FALSE(at::isnan(ref).any().item<bool>());
  const at::Tensor diff = (got - ref).abs(), mag = ref.abs();
  const at::Tensor strict = diff > (kAtol + kRtol * mag);
  const at::Tensor bad = (bf16_probs ? diff > (kAtol + (kRtol + kBf16Rtol) * mag) : strict) | at::isnan(got);
  const int64_t n = ref.numel(), n_bad = bad.sum().item<int64_t>(), n_strict = strict.sum().item<int64_t>();
  INFO(what << ": max |diff| " << diff.max().item<double>() << ", max |ref| " << mag.max().item<double>() << ", "
            << n_bad << " elements out of tolerance, " << n_strict << " beyond the fp32 bound, of " << n);
  REQUIRE(n_bad == 0);
  if (bf16_probs) REQUIRE(n_strict * 100 <= n);
}

/// The schedules from the GPU and the CPU abar agree per KV head step by step; at the first step where they differ
/// (the trajectories then diverge, so later steps are not comparable) every slot in the symmetric difference must
/// have an alpha tied with the drop threshold within the tolerance.
void require_schedules_agree(const at::Tensor& abar_gpu, const at::Tensor& abar_cpu, int64_t T,
                             const golden::GoldenOptions& opt, int64_t* n_agreeing_steps) {
  const golden::GoldenLayerLabels lg = golden::golden_schedule(abar_gpu, T, opt);
  const golden::GoldenLayerLabels lc = golden::golden_schedule(abar_cpu, T, opt);
  REQUIRE(lg.drops.sizes() == lc.drops.sizes());
  const int64_t S = lc.drops.size(0), Hkv = lc.drops.size(1), W = opt.window, B = opt.budget;
  const double rtol = kRtol + (opt.bf16_probs ? kBf16Rtol : 0.0);
  auto dg = lg.drops.accessor<int64_t, 3>(), dc = lc.drops.accessor<int64_t, 3>();
  auto sc = lc.scores.accessor<float, 3>();  // -alpha on the CPU trajectory
  for (int64_t j = 0; j < Hkv; ++j)
    for (int64_t s = 0; s < S; ++s) {
      std::set<int64_t> a, b;
      for (int64_t i = 0; i < W; ++i) a.insert(dg[s][j][i]), b.insert(dc[s][j][i]);
      if (a == b) {
        ++*n_agreeing_steps;
        continue;
      }
      double thr = -1e300;  // the largest alpha the CPU drops
      for (int64_t n : b) thr = std::max(thr, -static_cast<double>(sc[s][j][n]));
      std::set<int64_t> diff;
      for (int64_t n : a)
        if (!b.count(n)) diff.insert(n);
      for (int64_t n : b)
        if (!a.count(n)) diff.insert(n);
      for (int64_t n : diff) {
        REQUIRE(n < B);
        const double alpha = -static_cast<double>(sc[s][j][n]);
        INFO("head " << j << " step " << s << " slot " << n << ": alpha " << alpha << " vs threshold " << thr);
        REQUIRE(std::abs(alpha - thr) <= 2 * (kAtol + rtol * std::abs(thr)));
      }
      break;  // trajectories diverge after a tie
    }
}

struct Shape {
  int64_t Hkv, G, T, D, W;
};

}  // namespace

TEST_CASE("golden_block_scores matches block_scores and block_scores_dense", "[cuda][gpu][golden]") {
  FKV_REQUIRE_GPU();
  // odd T, T < one tile, T not a multiple of 64 or W, D not a multiple of the 32-chunk, W > T, W = 1, G = 1..8
  const std::vector<Shape> shapes = {{1, 1, 1, 8, 4},     {2, 3, 97, 16, 16},    {1, 8, 130, 64, 32},
                                     {2, 4, 257, 40, 7},  {3, 2, 200, 128, 256}, {1, 5, 65, 33, 1},
                                     {2, 7, 191, 64, 64}, {4, 1, 333, 24, 50}};
  uint64_t seed = 100;
  for (const Shape& s : shapes)
    for (bool bf16 : {false, true}) {
      const std::string what = "Hkv=" + std::to_string(s.Hkv) + " G=" + std::to_string(s.G) +
                               " T=" + std::to_string(s.T) + " D=" + std::to_string(s.D) + " W=" + std::to_string(s.W) +
                               (bf16 ? " bf16 probs" : " fp32 probs");
      auto [q, k] = make_qk(s.Hkv, s.G, s.T, s.D, ++seed);
      const at::Tensor got = gpu_abar(q, k, s.W, bf16);
      require_abar_close(got, golden::block_scores(q, k, s.W, bf16), bf16, what + " vs block_scores");
      require_abar_close(got, golden::block_scores_dense(q, k, s.W, bf16), bf16, what + " vs block_scores_dense");
      // the zero-padded tail: keys after a block's last query are exactly 0
      const int64_t nb = got.size(2);
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t last = std::min(s.T, (b + 1) * s.W) - 1;
        if (last + 1 < s.T)
          REQUIRE(got.select(2, b).narrow(1, last + 1, s.T - last - 1).abs().max().item<float>() == 0);
      }
    }
}

TEST_CASE("golden_block_scores with bf16 and fp16 inputs equals the oracle on the rounded inputs",
          "[cuda][gpu][golden]") {
  FKV_REQUIRE_GPU();
  auto [q, k] = make_qk(2, 4, 301, 64, 7);
  for (auto [type, st] : {std::pair{fkv_cuda::GoldenInputType::BF16, at::kBFloat16},
                          std::pair{fkv_cuda::GoldenInputType::F16, at::kHalf}}) {
    const at::Tensor qr = q.to(st).to(at::kFloat), kr = k.to(st).to(at::kFloat);
    require_abar_close(gpu_abar(q, k, 32, false, type), golden::block_scores(qr, kr, 32, false), false,
                       "16-bit inputs, fp32 probs");
    require_abar_close(gpu_abar(q, k, 32, true, type), golden::block_scores(qr, kr, 32, true), true,
                       "16-bit inputs, bf16 probs");
  }
}

TEST_CASE("golden_future_scores equals future_scores bit for bit", "[cuda][gpu][golden]") {
  FKV_REQUIRE_GPU();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  // (Hkv, T, B, W): partial last block, exact multiple, one step, many steps
  const std::vector<std::array<int64_t, 4>> cases = {{2, 1000, 256, 64}, {3, 768, 128, 32},    {1, 97, 16, 8},
                                                     {2, 210, 32, 16},   {1, 4096, 1024, 256}, {5, 49, 8, 8}};
  for (const auto& c : cases) {
    const int64_t Hkv = c[0], T = c[1], B = c[2], W = c[3], nb = fkv_cuda::golden_num_blocks(T, W);
    golden::GoldenOptions opt;
    opt.budget = B;
    opt.window = W;
    const int64_t S = golden::golden_steps(T, B, W);
    REQUIRE(S > 0);
    // a few exact ties and repeated values so the suffix max is exercised on equal entries
    at::Tensor abar = at::rand({Hkv, T, nb}, gen, at::kFloat).mul_(8).floor_().div_(8);
    const at::Tensor ref = golden::future_scores(abar, T, opt);
    at::Tensor out = at::full({Hkv, T, S}, NAN, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
    const at::Tensor ad = cuda(abar);
    check_cuda(fkv_cuda::golden_future_scores(ad.data_ptr<float>(), Hkv, T, B, W, out.data_ptr<float>(), nullptr),
               "golden_future_scores");
    check_cuda(cudaDeviceSynchronize(), "sync");
    INFO("Hkv=" << Hkv << " T=" << T << " B=" << B << " W=" << W);
    REQUIRE(at::equal(out.cpu(), ref));
  }
  // S == 0 (T <= B + W): nothing to compute, nothing written, success
  at::Tensor untouched = at::full({4}, 7.f, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
  REQUIRE(golden::golden_steps(96, 64, 32) == 0);
  const at::Tensor small = cuda(at::rand({1, 96, 3}, gen, at::kFloat));
  check_cuda(
      fkv_cuda::golden_future_scores(small.data_ptr<float>(), 1, 96, 64, 32, untouched.data_ptr<float>(), nullptr),
      "golden_future_scores S = 0");
  REQUIRE(at::equal(untouched.cpu(), at::full({4}, 7.f)));
}

TEST_CASE("golden kernels on a long sequence: abar, future scores and the schedule agree with the CPU oracle",
          "[cuda][gpu][golden]") {
  FKV_REQUIRE_GPU();
  // T = 4133: several thousand tokens, not a multiple of the 64-tile or of W; G = 4 (Qwen3-4B's group), D = 64
  const int64_t Hkv = 2, G = 4, T = 4133, D = 64, W = 256, B = 1024;
  auto [q, k] = make_qk(Hkv, G, T, D, 2024);
  for (bool bf16 : {true, false}) {
    const std::string what = bf16 ? "T=4133 bf16 probs" : "T=4133 fp32 probs";
    const at::Tensor got = gpu_abar(q, k, W, bf16);
    const at::Tensor ref = golden::block_scores(q, k, W, bf16);
    require_abar_close(got, ref, bf16, what);
    golden::GoldenOptions opt;
    opt.budget = B;
    opt.window = W;
    opt.bf16_probs = bf16;
    // future scores on the device from the device abar, against the CPU's on the same abar (bit-exact)
    const int64_t S = fkv_cuda::golden_num_steps(T, B, W);
    REQUIRE(S == golden::golden_steps(T, B, W));
    at::Tensor fut = at::empty({Hkv, T, S}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
    const at::Tensor gd = cuda(got);
    check_cuda(fkv_cuda::golden_future_scores(gd.data_ptr<float>(), Hkv, T, B, W, fut.data_ptr<float>(), nullptr),
               "golden_future_scores");
    check_cuda(cudaDeviceSynchronize(), "sync");
    REQUIRE(at::equal(fut.cpu(), golden::future_scores(got, T, opt)));
    int64_t agreeing = 0;
    require_schedules_agree(got, ref, T, opt, &agreeing);
    INFO(what << ": " << agreeing << " of " << S * Hkv << " (step, head) drop sets identical before any tie");
    REQUIRE(agreeing > 0);
  }
}

TEST_CASE("golden host API rejects bad arguments without launching", "[cuda][cpu][golden]") {
  float dummy[8] = {};
  float* p = dummy;
  using fkv_cuda::GoldenInputType;
  // Hq not a multiple of Hkv, W = 0, D = 0, negative T, null pointers, too many blocks (gridDim.y)
  CHECK(fkv_cuda::golden_block_scores(p, p, GoldenInputType::F32, 6, 4, 10, 8, 4, true, p, p, nullptr) ==
        cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_block_scores(p, p, GoldenInputType::F32, 4, 2, 10, 8, 0, true, p, p, nullptr) ==
        cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_block_scores(p, p, GoldenInputType::F32, 4, 2, 10, 0, 4, true, p, p, nullptr) ==
        cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_block_scores(p, p, GoldenInputType::F32, 4, 2, -1, 8, 4, true, p, p, nullptr) ==
        cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_block_scores(nullptr, p, GoldenInputType::F32, 4, 2, 10, 8, 4, true, p, p, nullptr) ==
        cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_block_scores(p, p, GoldenInputType::F32, 4, 2, 10, 8, 4, true, nullptr, p, nullptr) ==
        cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_block_scores(p, p, static_cast<GoldenInputType>(9), 4, 2, 10, 8, 4, true, p, p, nullptr) ==
        cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_block_scores(p, p, GoldenInputType::F32, 4, 2, 70000, 8, 1, true, p, p, nullptr) ==
        cudaErrorInvalidValue);
  // T = 0 is a no-op that succeeds without touching the device
  CHECK(fkv_cuda::golden_block_scores(nullptr, nullptr, GoldenInputType::F32, 4, 2, 0, 8, 4, true, nullptr, nullptr,
                                      nullptr) == cudaSuccess);
  // B not a positive multiple of W, null output with steps to compute
  CHECK(fkv_cuda::golden_future_scores(p, 1, 1000, 100, 64, p, nullptr) == cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_future_scores(p, 1, 1000, 0, 64, p, nullptr) == cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_future_scores(p, 0, 1000, 128, 64, p, nullptr) == cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_future_scores(p, 1, 1000, 128, 64, nullptr, nullptr) == cudaErrorInvalidValue);
  CHECK(fkv_cuda::golden_future_scores(nullptr, 1, 192, 128, 64, nullptr, nullptr) == cudaSuccess);  // S == 0
}

TEST_CASE("golden_num_steps and golden_num_blocks agree with the CPU oracle's arithmetic", "[cuda][cpu][golden]") {
  for (int64_t W : {1, 3, 16, 64, 256})
    for (int64_t m : {1, 2, 4})
      for (int64_t T : {0, 1, 5, 63, 64, 65, 255, 256, 257, 1000, 1279, 1280, 1281, 4133, 32768}) {
        const int64_t B = m * W;
        INFO("T=" << T << " B=" << B << " W=" << W);
        REQUIRE(fkv_cuda::golden_num_steps(T, B, W) == golden::golden_steps(T, B, W));
        // the block count is the one the oracle's abar has (dense oracle on a [1, T, 1] input; small T only)
        if (T > 0 && T <= 300) {
          const at::Tensor z = at::zeros({1, T, 1});
          REQUIRE(fkv_cuda::golden_num_blocks(T, W) == golden::block_scores_dense(z, z, W).size(2));
        }
      }
  CHECK(fkv_cuda::golden_num_steps(100, 10, 4) == -1);  // B not a multiple of W
  CHECK(fkv_cuda::golden_num_steps(-1, 8, 4) == -1);
}
