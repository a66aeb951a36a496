// ops/qmatmul against its reference: io::dequantize_row + a double-precision dot, for every type,
// both regimes (decode n_tok <= 8, prefill above), odd shapes, row-range splits and thread counts;
// the portable path too. A hidden [.bench] case prints GB/s and GFLOP/s.
//
// Tolerance: qmatmul accumulates in fp32 in a different order than the reference, and for formats
// with a min it uses d*(q.x) + m*sum(x) instead of sum((d*q + m)*x). Both are re-associations, so the
// error is bounded by about n * u * S with S = sum_c (|d q_c| + |m|) |x_c| and u = 2^-24 (n * u = 9e-5
// for n = 1536), and in practice grows like sqrt(n) * u * S (2.3e-6 at n = 1536). We check
// |y - ref| <= kRtol * S + kAtol elementwise with kRtol = 4e-6 and kAtol = 1e-30; the largest ratio
// seen on the AVX2 kernels is 2e-7 * S, so the bound has a 20x margin for other summation orders
// (AVX-512, thread splits). A wrong nibble, scale or block offset gives errors of order S.
#include "support/catch.h"

#include <ATen/Parallel.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/io/gguf.h"
#include "foresightkv/io/quant.h"
#include "foresightkv/ops/qmatmul.h"
#include "support/paths.h"

namespace io = fkv::io;
namespace ops = fkv::ops;
using io::GgmlType;

namespace {

constexpr double kRtol = 4e-6;
constexpr double kAtol = 1e-30;

// Offsets of the f16 scale/min fields inside one block (random bytes elsewhere are valid levels).
std::vector<int> f16_scale_offsets(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: case GgmlType::IQ4_NL: case GgmlType::IQ4_XS:
      return {0};
    case GgmlType::Q4_1: case GgmlType::Q5_1: case GgmlType::Q4_K: case GgmlType::Q5_K: return {0, 2};
    case GgmlType::Q6_K: return {208};
    case GgmlType::Q2_K: return {80, 82};
    case GgmlType::Q3_K: return {108};
    default: return {};
  }
}

struct Matrix {
  GgmlType type;
  int64_t rows, cols;
  size_t stride;
  std::vector<uint8_t> bytes;
  ops::WeightView view() const { return {type, rows, cols, bytes.data(), stride}; }
};

// Random weights of any dequantizable type; `pad` extra bytes per row exercise row_stride.
Matrix random_matrix(GgmlType t, int64_t rows, int64_t cols, std::mt19937& rng, size_t pad = 0) {
  Matrix m{t, rows, cols, io::row_bytes(t, cols) + pad, {}};
  m.bytes.resize(m.stride * size_t(rows));
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  const int64_t n = rows * cols;
  auto put16 = [](uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); };
  if (t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        uint8_t* p = m.bytes.data() + size_t(r) * m.stride;
        const float v = nd(rng);
        if (t == GgmlType::F32) std::memcpy(p + 4 * c, &v, 4);
        if (t == GgmlType::F16) put16(p + 2 * c, io::fp32_to_fp16(v));
        if (t == GgmlType::BF16) put16(p + 2 * c, io::fp32_to_bf16(v));
      }
    return m;
  }
  for (uint8_t& b : m.bytes) b = uint8_t(byte(rng));
  const auto& tt = io::type_traits(t);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < cols / tt.block_size; ++b) {
      uint8_t* blk = m.bytes.data() + size_t(r) * m.stride + size_t(b * tt.type_size);
      for (int off : f16_scale_offsets(t)) put16(blk + off, io::fp32_to_fp16(scale(rng)));
      if (t == GgmlType::Q8_K) {
        const float d = scale(rng);
        std::memcpy(blk, &d, 4);
      }
    }
  (void)n;
  return m;
}

std::vector<float> random_x(int64_t n_tok, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(n_tok * cols));
  for (float& v : x) v = nd(rng);
  return x;
}

