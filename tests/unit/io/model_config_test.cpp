// ModelConfig: every golden bundle's config.json against golden.json's expected fields, HF defaults,
// old/new rope spellings, llama3 inv_freq bit-exact against transformers (values stored by
// scripts/make_golden.py), the llama GGUF of llama_g3_tied_oldrope, and loud failures on unsupported or
// inconsistent configs.
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "foresightkv/core/error.h"
#include "foresightkv/core/json.h"
#include "foresightkv/io/gguf.h"
#include "foresightkv/io/model_config.h"
#include "support/paths.h"

using fkv::json;
using fkv::io::Arch;
using fkv::io::ModelConfig;
using Catch::Matchers::Contains;

namespace {

const std::vector<std::string> kCases = {"llama_g1", "llama_g3_tied_oldrope", "llama3_rope_sharded",
                                         "qwen2_g2_bias", "qwen3_g4_hd16"};

std::string case_dir(const std::string& c) { return fkv::test::test_data("tiny_models/" + c); }

// A small valid llama config; tests mutate it.
json base_llama() {
  return json::parse(R"({"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":96,
                         "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
                         "rms_norm_eps":1e-5,"rope_theta":10000.0})");
}

ModelConfig parse(const json& j) { return fkv::io::config_from_hf_json(j, "test config.json"); }

void expect_invalid(const json& j, const std::vector<std::string>& needles) {
  try {
    parse(j);
    FAIL("expected fkv::InvalidArgument for " << j.dump());
  } catch (const fkv::InvalidArgument& e) {
    for (const auto& n : needles) CHECK_THAT(std::string(e.what()), Contains(n));
  }
}

}  // namespace

TEST_CASE("model_config: every bundle's config.json matches golden.json", "[unit][io]") {
  for (const auto& c : kCases) {
    INFO("case " << c);
    const json ec = fkv::read_json_file(case_dir(c) + "/golden.json").at("expected_config");
    const ModelConfig m = fkv::io::config_from_hf_dir(case_dir(c));
    CHECK(fkv::io::arch_name(m.arch) == ec.at("arch").get<std::string>());
    CHECK(m.n_vocab == ec.at("n_vocab"));
    CHECK(m.hidden == ec.at("hidden"));
    CHECK(m.n_layer == ec.at("n_layer"));
    CHECK(m.n_head_q == ec.at("n_head_q"));
    CHECK(m.n_head_kv == ec.at("n_head_kv"));
    CHECK(m.head_dim == ec.at("head_dim"));
    CHECK(m.ffn_hidden == ec.at("ffn_hidden"));
    CHECK(m.rms_eps == ec.at("rms_eps").get<double>());
    CHECK(m.max_position == ec.at("max_position"));
    CHECK(m.tie_embeddings == ec.at("tie_embeddings").get<bool>());
    CHECK(m.qkv_bias == ec.at("qkv_bias").get<bool>());
    CHECK_FALSE(m.o_bias);
    CHECK(m.qk_norm == ec.at("qk_norm").get<bool>());
    CHECK(m.bos_id == ec.at("bos_id"));
    CHECK(m.eos_ids == ec.at("eos_ids").get<std::vector<int64_t>>());
    const json& r = ec.at("rope");
    CHECK(m.rope.type == r.at("rope_type").get<std::string>());
    CHECK(m.rope.theta == r.at("rope_theta").get<double>());
    if (m.rope.type == "llama3") {
      CHECK(m.rope.factor == r.at("factor").get<double>());
      CHECK(m.rope.low_freq_factor == r.at("low_freq_factor").get<double>());
      CHECK(m.rope.high_freq_factor == r.at("high_freq_factor").get<double>());
      CHECK(m.rope.original_max_position_embeddings == r.at("original_max_position_embeddings"));
    }
  }
}

TEST_CASE("model_config: hand-checked fields of the bundles", "[unit][io]") {
  const ModelConfig q3 = fkv::io::config_from_hf_dir(case_dir("qwen3_g4_hd16"));
  CHECK(q3.arch == Arch::Qwen3);
  CHECK(q3.head_dim == 16);  // explicit, != hidden 72 / 8 heads
  CHECK(q3.n_head_q * q3.head_dim == 128);
  CHECK(q3.group_size() == 4);
  CHECK(q3.qk_norm);
  CHECK(q3.tie_embeddings);

  const ModelConfig q2 = fkv::io::config_from_hf_dir(case_dir("qwen2_g2_bias") + "/config.json");
  CHECK(q2.arch == Arch::Qwen2);
  CHECK(q2.head_dim == 14);  // hidden 84 / 6 heads, no head_dim key
  CHECK(q2.qkv_bias);
  CHECK_FALSE(q2.o_bias);
  CHECK(q2.rope.theta == 1e6);

  const ModelConfig old = fkv::io::config_from_hf_dir(case_dir("llama_g3_tied_oldrope"));
  CHECK(old.rope.type == "default");
  CHECK(old.rope.theta == 50000.0);  // top-level rope_theta, rope_scaling null
  CHECK(old.group_size() == 3);
  CHECK(old.tie_embeddings);

  const ModelConfig l3 = fkv::io::config_from_hf_dir(case_dir("llama3_rope_sharded"));
  CHECK(l3.rope.type == "llama3");
  CHECK(l3.rope.original_max_position_embeddings == 64);
  CHECK(l3.eos_ids == std::vector<int64_t>{2, 3});
}

