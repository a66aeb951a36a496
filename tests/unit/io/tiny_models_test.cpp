// Consistency of the tiny golden bundles (scripts/make_golden.py): the llama GGUF of
// llama_g3_tied_oldrope holds exactly the safetensors weights, with attn_q/attn_k rows permuted as
// llama.cpp's convert_hf_to_gguf.py does (engineering.md §3.6), so un-permuting on load (view each
// head's rows as [D/2, 2], swap, flatten) must give HF's q_proj/k_proj back bit for bit.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "foresightkv/io/gguf.h"
#include "foresightkv/io/model_config.h"
#include "foresightkv/io/quant.h"
#include "foresightkv/io/safetensors.h"
#include "support/paths.h"

namespace {

// Stored F16 tensor -> fp32 values.
std::vector<float> f16_values(const fkv::io::StTensor& t) {
  REQUIRE(t.dtype == fkv::io::StDtype::F16);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, t.data + 2 * i, 2);
    out[i] = fkv::io::fp16_to_fp32(h);
  }
  return out;
}

// Inverse of LlamaModel.permute for a [n_head * D, cols] matrix: GGUF row h*D + 2j is HF row h*D + j,
// GGUF row h*D + 2j + 1 is HF row h*D + j + D/2.
std::vector<float> unpermute_rows(const std::vector<float>& w, int64_t n_head, int64_t d, int64_t cols) {
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t j = 0; j < d / 2; ++j)
      for (int64_t half = 0; half < 2; ++half) {
        const float* src = &w[static_cast<size_t>((h * d + 2 * j + half) * cols)];
        float* dst = &out[static_cast<size_t>((h * d + j + half * (d / 2)) * cols)];
        std::memcpy(dst, src, static_cast<size_t>(cols) * sizeof(float));
      }
  return out;
}

}  // namespace

TEST_CASE("tiny_models: llama GGUF = safetensors weights with permuted Q/K", "[unit][io]") {
  const std::string dir = fkv::test::test_data("tiny_models/llama_g3_tied_oldrope");
  const fkv::io::SafetensorsCheckpoint st(dir);
  const fkv::io::GgufFile gg(dir + "/model.gguf");
  const fkv::io::ModelConfig c = fkv::io::config_from_hf_dir(dir);
  REQUIRE(gg.find_tensor("output.weight") == nullptr);  // tied

  auto check_same = [&](const std::string& gname, const std::string& hname, int64_t permute_heads) {
    INFO(gname << " <- " << hname);
    const auto& gt = gg.tensor(gname);
    const auto& ht = st.get(hname);
    CHECK(gt.type == fkv::io::GgmlType::F32);
    REQUIRE(gt.shape() == ht.shape);
    std::vector<float> g = gg.dequantize(gt);
    if (permute_heads > 0) {
      const std::vector<float> permuted = g;
      g = unpermute_rows(permuted, permute_heads, c.head_dim, ht.shape[1]);
      CHECK(g != permuted);  // the permutation is not the identity for these weights
    }
    CHECK(g == f16_values(ht));
  };
  check_same("token_embd.weight", "model.embed_tokens.weight", 0);
  check_same("output_norm.weight", "model.norm.weight", 0);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".", p = "model.layers." + std::to_string(l) + ".";
    check_same(b + "attn_norm.weight", p + "input_layernorm.weight", 0);
    check_same(b + "attn_q.weight", p + "self_attn.q_proj.weight", c.n_head_q);
    check_same(b + "attn_k.weight", p + "self_attn.k_proj.weight", c.n_head_kv);
    check_same(b + "attn_v.weight", p + "self_attn.v_proj.weight", 0);
    check_same(b + "attn_output.weight", p + "self_attn.o_proj.weight", 0);
    check_same(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", 0);
    check_same(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", 0);
    check_same(b + "ffn_up.weight", p + "mlp.up_proj.weight", 0);
    check_same(b + "ffn_down.weight", p + "mlp.down_proj.weight", 0);
  }
}