// Reference y and the error scale S (see the file comment) from io::dequantize_row in double.
// |d q| + |m| is bounded by the dequantized |w| plus |m|; for simplicity S uses 2 * max-abs per
// 32-element group for formats with a min, which over-estimates S by at most ~2x.
void reference(const Matrix& m, const std::vector<float>& x, int64_t n_tok, std::vector<double>& y,
               std::vector<double>& scale) {
  y.assign(size_t(n_tok * m.rows), 0.0);
  scale.assign(y.size(), 0.0);
  std::vector<float> w(size_t(m.cols));
  const bool has_min = m.type == GgmlType::Q4_1 || m.type == GgmlType::Q5_1 || m.type == GgmlType::Q4_K ||
                       m.type == GgmlType::Q5_K || m.type == GgmlType::Q2_K;
  for (int64_t r = 0; r < m.rows; ++r) {
    io::dequantize_row(m.type, m.bytes.data() + size_t(r) * m.stride, w.data(), m.cols);
    std::vector<double> mag(w.size());
    for (size_t c = 0; c < w.size(); ++c) mag[c] = std::fabs(double(w[c]));
    if (has_min)
      for (size_t g = 0; g < w.size(); g += 32) {
        double mx = 0;
        for (size_t c = g; c < g + 32; ++c) mx = std::max(mx, mag[c]);
        for (size_t c = g; c < g + 32; ++c) mag[c] = 2 * mx;
      }
    for (int64_t t = 0; t < n_tok; ++t) {
      double s = 0, a = 0;
      for (int64_t c = 0; c < m.cols; ++c) {
        const double xv = x[size_t(t * m.cols + c)];
        s += double(w[size_t(c)]) * xv;
        a += mag[size_t(c)] * std::fabs(xv);
      }
      y[size_t(t * m.rows + r)] = s;
      scale[size_t(t * m.rows + r)] = a;
    }
  }
}

// Largest |y - ref| / (kRtol * S + kAtol) over all outputs (<= 1 passes).
double worst_ratio(const std::vector<float>& y, const std::vector<double>& ref, const std::vector<double>& scale) {
  double worst = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::fabs(double(y[i]) - ref[i]) / (kRtol * scale[i] + kAtol));
  }
  return worst;
}

const GgmlType kSimdTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                               GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                               GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                               GgmlType::IQ4_NL, GgmlType::IQ4_XS};
// Q8_K is ggml's activation format for its K-quant dot products, not a weight format of model files.
const GgmlType kPortableOnly[] = {GgmlType::Q8_K};

// Shapes per block size: odd row counts, one block, several, and more than one prefill K-chunk
// (qmatmul.cpp splits more than 1024 columns into equal chunks).
std::vector<std::pair<int64_t, int64_t>> shapes_for(GgmlType t) {
  const int64_t bs = io::type_traits(t).block_size;
  if (bs == 1) return {{37, 600}, {5, 1100}, {7, 45}, {3, 8}, {1, 1}};
  if (bs == 32) return {{37, 576}, {9, 1536}, {5, 96}, {1, 32}};
  return {{37, 768}, {5, 1280}, {3, 256}};
}

}  // namespace

TEST_CASE("qmatmul matches dequantize + double dot for every type and n_tok", "[unit][quant][qmatmul]") {
  INFO("kernels: " << ops::matmul_kernel_name());
  std::mt19937 rng(42);
  std::vector<GgmlType> types(std::begin(kSimdTypes), std::end(kSimdTypes));
  types.insert(types.end(), std::begin(kPortableOnly), std::end(kPortableOnly));
  for (GgmlType t : types) {
    REQUIRE(ops::matmul_supported(t));
    for (auto [rows, cols] : shapes_for(t)) {
      const Matrix m = random_matrix(t, rows, cols, rng, rows % 2 ? 0 : 8);
      for (int64_t n_tok : {1, 3, 8, 17, 130}) {
        INFO(io::type_name(t) << " [" << rows << ", " << cols << "] n_tok " << n_tok);
        const std::vector<float> x = random_x(n_tok, cols, rng);
        std::vector<double> ref, scale;
        reference(m, x, n_tok, ref, scale);
        std::vector<float> y(ref.size(), std::numeric_limits<float>::quiet_NaN());
        ops::matmul(m.view(), x.data(), n_tok, y.data());
        CHECK(worst_ratio(y, ref, scale) <= 1.0);
        std::vector<float> yp(ref.size(), std::numeric_limits<float>::quiet_NaN());
        ops::matmul_rows_portable(m.view(), x.data(), n_tok, yp.data(), 0, rows);
        CHECK(worst_ratio(yp, ref, scale) <= 1.0);
      }
    }
  }
}