TEST_CASE("model_config: rope_inv_freq is bit-identical to transformers", "[unit][io]") {
  for (const auto& c : kCases) {
    INFO("case " << c);
    const json g = fkv::read_json_file(case_dir(c) + "/golden.json");
    const auto want = g.at("rope_inv_freq").get<std::vector<double>>();
    const auto got = fkv::io::rope_inv_freq(fkv::io::config_from_hf_dir(case_dir(c)));
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      INFO("i = " << i);
      CHECK(got[i] == static_cast<float>(want[i]));
    }
  }
}

TEST_CASE("model_config: llama3 scaling bands by hand", "[unit][io]") {
  // theta 10000, D 16, factor 8, low 1, high 4, original 64: wavelengths 2*pi*10000^(i/8) are
  // 6.3 (< 16: kept), 19.9 and 62.8 (16..64: smoothed), >= 198 (> 64: divided by 8).
  ModelConfig c = fkv::io::config_from_hf_dir(case_dir("llama3_rope_sharded"));
  const auto f = fkv::io::rope_inv_freq(c);
  ModelConfig plain = c;
  plain.rope.type = "default";
  const auto base = fkv::io::rope_inv_freq(plain);
  REQUIRE(f.size() == 8);
  CHECK(f[0] == base[0]);
  for (int i = 3; i < 8; ++i) CHECK(f[i] == base[i] / 8.0f);
  for (int i = 1; i <= 2; ++i) {
    const double wavelen = 2 * M_PI / base[i];
    const double s = (64.0 / wavelen - 1.0) / (4.0 - 1.0);
    CHECK(f[i] == Approx((1 - s) * base[i] / 8 + s * base[i]).epsilon(1e-6));
    CHECK(f[i] < base[i]);
    CHECK(f[i] > base[i] / 8);
  }
  for (size_t i = 0; i < base.size(); ++i)
    CHECK(base[i] == Approx(1.0 / std::pow(10000.0, 2.0 * i / 16.0)).epsilon(1e-6));
}

