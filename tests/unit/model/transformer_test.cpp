// Runtime forward vs HF transformers golden bundles (tests/data/tiny_models, made by
// scripts/make_golden.py): full-sequence and chunked/incremental decoding, safetensors (fp32, fp16,
// bf16, sharded) and GGUF (llama Q/K permutation). Tolerance 1e-4 on logits: both sides compute in
// fp32 from identical weight values, so only summation order differs (observed ~1e-6; logits are O(1)).
#include "support/catch.h"

#include <ATen/ATen.h>

#include "foresightkv/core/error.h"
#include "foresightkv/golden/reference_model.h"
#include "support/model_fixtures.h"

using namespace fkv;
using fkv::test::Bundle;

namespace {
constexpr double kTolF32 = 1e-4;
}

TEST_CASE("tiny models: full forward matches HF transformers", "[unit][model][golden]") {
  for (const auto& name : test::bundle_names()) {
    INFO("bundle " << name);
    Bundle b = test::load_bundle(name);
    auto m = model::Transformer::load(b.dir);
    const double d = test::max_abs_diff(test::run_chunked(*m, b.ids, 1 << 20), b.logits);
    INFO("max |dlogit| = " << d);
    CHECK(d <= kTolF32);
  }
}

TEST_CASE("tiny models: chunked and token-by-token decoding match HF", "[unit][model][golden]") {
  for (const auto& name : test::bundle_names()) {
    Bundle b = test::load_bundle(name);
    auto m = model::Transformer::load(b.dir);
    for (auto [first, chunk] : std::vector<std::pair<int64_t, int64_t>>{{5, 1}, {1, 1}, {3, 7}, {11, 2}}) {
      INFO("bundle " << name << " first " << first << " chunk " << chunk);
      const double d = test::max_abs_diff(test::run_chunked(*m, b.ids, chunk, first), b.logits);
      INFO("max |dlogit| = " << d);
      CHECK(d <= kTolF32);
    }
  }
}

// The aten backend (LoadOptions::backend "aten": the forward in ATen ops on dense fp32 weights) against the same
// HF bundles, full and chunked, and against the native kernels on the quantized GGUF (dequantized identically).
TEST_CASE("aten backend: full and chunked forward match HF transformers, GGUF matches the native kernels",
          "[unit][model][golden]") {
  model::LoadOptions lo;
  lo.backend = "aten";
  for (const auto& name : test::bundle_names()) {
    Bundle b = test::load_bundle(name);
    auto m = model::Transformer::load(b.dir, lo);
    for (auto [first, chunk] : std::vector<std::pair<int64_t, int64_t>>{{0, 1 << 20}, {5, 1}, {3, 7}}) {
      INFO("bundle " << name << " first " << first << " chunk " << chunk);
      const double d = test::max_abs_diff(test::run_chunked(*m, b.ids, chunk, first), b.logits);
      INFO("max |dlogit| = " << d);
      CHECK(d <= 1e-3);
    }
  }
  Bundle q = test::load_bundle("llama_quant_gguf");
  auto native = model::Transformer::load(q.dir + "/model.gguf");
  auto aten = model::Transformer::load(q.dir + "/model.gguf", lo);
  const double d = test::max_abs_diff(test::run_chunked(*aten, q.ids, 5), test::run_chunked(*native, q.ids, 5));
  INFO("aten vs native on K-quant/IQ4 weights: max |dlogit| = " << d);
  CHECK(d <= 1e-3);
  CHECK(test::max_abs_diff(test::run_chunked(*aten, q.ids, 1 << 20), q.logits) <= 1e-3);
  model::LoadOptions bad = lo;
  bad.backend = "cuda";
  CHECK_THROWS_WITH(model::Transformer::load(q.dir + "/model.gguf", bad), Catch::Contains("native, aten or auto"));
  bad.backend = "aten";
  bad.activations = "q8";
  CHECK_THROWS_WITH(model::Transformer::load(q.dir + "/model.gguf", bad), Catch::Contains("native-kernel option"));
}