// The activation-quantized path: x rounded to int8 per 32 columns by this test's own loop (dx = amax / 127,
// round-half-even of x * (1 / dx)), then the same double reference on xq = dx * q. The integer products
// are exact in the kernel, so only fp32 accumulation order remains: the same kRtol bound applies.
std::vector<float> quantized_x_reference(const std::vector<float>& x) {
  std::vector<float> xq(x.size());
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0.f;
    for (size_t j = b; j < b + 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
    for (size_t j = b; j < b + 32; ++j) xq[j] = d * std::nearbyint(x[j] * id);
  }
  return xq;
}

TEST_CASE("qmatmul q8 activations: integer products equal the reference on quantized x", "[unit][quant][qmatmul]") {
  std::mt19937 rng(7);
  const GgmlType q8_types[] = {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                               GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                               GgmlType::IQ4_NL, GgmlType::IQ4_XS};
  const bool simd = std::string(ops::matmul_kernel_name()) != "portable";
  for (GgmlType t : q8_types) {
    CHECK(ops::matmul_q8_supported(t) == simd);
    for (auto [rows, cols] : shapes_for(t)) {
      const Matrix m = random_matrix(t, rows, cols, rng, rows % 2 ? 0 : 8);
      for (int64_t n_tok : {1, 2, 5, 8}) {
        INFO(io::type_name(t) << " [" << rows << ", " << cols << "] n_tok " << n_tok);
        std::vector<float> x = random_x(n_tok, cols, rng);
        if (cols > 32)
          for (int64_t c = 0; c < 32; ++c) x[size_t(c)] = 0.f;  // an all-zero block (dx = 0)
        const std::vector<float> xq = quantized_x_reference(x);
        std::vector<double> ref, scale;
        reference(m, simd ? xq : x, n_tok, ref, scale);
        std::vector<float> y(ref.size(), std::numeric_limits<float>::quiet_NaN());
        ops::matmul_q8(m.view(), x.data(), n_tok, y.data());
        CHECK(worst_ratio(y, ref, scale) <= 1.0);
        // and it is not the fp32 path in disguise: quantizing x changes the result measurably
        if (simd) {
          std::vector<double> ref32, scale32;
          reference(m, x, n_tok, ref32, scale32);
          double dev = 0;
          for (size_t i = 0; i < y.size(); ++i) dev = std::max(dev, std::fabs(double(y[i]) - ref32[i]) / scale32[i]);
          CHECK(dev > 1e-5);
          CHECK(dev < 1.0 / 127);  // |xq - x| <= dx / 2 = max|x| / 254 per element
        }
      }
      // longer chunks take the fp32 path: bitwise equal to matmul
      const std::vector<float> x = random_x(17, cols, rng);
      std::vector<float> a(size_t(17 * rows)), b(a.size());
      ops::matmul_q8(m.view(), x.data(), 17, a.data());
      ops::matmul(m.view(), x.data(), 17, b.data());
      CHECK(a == b);
    }
  }
  // types without an integer kernel fall back to the fp32 path
  CHECK_FALSE(ops::matmul_q8_supported(GgmlType::F32));
  CHECK_FALSE(ops::matmul_q8_supported(GgmlType::Q8_K));
}