TEST_CASE("model_config: rope spellings (rope_parameters, rope_scaling with rope_type or type)", "[unit][io]") {
  const ModelConfig ref = fkv::io::config_from_hf_dir(case_dir("llama3_rope_sharded"));
  const auto ref_freq = fkv::io::rope_inv_freq(ref);
  json j = fkv::read_json_file(case_dir("llama3_rope_sharded") + "/config.json");
  json rp = j.at("rope_parameters");

  json old = j;  // pre-v5: top-level rope_theta + rope_scaling {"type": ...} without original_max...
  old.erase("rope_parameters");
  old["rope_theta"] = rp.at("rope_theta");
  old["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 64}};
  CHECK(fkv::io::rope_inv_freq(parse(old)) == ref_freq);

  json top = old;  // a top-level original_max_position_embeddings wins over the dict (HF)
  top["rope_scaling"]["original_max_position_embeddings"] = 8192;
  top["original_max_position_embeddings"] = 64;
  CHECK(fkv::io::rope_inv_freq(parse(top)) == ref_freq);

  json fallback = old;  // absent everywhere: max_position_embeddings
  fallback["rope_scaling"].erase("original_max_position_embeddings");
  CHECK(parse(fallback).rope.original_max_position_embeddings == 512);

  json none = base_llama();
  none.erase("rope_theta");
  const ModelConfig d = parse(none);
  CHECK(d.rope.type == "default");
  CHECK(d.rope.theta == 10000.0);

  json nested = base_llama();
  nested["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 5e5}}}};
  CHECK(parse(nested).rope.theta == 5e5);
}

TEST_CASE("model_config: transformers defaults per architecture", "[unit][io]") {
  json l = base_llama();
  l.erase("num_key_value_heads");
  ModelConfig m = parse(l);
  CHECK(m.n_head_kv == 4);  // defaults to num_attention_heads
  CHECK(m.head_dim == 16);
  CHECK(m.bos_id == 1);     // LlamaConfig bos_token_id=1, eos_token_id=2
  CHECK(m.eos_ids == std::vector<int64_t>{2});
  CHECK(m.max_position == 2048);
  CHECK_FALSE(m.tie_embeddings);  // tie_word_embeddings defaults to false in LlamaConfig

  l["bos_token_id"] = nullptr;
  l["eos_token_id"] = {5, 6, 5};
  m = parse(l);
  CHECK(m.bos_id == -1);
  CHECK(m.eos_ids == std::vector<int64_t>{5, 6});

  json q2 = base_llama();
  q2["model_type"] = "qwen2";
  m = parse(q2);
  CHECK(m.bos_id == -1);
  CHECK(m.eos_ids.empty());
  CHECK(m.max_position == 32768);
  CHECK(m.qkv_bias);
  CHECK_FALSE(m.tie_embeddings);

  json q3 = base_llama();
  q3["model_type"] = "qwen3";
  m = parse(q3);
  CHECK(m.head_dim == 128);  // Qwen3Config class default, not hidden/heads
  CHECK(m.qk_norm);
  CHECK_FALSE(m.qkv_bias);

  json bias = base_llama();
  bias["attention_bias"] = true;
  m = parse(bias);
  CHECK(m.qkv_bias);
  CHECK(m.o_bias);  // llama attention_bias also biases o_proj
}

TEST_CASE("model_config: unsupported and inconsistent configs fail loudly", "[unit][io]") {
  json j = base_llama();
  j["model_type"] = "mistral";
  expect_invalid(j, {"mistral", "llama, qwen2, qwen3"});

  j = base_llama();
  j.erase("model_type");
  expect_invalid(j, {"model_type"});

  j = base_llama();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_invalid(j, {"yarn", "default, llama3"});

  j = base_llama();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect_invalid(j, {"linear"});

  j = base_llama();
  j["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 1e4}, {"factor", 2.0}};
  expect_invalid(j, {"dynamic"});

  j = base_llama();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  expect_invalid(j, {"low_freq_factor"});

  j = base_llama();
  j["num_key_value_heads"] = 3;
  expect_invalid(j, {"multiple of KV heads", "4", "3"});

  j = base_llama();
  j.erase("hidden_size");
  expect_invalid(j, {"hidden_size", "missing"});

  j = base_llama();
  j["vocab_size"] = -5;
  expect_invalid(j, {"vocab", "-5"});

  j = base_llama();
  j["model_type"] = "qwen2";
  j["hidden_size"] = 50;  // 50 / 4 heads, no head_dim
  expect_invalid(j, {"hidden_size 50", "head_dim"});

  j = base_llama();
  j["model_type"] = "qwen3";
  j["head_dim"] = 15;
  expect_invalid(j, {"head_dim", "15"});

  j = base_llama();
  j["mlp_bias"] = true;
  expect_invalid(j, {"mlp_bias"});

  j = base_llama();
  j["model_type"] = "qwen2";
  j["use_sliding_window"] = true;
  expect_invalid(j, {"use_sliding_window"});

  j = base_llama();
  j["hidden_act"] = "gelu";
  expect_invalid(j, {"gelu"});

  j = base_llama();
  j["num_hidden_layers"] = "two";
  expect_invalid(j, {"num_hidden_layers", "integer"});

  j = base_llama();
  j["eos_token_id"] = 100;  // outside vocab 100
  expect_invalid(j, {"eos token id 100"});

  j = base_llama();
  j["partial_rotary_factor"] = 0.5;
  expect_invalid(j, {"partial_rotary_factor"});
}

TEST_CASE("model_config: validate and to_json", "[unit][io]") {
  ModelConfig m = fkv::io::config_from_hf_dir(case_dir("llama3_rope_sharded"));
  const json j = m.to_json();
  CHECK(j.at("arch") == "llama");
  CHECK(j.at("head_dim") == 16);
  CHECK(j.at("rope").at("type") == "llama3");
  CHECK(j.at("rope").at("original_max_position_embeddings") == 64);
  CHECK(j.at("eos_ids") == json::array({2, 3}));
  m.n_head_kv = 3;
  CHECK_THROWS_AS(m.validate(), fkv::InvalidArgument);
  m.n_head_kv = 2;
  m.head_dim = 0;
  CHECK_THROWS_AS(m.validate(), fkv::InvalidArgument);
}

TEST_CASE("model_config: llama GGUF metadata gives the same config as config.json", "[unit][io]") {
  const std::string dir = case_dir("llama_g3_tied_oldrope");
  const fkv::io::GgufFile f(dir + "/model.gguf");
  const ModelConfig g = fkv::io::config_from_gguf(f);
  const ModelConfig h = fkv::io::config_from_hf_dir(dir);
  CHECK(g.arch == Arch::Llama);
  CHECK(g.n_vocab == h.n_vocab);
  CHECK(g.hidden == h.hidden);
  CHECK(g.n_layer == h.n_layer);
  CHECK(g.n_head_q == h.n_head_q);
  CHECK(g.n_head_kv == h.n_head_kv);
  CHECK(g.head_dim == h.head_dim);
  CHECK(g.ffn_hidden == h.ffn_hidden);
  CHECK(static_cast<float>(g.rms_eps) == static_cast<float>(h.rms_eps));  // GGUF stores f32
  CHECK(g.rope.type == "default");
  CHECK(g.rope.theta == h.rope.theta);
  CHECK(g.max_position == h.max_position);
  CHECK(g.tie_embeddings);  // no output.weight in the file
  CHECK_FALSE(g.qkv_bias);
  CHECK_FALSE(g.qk_norm);
  CHECK(g.bos_id == h.bos_id);
  CHECK(g.eos_ids == h.eos_ids);
  CHECK(fkv::io::rope_inv_freq(g) == fkv::io::rope_inv_freq(h));
}