// The CUDA path's compute dtype, run on the CPU so CI checks it: bf16 products / fp32 norms and softmax (HF's bf16
// semantics). Against HF's fp32 logits the error is bf16 rounding through the layers: bounded, but not zero.
TEST_CASE("aten backend in bf16 (the CUDA compute dtype) stays close to HF fp32, full and chunked",
          "[unit][model][golden]") {
  model::LoadOptions lo;
  lo.backend = "aten";
  lo.dtype = "bf16";
  for (const auto& name : test::bundle_names()) {
    Bundle b = test::load_bundle(name);
    auto m = model::Transformer::load(b.dir, lo);
    CHECK(m->weights().dtype == "bf16");
    const at::Tensor full = test::run_chunked(*m, b.ids, 1 << 20);
    const double scale = b.logits.abs().max().item<double>();
    const double d = test::max_abs_diff(full, b.logits);
    INFO("bundle " << name << ": bf16 vs HF fp32 max |dlogit| = " << d << " (logit scale " << scale << ")");
    CHECK(d > 0);                    // it really ran in bf16
    CHECK(d <= 0.05 * scale + 0.02); // bf16 rounding, not a wrong formula (a RoPE/norm slip is O(scale))
    // same positions' argmax as HF wherever HF's top-2 margin exceeds the error
    const at::Tensor top2 = std::get<0>(b.logits.topk(2, -1));
    const at::Tensor clear = (top2.select(-1, 0) - top2.select(-1, 1)) > 4 * d;
    const at::Tensor agree = full.argmax(-1) == b.logits.argmax(-1);
    CHECK((agree | clear.logical_not()).all().item<bool>());
    // chunked decoding in bf16 equals the full forward up to bf16 rounding of different product shapes
    const double dc = test::max_abs_diff(test::run_chunked(*m, b.ids, 3, 5), full);
    INFO("bf16 chunked vs full: " << dc);
    CHECK(dc <= 0.05 * scale + 0.02);
  }
}

TEST_CASE("device, backend and dtype options resolve or fail with a clear message", "[unit][model]") {
  model::LoadOptions lo;
  model::LoadOptions r = model::resolve_load_options(lo);
  CHECK((r.backend == "native" && r.device == "cpu" && r.dtype == "f32"));
  lo.backend = "auto";
  lo.dtype = "auto";
  r = model::resolve_load_options(lo);
  CHECK((r.backend == "native" && r.dtype == "f32"));
  lo.backend = "aten";
  CHECK(model::resolve_load_options(lo).dtype == "f32");
  lo.dtype = "bf16";
  CHECK(model::resolve_load_options(lo).dtype == "bf16");
  lo.backend = "native";
  CHECK_THROWS_WITH(model::resolve_load_options(lo), Catch::Contains("native kernels compute in fp32"));
  lo = {};
  lo.device = "tpu";
  CHECK_THROWS_WITH(model::resolve_load_options(lo), Catch::Contains("expected cpu, cuda or cuda:N"));
  lo.device = "cuda:x";
  CHECK_THROWS_WITH(model::resolve_load_options(lo), Catch::Contains("device index"));
  lo.device = "cuda";
  lo.backend = "auto";
  if (!at::hasCUDA()) {
    // the CPU machines CI runs on: a clear error, before any file is read
    CHECK_THROWS_WITH(model::resolve_load_options(lo), Catch::Contains("no CUDA device is visible"));
    CHECK_THROWS_WITH(model::Transformer::load("/nonexistent/model.gguf", lo), Catch::Contains("no CUDA device"));
  } else {
    r = model::resolve_load_options(lo);
    CHECK((r.backend == "aten" && r.dtype == "bf16" && r.device == "cuda:0"));
    lo.backend = "native";
    CHECK_THROWS_WITH(model::resolve_load_options(lo), Catch::Contains("--backend aten"));
    lo.backend = "auto";
    lo.device = "cuda:4096";
    CHECK_THROWS_WITH(model::resolve_load_options(lo), Catch::Contains("CUDA device(s)"));
  }
}

TEST_CASE("tiny llama GGUF (permuted Q/K, F32) matches the HF safetensors model", "[unit][model][golden]") {
  Bundle b = test::load_bundle("llama_g3_tied_oldrope");
  auto m = model::Transformer::load(b.dir + "/model.gguf");
  CHECK(m->weights().format == "gguf");
  const double d = test::max_abs_diff(test::run_chunked(*m, b.ids, 4), b.logits);
  INFO("max |dlogit| = " << d);
  CHECK(d <= kTolF32);
}

