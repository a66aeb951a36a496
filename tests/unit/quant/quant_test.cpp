// io/quant: type traits, fp16/bf16 conversions, hand-computed blocks, and bitwise agreement with
// gguf-py's reference dequantizers on the committed fixture (scripts/make_quant_fixtures.py).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "foresightkv/core/error.h"
#include "foresightkv/io/gguf.h"
#include "foresightkv/io/quant.h"
#include "support/paths.h"

using fkv::io::GgmlType;
namespace io = fkv::io;

namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
void put_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

}  // namespace

TEST_CASE("type traits: block sizes and byte sizes of every type", "[unit][quant]") {
  struct Row {
    GgmlType t;
    int64_t block, bytes;
  };
  const Row rows[] = {{GgmlType::F32, 1, 4},      {GgmlType::F16, 1, 2},      {GgmlType::Q4_0, 32, 18},
                      {GgmlType::Q4_1, 32, 20},   {GgmlType::Q5_0, 32, 22},   {GgmlType::Q5_1, 32, 24},
                      {GgmlType::Q8_0, 32, 34},   {GgmlType::Q8_1, 32, 36},   {GgmlType::Q2_K, 256, 84},
                      {GgmlType::Q3_K, 256, 110}, {GgmlType::Q4_K, 256, 144}, {GgmlType::Q5_K, 256, 176},
                      {GgmlType::Q6_K, 256, 210}, {GgmlType::Q8_K, 256, 292}, {GgmlType::I8, 1, 1},
                      {GgmlType::I16, 1, 2},      {GgmlType::I32, 1, 4},      {GgmlType::I64, 1, 8},
                      {GgmlType::F64, 1, 8},      {GgmlType::BF16, 1, 2}};
  for (const Row& r : rows) {
    INFO(io::type_name(r.t));
    CHECK(io::is_known_type(uint32_t(r.t)));
    CHECK(io::type_traits(r.t).block_size == r.block);
    CHECK(io::type_traits(r.t).type_size == r.bytes);
    CHECK(io::type_traits(r.t).dequantizable == (r.t != GgmlType::Q8_1));
  }
  CHECK(io::type_name(GgmlType::Q4_1) == "Q4_1");
  CHECK(io::row_bytes(GgmlType::Q4_1, 576) == 360);
  CHECK(io::row_bytes(GgmlType::Q6_K, 896 * 2 + 256) == 210 * 8);
  CHECK(io::row_bytes(GgmlType::F16, 7) == 14);
  CHECK_THROWS_AS(io::row_bytes(GgmlType::Q4_1, 33), fkv::FormatError);
  CHECK_THROWS_AS(io::row_bytes(GgmlType::Q6_K, 128), fkv::FormatError);
  // ggml ids fkv does not implement, and ids ggml does not define
  CHECK_FALSE(io::is_known_type(16));  // IQ2_XXS
  CHECK_FALSE(io::is_known_type(4));   // removed Q4_2
  CHECK_FALSE(io::is_known_type(99));
  CHECK(io::type_name(GgmlType(21)) == "IQ3_S");
  CHECK_FALSE(io::is_known_type(21));
  CHECK_THROWS_AS(io::type_traits(GgmlType(99)), fkv::FormatError);
  CHECK_THROWS_AS(io::type_traits(GgmlType(4)), fkv::FormatError);
  float out[32];
  uint8_t blk[36] = {};
  CHECK_THROWS_AS(io::dequantize_row(GgmlType::Q8_1, blk, out, 32), fkv::FormatError);
  CHECK_THROWS_AS(io::dequantize_row(GgmlType(16), blk, out, 256), fkv::FormatError);
}