TEST_CASE("quantize_activations_q8 on hand cases", "[unit][quant][qmatmul]") {
  std::vector<float> x(64, 0.f);
  for (int j = 0; j < 32; ++j) x[size_t(j)] = float(j) - 16.f;  // amax 16 -> dx = 16 / 127
  x[40] = -2.f;                                                  // second block: amax 2, dx = 2 / 127
  x[41] = 1.f;
  std::vector<int8_t> q(64);
  std::vector<float> dx(2);
  ops::quantize_activations_q8(x.data(), 64, q.data(), dx.data());
  CHECK(dx[0] == 16.f / 127.f);
  CHECK(dx[1] == 2.f / 127.f);
  CHECK(q[0] == -127);
  CHECK(q[31] == 119);  // 15 * 127 / 16 = 119.06
  CHECK(q[15] == -8);   // -127 / 16 = -7.94
  CHECK(q[16] == 0);
  CHECK(q[40] == -127);
  CHECK((q[41] == 63 || q[41] == 64));  // 63.5 up to the rounding of 1 / dx
  CHECK(q[32] == 0);
  std::vector<float> z(32, 0.f);
  ops::quantize_activations_q8(z.data(), 32, q.data(), dx.data());
  CHECK(dx[0] == 0.f);
  CHECK(q[0] == 0);
  CHECK_THROWS_AS(ops::quantize_activations_q8(z.data(), 31, q.data(), dx.data()), fkv::InvalidArgument);
}

TEST_CASE("qmatmul: row ranges write only their rows and agree bitwise with the whole", "[unit][quant][qmatmul]") {
  std::mt19937 rng(7);
  for (GgmlType t : kSimdTypes) {
    const int64_t cols = io::type_traits(t).block_size == 256 ? 512 : 96;
    const Matrix m = random_matrix(t, 53, cols, rng);
    for (int64_t n_tok : {1, 5, 40}) {
      INFO(io::type_name(t) << " n_tok " << n_tok);
      const std::vector<float> x = random_x(n_tok, cols, rng);
      std::vector<float> whole(size_t(n_tok * m.rows));
      ops::matmul(m.view(), x.data(), n_tok, whole.data());
      std::vector<float> parts(whole.size(), std::numeric_limits<float>::quiet_NaN());
      ops::matmul_rows(m.view(), x.data(), n_tok, parts.data(), 11, 30);
      for (int64_t tk = 0; tk < n_tok; ++tk)
        for (int64_t r = 0; r < m.rows; ++r) {
          const float v = parts[size_t(tk * m.rows + r)];
          if (r >= 11 && r < 30)
            REQUIRE(std::memcmp(&v, &whole[size_t(tk * m.rows + r)], 4) == 0);
          else
            REQUIRE(std::isnan(v));
        }
      ops::matmul_rows(m.view(), x.data(), n_tok, parts.data(), 0, 11);
      ops::matmul_rows(m.view(), x.data(), n_tok, parts.data(), 30, 53);
      ops::matmul_rows(m.view(), x.data(), n_tok, parts.data(), 20, 20);  // empty range: no-op
      CHECK(std::memcmp(parts.data(), whole.data(), 4 * whole.size()) == 0);
    }
  }
}

// Threads split output rows (decode) or 32-row tiles (prefill), never a dot product, so every output value
// is computed by the same instructions whatever the thread count: bitwise equal, in both regimes (n_tok <= 8:
// the decode kernels, fp32 and int8 activations; n_tok > 8: the tiled prefill kernel, incl. token tails).
TEST_CASE("qmatmul: results do not depend on the thread count", "[unit][quant][qmatmul]") {
  std::mt19937 rng(9);
  const int saved = at::get_num_threads();
  for (GgmlType t : kSimdTypes) {
    const int64_t cols = io::type_traits(t).block_size == 256 ? 768 : 576;
    const Matrix m = random_matrix(t, 301, cols, rng);
    for (int64_t n_tok : {1, 4, 8, 9, 16, 33}) {
      INFO(io::type_name(t) << " n_tok " << n_tok);
      const std::vector<float> x = random_x(n_tok, cols, rng);
      for (bool q8 : {false, true}) {
        if (q8 && !ops::matmul_q8_supported(t)) continue;
        INFO("int8 activations " << q8);
        std::vector<float> y1(size_t(n_tok * m.rows)), y2(y1.size());
        at::set_num_threads(1);
        (q8 ? ops::matmul_q8 : ops::matmul)(m.view(), x.data(), n_tok, y1.data());
        at::set_num_threads(2);
        (q8 ? ops::matmul_q8 : ops::matmul)(m.view(), x.data(), n_tok, y2.data());
        CHECK(std::memcmp(y1.data(), y2.data(), 4 * y1.size()) == 0);
      }
    }
  }
  at::set_num_threads(saved);
}

