// Naive ATen reference transformer (see reference_model.h). Readability over speed.
#include "foresightkv/golden/reference_model.h"

#include <ATen/ATen.h>

#include <cstring>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/json.h"
#include "foresightkv/io/gguf.h"
#include "foresightkv/io/safetensors.h"

namespace fkv::golden {
namespace {

at::Tensor from_st(const io::StTensor& t) {
  at::Tensor out = at::empty(t.shape, at::kFloat);
  float* o = out.data_ptr<float>();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case io::StDtype::F32: std::memcpy(&o[i], t.data + 4 * i, 4); break;
      case io::StDtype::F16: { uint16_t h; std::memcpy(&h, t.data + 2 * i, 2); o[i] = io::fp16_to_fp32(h); break; }
      case io::StDtype::BF16: { uint16_t h; std::memcpy(&h, t.data + 2 * i, 2); o[i] = io::bf16_to_fp32(h); break; }
      default: FKV_THROW_KIND(2, "reference: tensor '{}' has unsupported dtype {}", t.name, io::st_dtype_name(t.dtype));
    }
  }
  return out;
}

at::Tensor from_gguf(const io::GgufFile& f, const std::string& name) {
  const io::GgufTensorInfo& t = f.tensor(name);
  std::vector<float> v = f.dequantize(t);
  return at::from_blob(v.data(), t.shape(), at::kFloat).clone();
}

/// Undo llama.cpp's converter permutation of Q/K rows: the converter maps HF [H, 2, D/2, in] to
/// [H, D/2, 2, in]; the inverse views the GGUF rows as [H, D/2, 2, in] and swaps back.
at::Tensor unpermute(const at::Tensor& w, int64_t n_head) {
  const int64_t rows = w.size(0);
  std::vector<int64_t> shape = {n_head, rows / n_head / 2, 2};
  for (int64_t i = 1; i < w.dim(); ++i) shape.push_back(w.size(i));
  at::Tensor r = w.reshape(shape).transpose(1, 2);
  return r.reshape(w.sizes()).contiguous();
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor var = xf.pow(2).mean(-1, true);
  return w * (xf * at::rsqrt(var + eps)).to(x.scalar_type());
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

}  // namespace

ReferenceModel ReferenceModel::load(const std::string& path, at::ScalarType dtype, at::Device device) {
  ReferenceModel m;
  m.dtype_ = dtype;
  m.device_ = device;
  auto put = [&](const at::Tensor& t) { return t.defined() ? t.to(device, dtype) : t; };
  if (is_directory(path)) {
    const std::string cfg = path + "/config.json";
    m.config_ = io::config_from_hf_json(read_json_file(cfg), cfg);
    io::SafetensorsCheckpoint ck(path);
    auto get = [&](const std::string& n) { return from_st(ck.get(n)); };
    const auto& c = m.config_;
    m.embed_ = put(get("model.embed_tokens.weight"));
    m.lm_head_ = c.tie_embeddings ? m.embed_ : put(get("lm_head.weight"));
    m.norm_ = put(get("model.norm.weight"));
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      Layer L;
      L.attn_norm = put(get(p + "input_layernorm.weight"));
      L.wq = put(get(p + "self_attn.q_proj.weight"));
      L.wk = put(get(p + "self_attn.k_proj.weight"));
      L.wv = put(get(p + "self_attn.v_proj.weight"));
      L.wo = put(get(p + "self_attn.o_proj.weight"));
      if (c.qkv_bias) {
        L.bq = put(get(p + "self_attn.q_proj.bias"));
        L.bk = put(get(p + "self_attn.k_proj.bias"));
        L.bv = put(get(p + "self_attn.v_proj.bias"));
      }
      if (c.o_bias) L.bo = put(get(p + "self_attn.o_proj.bias"));
      if (c.qk_norm) {
        L.q_norm = put(get(p + "self_attn.q_norm.weight"));
        L.k_norm = put(get(p + "self_attn.k_norm.weight"));
      }
      L.ffn_norm = put(get(p + "post_attention_layernorm.weight"));
      L.w_gate = put(get(p + "mlp.gate_proj.weight"));
      L.w_up = put(get(p + "mlp.up_proj.weight"));
      L.w_down = put(get(p + "mlp.down_proj.weight"));
      m.layers_.push_back(L);
    }
  } else {
    io::GgufFile f(path);
    m.config_ = io::config_from_gguf(f);
    const auto& c = m.config_;
    const bool llama = c.arch == io::Arch::Llama;
    auto get = [&](const std::string& n) { return from_gguf(f, n); };
    m.embed_ = put(get("token_embd.weight"));
    m.lm_head_ = f.find_tensor("output.weight") ? put(get("output.weight")) : m.embed_;
    m.norm_ = put(get("output_norm.weight"));
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      Layer L;
      L.attn_norm = put(get(p + "attn_norm.weight"));
      at::Tensor wq = get(p + "attn_q.weight"), wk = get(p + "attn_k.weight");
      L.wq = put(llama ? unpermute(wq, c.n_head_q) : wq);
      L.wk = put(llama ? unpermute(wk, c.n_head_kv) : wk);
      L.wv = put(get(p + "attn_v.weight"));
      L.wo = put(get(p + "attn_output.weight"));
      if (c.qkv_bias) {
        at::Tensor bq = get(p + "attn_q.bias"), bk = get(p + "attn_k.bias");
        L.bq = put(llama ? unpermute(bq, c.n_head_q) : bq);
        L.bk = put(llama ? unpermute(bk, c.n_head_kv) : bk);
        L.bv = put(get(p + "attn_v.bias"));
      }
      if (c.o_bias) L.bo = put(get(p + "attn_output.bias"));
      if (c.qk_norm) {
        L.q_norm = put(get(p + "attn_q_norm.weight"));
        L.k_norm = put(get(p + "attn_k_norm.weight"));
      }
      L.ffn_norm = put(get(p + "ffn_norm.weight"));
      L.w_gate = put(get(p + "ffn_gate.weight"));
      L.w_up = put(get(p + "ffn_up.weight"));
      L.w_down = put(get(p + "ffn_down.weight"));
      m.layers_.push_back(L);
    }
  }
  return m;
}