TEST_CASE("fp16 -> fp32: normals, subnormals, zeros, infinities, NaN", "[unit][quant]") {
  CHECK(io::fp16_to_fp32(0x3C00) == 1.0f);
  CHECK(io::fp16_to_fp32(0xC000) == -2.0f);
  CHECK(io::fp16_to_fp32(0x7BFF) == 65504.0f);
  CHECK(io::fp16_to_fp32(0x0400) == std::ldexp(1.0f, -14));              // smallest normal
  CHECK(io::fp16_to_fp32(0x0001) == std::ldexp(1.0f, -24));              // smallest subnormal
  CHECK(io::fp16_to_fp32(0x03FF) == std::ldexp(1023.0f, -24));           // largest subnormal
  CHECK(io::fp16_to_fp32(0x8003) == -std::ldexp(3.0f, -24));
  CHECK(bits(io::fp16_to_fp32(0x0000)) == 0u);
  CHECK(bits(io::fp16_to_fp32(0x8000)) == 0x80000000u);                  // -0 keeps its sign
  CHECK(io::fp16_to_fp32(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(io::fp16_to_fp32(0xFC00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(io::fp16_to_fp32(0x7E00)));
  CHECK(std::isnan(io::fp16_to_fp32(0xFC01)));
}

TEST_CASE("fp16 <-> fp32: exhaustive round trip and hardware agreement", "[unit][quant]") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = io::fp16_to_fp32(uint16_t(h));
    const bool nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0;
    if (nan) {
      REQUIRE(std::isnan(f));
      REQUIRE(std::isnan(io::fp16_to_fp32(io::fp32_to_fp16(f))));
    } else {
      REQUIRE(io::fp32_to_fp16(f) == h);
    }
#if defined(__F16C__)
    // (the hardware quiets signalling NaNs; fkv keeps the payload as numpy does)
    if (!nan) REQUIRE(bits(f) == bits(_cvtsh_ss(uint16_t(h))));
#endif
  }
}

TEST_CASE("fp32 -> fp16: round to nearest even, overflow, gradual underflow", "[unit][quant]") {
  const float one = 1.0f;
  CHECK(io::fp32_to_fp16(one + std::ldexp(1.0f, -11)) == 0x3C00);        // tie -> even (down)
  CHECK(io::fp32_to_fp16(one + 3 * std::ldexp(1.0f, -11)) == 0x3C02);    // tie -> even (up)
  CHECK(io::fp32_to_fp16(std::nextafter(one + std::ldexp(1.0f, -11), 2.0f)) == 0x3C01);
  CHECK(io::fp32_to_fp16(65504.0f) == 0x7BFF);
  CHECK(io::fp32_to_fp16(65519.0f) == 0x7BFF);
  CHECK(io::fp32_to_fp16(65520.0f) == 0x7C00);                          // tie at max -> inf
  CHECK(io::fp32_to_fp16(-1e10f) == 0xFC00);
  CHECK(io::fp32_to_fp16(std::ldexp(1.0f, -25)) == 0x0000);              // half the smallest subnormal: tie -> 0
  CHECK(io::fp32_to_fp16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
  CHECK(io::fp32_to_fp16(3 * std::ldexp(1.0f, -25)) == 0x0002);          // 1.5 ulp: tie -> even 2
  CHECK(io::fp32_to_fp16(-std::ldexp(1.0f, -24)) == 0x8001);
  CHECK(io::fp32_to_fp16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)) == 0x0400);  // rounds up into normals
  CHECK(io::fp32_to_fp16(1e-30f) == 0x0000);
  CHECK(io::fp32_to_fp16(-0.0f) == 0x8000);
  CHECK((io::fp32_to_fp16(std::numeric_limits<float>::quiet_NaN()) & 0x7FFF) > 0x7C00);
#if defined(__F16C__)
  std::mt19937 rng(1);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 2000000; ++i) {
    // random bit patterns concentrated in the half range (exponents 100..145)
    uint32_t u = any(rng);
    u = (u & 0x807FFFFFu) | ((100u + (u >> 23) % 46u) << 23);
    const float f = from_bits(u);
    REQUIRE(io::fp32_to_fp16(f) == _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
  }
#endif
}

TEST_CASE("fp32 -> bf16: round to nearest even, NaN quieted", "[unit][quant]") {
  CHECK(io::fp32_to_bf16(1.0f) == 0x3F80);
  CHECK(io::fp32_to_bf16(from_bits(0x3F808000u)) == 0x3F80);  // tie, even stays
  CHECK(io::fp32_to_bf16(from_bits(0x3F818000u)) == 0x3F82);  // tie, odd rounds up
  CHECK(io::fp32_to_bf16(from_bits(0x3F808001u)) == 0x3F81);
  CHECK(io::fp32_to_bf16(from_bits(0x3F807FFFu)) == 0x3F80);
  CHECK(io::fp32_to_bf16(from_bits(0x7F7FFFFFu)) == 0x7F80);  // FLT_MAX rounds to inf
  CHECK(io::fp32_to_bf16(-std::numeric_limits<float>::infinity()) == 0xFF80);
  CHECK(io::fp32_to_bf16(from_bits(0x7F800001u)) == 0x7FC0);  // signalling NaN -> quiet
  CHECK(io::fp32_to_bf16(from_bits(0x00008000u)) == 0x0000);  // subnormal tie -> even 0
  CHECK(io::fp32_to_bf16(from_bits(0x00018000u)) == 0x0002);
  CHECK(io::bf16_to_fp32(0x3F82) == 1.015625f);
  CHECK(io::bf16_to_fp32(io::fp32_to_bf16(-3.0f)) == -3.0f);
}