TEST_CASE("qmatmul: dequantize_row, supported types and argument errors", "[unit][quant][qmatmul]") {
  std::mt19937 rng(3);
  const Matrix m = random_matrix(GgmlType::Q4_K, 4, 512, rng, 16);
  std::vector<float> a(512), b(512);
  ops::dequantize_row(m.view(), 2, a.data());
  io::dequantize_row(GgmlType::Q4_K, m.bytes.data() + 2 * m.stride, b.data(), 512);
  CHECK(a == b);
  CHECK_THROWS_AS(ops::dequantize_row(m.view(), 4, a.data()), fkv::InvalidArgument);

  CHECK_FALSE(ops::matmul_supported(GgmlType::Q8_1));
  CHECK_FALSE(ops::matmul_supported(GgmlType(16)));
  const std::string kn = ops::matmul_kernel_name();
  CHECK((kn == "avx512" || kn == "avx2" || kn == "portable"));

  std::vector<float> x(512), y(8);
  ops::WeightView w = m.view();
  CHECK_THROWS_AS(ops::matmul_rows(w, x.data(), 1, y.data(), 3, 2), fkv::InvalidArgument);
  CHECK_THROWS_AS(ops::matmul_rows(w, x.data(), 1, y.data(), 0, 5), fkv::InvalidArgument);
  w.row_stride = 100;
  CHECK_THROWS_AS(ops::matmul(w, x.data(), 1, y.data()), fkv::InvalidArgument);
  w = m.view();
  w.type = GgmlType::Q8_1;
  CHECK_THROWS_AS(ops::matmul(w, x.data(), 1, y.data()), fkv::InvalidArgument);
  w = m.view();
  w.cols = 500;  // not a whole number of Q4_K blocks
  CHECK_THROWS_AS(ops::matmul(w, x.data(), 1, y.data()), fkv::InvalidArgument);
  w = m.view();
  ops::matmul(w, x.data(), 0, y.data());  // n_tok 0: nothing to do
}

TEST_CASE("qmatmul on the real SmolLM2 weights (Q4_1 and the Q8_0 embedding)", "[unit][quant][qmatmul][model]") {
  const std::string path = fkv::test::smollm2_gguf();
  if (!fkv::file_exists(path)) {
    WARN("skipped: " << path << " not found");
    return;
  }
  const io::GgufFile f(path);
  std::mt19937 rng(11);
  for (const char* name : {"blk.3.ffn_down.weight", "blk.7.attn_k.weight", "token_embd.weight"}) {
    const io::GgufTensorInfo& t = f.tensor(name);
    const int64_t cols = t.ne[0], rows = std::min<int64_t>(t.ne[1], 1000);
    Matrix m{t.type, rows, cols, io::row_bytes(t.type, cols), {}};
    m.bytes.assign(t.data, t.data + m.stride * size_t(rows));
    for (int64_t n_tok : {1, 8, 64}) {
      INFO(name << " n_tok " << n_tok);
      const std::vector<float> x = random_x(n_tok, cols, rng);
      std::vector<double> ref, scale;
      reference(m, x, n_tok, ref, scale);
      std::vector<float> y(ref.size());
      ops::matmul(m.view(), x.data(), n_tok, y.data());
      CHECK(worst_ratio(y, ref, scale) <= 1.0);
    }
  }
}

namespace {

template <class Fn>
double seconds_per_call(const Fn& fn, double min_seconds = 0.4) {
  fn();  // warm-up (caches, thread pool)
  int iters = 1;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) fn();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= min_seconds) return s / iters;
    iters = std::max(iters * 2, int(iters * min_seconds / std::max(s, 1e-9)));
  }
}

}  // namespace