// llama_quant_gguf (scripts/make_quant_model.py): every matrix in Q2_K, Q3_K, Q5_K, IQ4_NL or IQ4_XS (two roles
// each, incl. the embedding and the untied head), Q/K rows permuted; golden = HF fp32 on gguf-py's dequantized
// weights. Whole prompt (prefill tiles), 1 + 1 + ... (decode kernels) and mixed chunks; then int8 activations,
// which round x per 32 columns: a bounded deviation (<= 5 % of the logit range), but not the fp32 result.
TEST_CASE("tiny llama GGUF with K-quant and IQ4 weights matches HF on the dequantized weights", "[unit][model][golden]") {
  Bundle b = test::load_bundle("llama_quant_gguf");
  auto m = model::Transformer::load(b.dir + "/model.gguf");
  const double range = b.logits.abs().max().item<double>();
  REQUIRE(range > 0.5);
  for (auto [first, chunk] : std::vector<std::pair<int64_t, int64_t>>{{24, 24}, {1, 1}, {5, 3}, {10, 9}}) {
    INFO("first " << first << " chunk " << chunk);
    const double d = test::max_abs_diff(test::run_chunked(*m, b.ids, chunk, first), b.logits);
    INFO("max |dlogit| = " << d << ", max |logit| = " << range);
    CHECK(d <= kTolF32);
  }
  model::LoadOptions q8;
  q8.activations = "q8";
  auto mq = model::Transformer::load(b.dir + "/model.gguf", q8);
  const at::Tensor lq = test::run_chunked(*mq, b.ids, 1);
  const double d = test::max_abs_diff(lq, b.logits);
  INFO("int8 activations: max |dlogit| = " << d << ", max |logit| = " << range);
  CHECK(d > kTolF32);
  CHECK(d <= 0.05 * range);
}

TEST_CASE("golden reference model matches HF (the oracle is validated too)", "[unit][model][golden]") {
  for (const auto& name : test::bundle_names()) {
    INFO("bundle " << name);
    Bundle b = test::load_bundle(name);
    auto ref = golden::ReferenceModel::load(b.dir);
    const double d = test::max_abs_diff(ref.forward(at::tensor(b.ids, at::kLong)), b.logits);
    INFO("max |dlogit| = " << d);
    CHECK(d <= kTolF32);
  }
  Bundle b = test::load_bundle("llama_g3_tied_oldrope");
  auto ref = golden::ReferenceModel::load(b.dir + "/model.gguf");
  CHECK(test::max_abs_diff(ref.forward(at::tensor(b.ids, at::kLong)), b.logits) <= kTolF32);
}

TEST_CASE("weight formats: f32 conversion is exact, bf16 within bf16 rounding", "[unit][model]") {
  Bundle b = test::load_bundle("qwen3_g4_hd16");
  model::LoadOptions f32;
  f32.weight_format = "f32";
  auto m32 = model::Transformer::load(b.dir, f32);
  CHECK(test::max_abs_diff(test::run_chunked(*m32, b.ids, 6), b.logits) <= kTolF32);
  model::LoadOptions bf;
  bf.weight_format = "bf16";
  auto m16 = model::Transformer::load(b.dir, bf);
  // bf16 keeps 8 mantissa bits (relative rounding error <= 2^-9 per weight). Through two random
  // layers that compounds to a few percent of the logit range: require <= 5 % of max |logit|, and a
  // result that differs from fp32 at all (the conversion really happened).
  const double d = test::max_abs_diff(test::run_chunked(*m16, b.ids, 6), b.logits);
  const double range = b.logits.abs().max().item<double>();
  INFO("bf16 max |dlogit| = " << d << ", max |logit| = " << range);
  CHECK(d <= 0.05 * range);
  CHECK(d > 0);
  model::LoadOptions bad;
  bad.weight_format = "q3";
  CHECK_THROWS_AS(model::Transformer::load(b.dir, bad), InvalidArgument);
}

TEST_CASE("batched forward equals per-sequence forward", "[unit][model]") {
  Bundle b = test::load_bundle("qwen2_g2_bias");
  auto m = model::Transformer::load(b.dir);
  const int64_t T = static_cast<int64_t>(b.ids.size());
  std::vector<int64_t> other(b.ids.rbegin(), b.ids.rend());
  at::Tensor ref0 = test::run_chunked(*m, b.ids, 1 << 20), ref1 = test::run_chunked(*m, other, 1 << 20);
  cache::KvCache kv = m->make_cache(2, T);
  std::vector<at::Tensor> out;
  int64_t s = 0;
  for (int64_t n : {5L, 1L, 1L, 3L, 1L, 13L}) {
    at::Tensor ids = at::stack({at::tensor(std::vector<int64_t>(b.ids.begin() + s, b.ids.begin() + s + n), at::kLong),
                                at::tensor(std::vector<int64_t>(other.begin() + s, other.begin() + s + n), at::kLong)});
    at::Tensor pos = at::arange(s, s + n, at::kLong).view({1, n}).expand({2, n}).contiguous();
    out.push_back(m->forward(ids, pos, kv, model::Logits::All));
    s += n;
  }
  REQUIRE(s == T);
  at::Tensor all = at::cat(out, 1);
  CHECK(test::max_abs_diff(all[0], ref0) <= 1e-5);
  CHECK(test::max_abs_diff(all[1], ref1) <= 1e-5);
  // Logits::Last returns the last position of each sequence.
  cache::KvCache kv2 = m->make_cache(2, T);
  at::Tensor ids = at::stack({at::tensor(b.ids, at::kLong), at::tensor(other, at::kLong)});
  at::Tensor pos = at::arange(T, at::kLong).view({1, T}).expand({2, T}).contiguous();
  at::Tensor last = m->forward(ids, pos, kv2, model::Logits::Last);
  CHECK(test::max_abs_diff(last[0], ref0[T - 1]) <= 1e-5);
  CHECK(test::max_abs_diff(last[1], ref1[T - 1]) <= 1e-5);
  // last_index picks another row per sequence (prompts ending inside a padded chunk).
  cache::KvCache kv3 = m->make_cache(2, T);
  at::Tensor picked = m->forward(ids, pos, kv3, model::Logits::Last, nullptr, {3, T - 2});
  CHECK(picked.sizes() == last.sizes());
  CHECK(test::max_abs_diff(picked[0], ref0[3]) <= 1e-5);
  CHECK(test::max_abs_diff(picked[1], ref1[T - 2]) <= 1e-5);
  cache::KvCache kv4 = m->make_cache(2, T);
  CHECK_THROWS_AS(m->forward(ids, pos, kv4, model::Logits::Last, nullptr, {T, 0}), InvalidArgument);
  CHECK_THROWS_AS(m->forward(ids, pos, kv4, model::Logits::All, nullptr, {0, 0}), InvalidArgument);
  CHECK_THROWS_AS(m->forward(ids, pos, kv4, model::Logits::Last, nullptr, {0}), InvalidArgument);
}