TEST_CASE("Q4_0 and Q4_1: byte j holds element j (low nibble) and element j+16 (high nibble)", "[unit][quant]") {
  uint8_t b0[18], b1[20];
  put_u16(b0, 0x3800);  // d = 0.5
  put_u16(b1, 0x3800);  // d = 0.5
  put_u16(b1 + 2, 0xBC00);  // m = -1
  for (int j = 0; j < 16; ++j) {
    b0[2 + j] = uint8_t(j | (15 - j) << 4);
    b1[4 + j] = uint8_t(j | (15 - j) << 4);
  }
  float y0[32], y1[32];
  io::dequantize_row(GgmlType::Q4_0, b0, y0, 32);
  io::dequantize_row(GgmlType::Q4_1, b1, y1, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y0[j] == 0.5f * float(j - 8));
    CHECK(y0[j + 16] == 0.5f * float(15 - j - 8));
    CHECK(y1[j] == 0.5f * float(j) - 1.0f);
    CHECK(y1[j + 16] == 0.5f * float(15 - j) - 1.0f);
  }
}

TEST_CASE("Q8_0, Q5_0, Q5_1 and Q8_K hand-computed blocks", "[unit][quant]") {
  SECTION("Q8_0") {
    uint8_t b[2 * 34];
    put_u16(b, 0x3400);  // 0.25
    put_u16(b + 34, 0x0001);  // subnormal scale 2^-24
    for (int j = 0; j < 32; ++j) {
      b[2 + j] = uint8_t(int8_t(j * 8 - 128));
      b[36 + j] = uint8_t(int8_t(127 - j));
    }
    float y[64];
    io::dequantize_row(GgmlType::Q8_0, b, y, 64);
    for (int j = 0; j < 32; ++j) {
      CHECK(y[j] == 0.25f * float(j * 8 - 128));
      CHECK(y[32 + j] == std::ldexp(float(127 - j), -24));
    }
  }
  SECTION("Q5_0 and Q5_1: 5th bit of element j is bit j of qh") {
    uint8_t b0[22], b1[24];
    const uint32_t qh = 0xA5C3F00Fu;
    put_u16(b0, 0x3C00);  // d = 1
    std::memcpy(b0 + 2, &qh, 4);
    put_u16(b1, 0x4000);  // d = 2
    put_u16(b1 + 2, 0x3800);  // m = 0.5
    std::memcpy(b1 + 4, &qh, 4);
    for (int j = 0; j < 16; ++j) b0[6 + j] = b1[8 + j] = uint8_t((j * 7) % 16 | ((j * 3) % 16) << 4);
    float y0[32], y1[32];
    io::dequantize_row(GgmlType::Q5_0, b0, y0, 32);
    io::dequantize_row(GgmlType::Q5_1, b1, y1, 32);
    for (int j = 0; j < 32; ++j) {
      const int nib = j < 16 ? (j * 7) % 16 : ((j - 16) * 3) % 16;
      const int q = nib | int((qh >> j) & 1) << 4;
      CHECK(y0[j] == float(q - 16));
      CHECK(y1[j] == 2.0f * float(q) + 0.5f);
    }
  }
  SECTION("Q8_K: f32 scale, 256 int8, bsums ignored") {
    std::vector<uint8_t> b(292, 0);
    const float d = 0.125f;
    std::memcpy(b.data(), &d, 4);
    for (int j = 0; j < 256; ++j) b[4 + j] = uint8_t(int8_t(j - 128));
    std::vector<float> y(256);
    io::dequantize_row(GgmlType::Q8_K, b.data(), y.data(), 256);
    for (int j = 0; j < 256; ++j) CHECK(y[j] == 0.125f * float(j - 128));
  }
}