TEST_CASE("qmatmul benchmark: decode GB/s and prefill GFLOP/s", "[.bench][quant][qmatmul]") {
  std::mt19937 rng(1);
  const std::string path = fkv::test::smollm2_gguf();
  std::unique_ptr<io::GgufFile> model;
  if (fkv::file_exists(path)) model = std::make_unique<io::GgufFile>(path);
  struct Case {
    const char* label;
    const char* tensor;
    GgmlType type;
    int64_t rows, cols;
  };
  const Case cases[] = {{"Q4_1 ffn_up 1536x576", "blk.0.ffn_up.weight", GgmlType::Q4_1, 1536, 576},
                        {"Q4_1 ffn_down 576x1536", "blk.0.ffn_down.weight", GgmlType::Q4_1, 576, 1536},
                        {"Q8_0 token_embd 49152x576", "token_embd.weight", GgmlType::Q8_0, 49152, 576},
                        {"Q6_K 896x4864 (random)", nullptr, GgmlType::Q6_K, 896, 4864},
                        {"Q4_K 896x4864 (random)", nullptr, GgmlType::Q4_K, 896, 4864},
                        {"Q5_0 4864x896 (random)", nullptr, GgmlType::Q5_0, 4864, 896},
                        {"Q5_K 896x4864 (random)", nullptr, GgmlType::Q5_K, 896, 4864},
                        {"Q3_K 896x4864 (random)", nullptr, GgmlType::Q3_K, 896, 4864},
                        {"Q2_K 896x4864 (random)", nullptr, GgmlType::Q2_K, 896, 4864},
                        {"IQ4_XS 896x4864 (random)", nullptr, GgmlType::IQ4_XS, 896, 4864}};
  const int saved = at::get_num_threads();
  std::printf("qmatmul kernels: %s\n", ops::matmul_kernel_name());
  for (const Case& c : cases) {
    Matrix m;
    if (model && c.tensor) {
      const io::GgufTensorInfo& t = model->tensor(c.tensor);
      m = Matrix{t.type, t.ne[1], t.ne[0], io::row_bytes(t.type, t.ne[0]), {}};
      m.bytes.assign(t.data, t.data + t.nbytes);
    } else {
      m = random_matrix(c.type, c.rows, c.cols, rng);
    }
    const double bytes = double(m.bytes.size());
    // fp32 reference: the same matrix dequantized, at::mm (what HF transformers runs)
    std::vector<float> wf(size_t(m.rows * m.cols));
    for (int64_t r = 0; r < m.rows; ++r) ops::dequantize_row(m.view(), r, wf.data() + r * m.cols);
    const at::Tensor wt = at::from_blob(wf.data(), {m.rows, m.cols});
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      for (int64_t n_tok : {1, 4, 128, 512}) {
        const std::vector<float> x = random_x(n_tok, m.cols, rng);
        std::vector<float> y(size_t(n_tok * m.rows));
        const double s = seconds_per_call([&] { ops::matmul(m.view(), x.data(), n_tok, y.data()); });
        const at::Tensor xt = at::from_blob(const_cast<float*>(x.data()), {n_tok, m.cols});
        const double s_ref = seconds_per_call([&] { (void)at::mm(xt, wt.t()); }, 0.2);
        const double flops = 2.0 * double(m.rows) * double(m.cols) * double(n_tok);
        std::printf("%-28s threads %d n_tok %4lld: %8.1f us  %6.1f GB/s weights  %7.1f GFLOP/s | fp32 at::mm %7.1f "
                    "GFLOP/s (%.2fx)", c.label, threads, (long long)n_tok, s * 1e6, bytes / s * 1e-9,
                    flops / s * 1e-9, flops / s_ref * 1e-9, s_ref / s);
        if (n_tok <= 4 && ops::matmul_q8_supported(m.type)) {  // int8 activations (--activations q8)
          const double s_q8 = seconds_per_call([&] { ops::matmul_q8(m.view(), x.data(), n_tok, y.data()); });
          std::printf(" | q8 %8.1f us", s_q8 * 1e6);
        }
        if (n_tok <= 4) {  // the portable path (dequantize a row, then dot): what types without a SIMD decoder get
          const double s_p = seconds_per_call(
              [&] { ops::matmul_rows_portable(m.view(), x.data(), n_tok, y.data(), 0, m.rows); }, 0.2);
          std::printf(" | portable %8.1f us (%.2fx)", s_p * 1e6, s_p / s);
        }
        std::printf("\n");
      }
    }
  }
  at::set_num_threads(saved);
}