TEST_CASE("forward rejects bad input with clear errors", "[unit][model]") {
  Bundle b = test::load_bundle("llama_g1");
  auto m = model::Transformer::load(b.dir);
  const int64_t V = m->config().n_vocab;
  cache::KvCache kv = m->make_cache(1, 8);
  CHECK_THROWS_AS(m->forward(at::full({1, 1}, V, at::kLong), at::zeros({1, 1}, at::kLong), kv), InvalidArgument);
  CHECK_THROWS_AS(m->forward(at::full({1, 1}, -1, at::kLong), at::zeros({1, 1}, at::kLong), kv), InvalidArgument);
  cache::KvCache kv2 = m->make_cache(2, 8);
  CHECK_THROWS_AS(m->forward(at::zeros({1, 1}, at::kLong), at::zeros({1, 1}, at::kLong), kv2), InvalidArgument);
  CHECK_THROWS_AS(m->forward(at::zeros({1, 9}, at::kLong), at::arange(9, at::kLong).view({1, 9}), kv), InvalidArgument);
  CHECK_THROWS_AS(m->forward(at::zeros({1, 2}, at::kLong), at::zeros({1, 3}, at::kLong), kv), InvalidArgument);
  CHECK_THROWS_AS(model::Transformer::load(test::test_data("tiny_models/does_not_exist")), InvalidArgument);
  try {
    m->forward(at::full({1, 1}, V + 5, at::kLong), at::zeros({1, 1}, at::kLong), kv);
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("outside the vocabulary"));
  }
}

TEST_CASE("fp16 KV cache: decoding stays within fp16 rounding of the fp32 cache", "[unit][model]") {
  for (const auto& name : {"qwen3_g4_hd16", "llama_g3_tied_oldrope"}) {
    Bundle b = test::load_bundle(name);
    auto m = model::Transformer::load(b.dir);
    const int64_t T = static_cast<int64_t>(b.ids.size());
    cache::KvCache kv = m->make_cache(1, T, at::kHalf);
    std::vector<at::Tensor> out;
    for (int64_t s = 0; s < T;) {
      const int64_t n = s == 0 ? 7 : 1;  // a GEMM-path chunk, then the decode kernel
      at::Tensor idt = at::tensor(std::vector<int64_t>(b.ids.begin() + s, b.ids.begin() + s + n), at::kLong).view({1, n});
      out.push_back(m->forward(idt, at::arange(s, s + n, at::kLong).view({1, n}), kv, model::Logits::All)[0]);
      s += n;
      if (s == 12) kv.remove(0, 0, 0, {1, 3});  // compaction of fp16 storage
    }
    at::Tensor got = at::cat(out, 0);
    // fp16 keeps 11 significant bits (relative rounding 2^-11 ~ 5e-4) on K and V; on these O(1)
    // logits that stays below 1e-2. Only positions before the removal are comparable to the golden.
    const double d = test::max_abs_diff(got.narrow(0, 0, 12), b.logits.narrow(0, 0, 12));
    INFO(name << " fp16 KV max |dlogit| = " << d);
    CHECK(d <= 1e-2);
    CHECK(d > 0);
    CHECK(kv.storage_bytes() == m->make_cache(1, T).storage_bytes() / 2);
  }
}