TEST_CASE("Q8_0 and Q4_1 round trip through a min/max quantizer", "[unit][quant]") {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 2.f);
  std::vector<float> x(32 * 40);
  for (float& v : x) v = nd(rng);
  const int nb = int(x.size() / 32);
  std::vector<uint8_t> q8(size_t(nb) * 34), q41(size_t(nb) * 20);
  std::vector<float> dmax8(nb), dmax41(nb);
  for (int b = 0; b < nb; ++b) {
    const float* xb = x.data() + 32 * b;
    float amax = 0.f, mn = xb[0], mx = xb[0];
    for (int j = 0; j < 32; ++j) {
      amax = std::max(amax, std::fabs(xb[j]));
      mn = std::min(mn, xb[j]);
      mx = std::max(mx, xb[j]);
    }
    // Q8_0: d = amax / 127, q = round(x / d)
    const uint16_t d8 = io::fp32_to_fp16(amax / 127.f);
    put_u16(&q8[size_t(b) * 34], d8);
    for (int j = 0; j < 32; ++j)
      q8[size_t(b) * 34 + 2 + j] = uint8_t(int8_t(std::lround(xb[j] / io::fp16_to_fp32(d8))));
    dmax8[b] = io::fp16_to_fp32(d8);
    // Q4_1: d = (max - min) / 15, m = min, q = round((x - m) / d)
    const uint16_t d41 = io::fp32_to_fp16((mx - mn) / 15.f), m41 = io::fp32_to_fp16(mn);
    const float dd = io::fp16_to_fp32(d41), mm = io::fp16_to_fp32(m41);
    uint8_t* o = &q41[size_t(b) * 20];
    put_u16(o, d41);
    put_u16(o + 2, m41);
    for (int j = 0; j < 16; ++j) {
      const long lo = std::clamp(std::lround((xb[j] - mm) / dd), 0L, 15L);
      const long hi = std::clamp(std::lround((xb[j + 16] - mm) / dd), 0L, 15L);
      o[4 + j] = uint8_t(lo | hi << 4);
    }
    dmax41[b] = dd;
  }
  std::vector<float> y8(x.size()), y41(x.size());
  io::dequantize_row(GgmlType::Q8_0, q8.data(), y8.data(), int64_t(x.size()));
  io::dequantize_row(GgmlType::Q4_1, q41.data(), y41.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    // half a quantization step, plus the fp16 rounding of the scale/min (relative 2^-11 of |x|)
    const int b = int(i / 32);
    CHECK(std::fabs(y8[i] - x[i]) <= 0.5f * dmax8[b] * 1.01f + 1e-6f);
    CHECK(std::fabs(y41[i] - x[i]) <= 0.5f * dmax41[b] * 1.01f + std::fabs(x[i]) * 1e-3f + 1e-3f);
  }
}

TEST_CASE("dequantizers match gguf-py bitwise on the committed fixture", "[unit][quant]") {
  // Bitwise for every type: io/quant.cpp evaluates the same fp32 operations in the same order as
  // gguf-py's numpy code (and compiles without FMA contraction), so no tolerance is needed.
  const io::GgufFile f(fkv::test::test_data("gguf/quant_types.gguf"));
  int checked = 0;
  for (const io::GgufTensorInfo& t : f.tensors()) {
    if (t.name.size() > 9 && t.name.compare(t.name.size() - 9, 9, ".expected") == 0) continue;
    INFO("tensor " << t.name << " type " << io::type_name(t.type));
    const io::GgufTensorInfo& e = f.tensor(t.name + ".expected");
    REQUIRE(e.type == GgmlType::F32);
    REQUIRE(e.shape() == t.shape());
    const std::vector<float> got = f.dequantize(t);
    const std::vector<float> want = f.dequantize(e);
    REQUIRE(got.size() == want.size());
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (bits(got[i]) != bits(want[i]) && !(std::isnan(got[i]) && std::isnan(want[i])) && bad++ == 0) first = i;
    INFO("first mismatch at " << first << ": got " << got[first] << " want " << want[first]);
    CHECK(bad == 0);
    ++checked;
  }
  CHECK(checked == 15);  // F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS
}