at::Tensor ReferenceModel::forward(const at::Tensor& ids_in, const at::Tensor& key_mask) const {
  const auto& c = config_;
  FKV_CHECK_ARG(ids_in.dim() == 1, "reference forward: ids must be [T]");
  const int64_t T = ids_in.size(0), Hq = c.n_head_q, Hkv = c.n_head_kv, D = c.head_dim, G = Hq / Hkv;
  at::Tensor ids = ids_in.to(device_, at::kLong);
  FKV_CHECK_ARG(ids.min().item<int64_t>() >= 0 && ids.max().item<int64_t>() < c.n_vocab,
                "reference forward: token id outside the vocabulary [0, {})", c.n_vocab);
  if (key_mask.defined())
    FKV_CHECK_ARG(key_mask.dim() == 4 && key_mask.size(0) == c.n_layer && key_mask.size(1) == Hkv &&
                      key_mask.size(2) == T && key_mask.size(3) == T,
                  "reference forward: key_mask must be [n_layer, Hkv, T, T]");

  // RoPE tables as HF: inv_freq (fp32) outer positions (fp32), emb = cat(freqs, freqs).
  std::vector<float> inv = io::rope_inv_freq(c);
  at::Tensor inv_t = at::from_blob(inv.data(), {D / 2}, at::kFloat).clone().to(device_);
  at::Tensor posf = at::arange(T, at::TensorOptions().dtype(at::kFloat).device(device_));
  at::Tensor freqs = posf.unsqueeze(1) * inv_t.unsqueeze(0);  // [T, D/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos().to(dtype_), sin = emb.sin().to(dtype_);

  at::Tensor causal = at::ones({T, T}, at::TensorOptions().dtype(at::kBool).device(device_)).tril();
  at::Tensor x = embed_.index_select(0, ids);  // [T, hidden]
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const Layer& L = layers_[l];
    at::Tensor h = rms_norm(x, L.attn_norm, c.rms_eps);
    at::Tensor q = at::linear(h, L.wq, L.bq).view({T, Hq, D});
    at::Tensor k = at::linear(h, L.wk, L.bk).view({T, Hkv, D});
    at::Tensor v = at::linear(h, L.wv, L.bv).view({T, Hkv, D});
    if (c.qk_norm) {
      q = rms_norm(q, L.q_norm, c.rms_eps);
      k = rms_norm(k, L.k_norm, c.rms_eps);
    }
    q = q.transpose(0, 1);  // [Hq, T, D]
    k = k.transpose(0, 1);
    v = v.transpose(0, 1);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    // repeat_kv: query head h uses KV head h / G
    at::Tensor kr = k.repeat_interleave(G, 0), vr = v.repeat_interleave(G, 0);
    at::Tensor scores = at::matmul(q, kr.transpose(-1, -2)).to(at::kFloat) * (1.0 / std::sqrt(double(D)));
    at::Tensor allowed = causal.unsqueeze(0).expand({Hq, T, T});
    if (key_mask.defined())
      allowed = allowed & key_mask[l].to(device_, at::kBool).repeat_interleave(G, 0);
    scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    at::Tensor p = at::softmax(scores, -1);
    p = at::where(allowed.any(-1, true), p, at::zeros({}, p.options())).to(dtype_);
    at::Tensor o = at::matmul(p, vr).transpose(0, 1).reshape({T, Hq * D});
    x = x + at::linear(o, L.wo, L.bo);
    at::Tensor hn = rms_norm(x, L.ffn_norm, c.rms_eps);
    x = x + at::linear(at::silu(at::linear(hn, L.w_gate)) * at::linear(hn, L.w_up), L.w_down);
  }
  x = rms_norm(x, norm_, c.rms_eps);
  return at::linear(x, lm_head_).to(at::kCPU, at::kFloat);
}

}  // namespace fkv::golden
