// Weight loading from GGUF (llama/qwen2/qwen3) and HF safetensors checkpoints into model::Weights.
// Matrices are views into the memory map unless they need conversion (weight_format f32/bf16),
// un-permutation (llama GGUF Q/K) or realignment (unaligned safetensors data).
#include "foresightkv/model/weights.h"

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <cstdlib>
#include <cstring>
#include <map>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/json.h"
#include "foresightkv/io/gguf.h"
#include "foresightkv/io/safetensors.h"

namespace fkv::model {
namespace {

using io::GgmlType;

std::shared_ptr<void> alloc_bytes(size_t n) {
  void* p = std::aligned_alloc(64, (n + 63) / 64 * 64);
  FKV_CHECK(p != nullptr, "out of memory allocating {} bytes of weights", n);
  return std::shared_ptr<void>(p, std::free);
}

/// Convert a matrix to `target` (F32 or BF16) in an owned buffer.
Matrix convert_matrix(const Matrix& m, GgmlType target) {
  if (m.view.type == target) return m;
  const int64_t R = m.view.rows, C = m.view.cols;
  const size_t stride = io::row_bytes(target, C);
  auto buf = alloc_bytes(stride * R);
  std::vector<float> row(static_cast<size_t>(C));
  for (int64_t r = 0; r < R; ++r) {
    ops::dequantize_row(m.view, r, row.data());
    uint8_t* dst = static_cast<uint8_t*>(buf.get()) + stride * r;
    if (target == GgmlType::F32) {
      std::memcpy(dst, row.data(), stride);
    } else {
      auto* d16 = reinterpret_cast<uint16_t*>(dst);
      for (int64_t c = 0; c < C; ++c) d16[c] = io::fp32_to_bf16(row[c]);
    }
  }
  Matrix out = m;
  out.view = ops::WeightView{target, R, C, static_cast<const uint8_t*>(buf.get()), stride};
  out.owner = buf;
  return out;
}

/// llama.cpp's converter stores each Q/K head's rows interleaved: GGUF row 2j = HF row j and GGUF row
/// 2j+1 = HF row j + D/2 (engineering.md §3.6). Rebuild HF row order by copying whole rows.
Matrix unpermute_rows(const Matrix& m, int64_t n_head) {
  const int64_t R = m.view.rows;
  FKV_CHECK_FORMAT(R % n_head == 0 && (R / n_head) % 2 == 0,
                   "tensor '{}': {} rows cannot be split into {} heads of even size", m.name, R, n_head);
  const int64_t D = R / n_head, half = D / 2;
  const size_t stride = m.view.row_stride;
  auto buf = alloc_bytes(stride * R);
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t r = 0; r < D; ++r) {
      const int64_t src = r < half ? 2 * r : 2 * (r - half) + 1;
      std::memcpy(static_cast<uint8_t*>(buf.get()) + (h * D + r) * stride, m.view.data + (h * D + src) * stride, stride);
    }
  Matrix out = m;
  out.view.data = static_cast<const uint8_t*>(buf.get());
  out.owner = buf;
  return out;
}

void check_shape(const Matrix& m, int64_t rows, int64_t cols) {
  FKV_CHECK_FORMAT(m.view.rows == rows && m.view.cols == cols,
                   "tensor '{}' has shape [{}, {}] but the config implies [{}, {}]; the weights do not belong to "
                   "this config",
                   m.name, m.view.rows, m.view.cols, rows, cols);
}

at::Tensor vec_f32(const float* p, int64_t n) { return at::from_blob(const_cast<float*>(p), {n}, at::kFloat).clone(); }

// ---- GGUF --------------------------------------------------------------------------------------
struct GgufSource {
  std::shared_ptr<io::GgufFile> f;
  Matrix matrix(const std::string& name) const {
    const io::GgufTensorInfo& t = f->tensor(name);
    FKV_CHECK_FORMAT(t.ne.size() == 2, "GGUF tensor '{}' has {} dims, expected a 2-D matrix", name, t.ne.size());
    FKV_CHECK_FORMAT(ops::matmul_supported(t.type), "GGUF tensor '{}' has type {}, which fkv cannot compute with",
                     name, io::type_name(t.type));
    Matrix m;
    m.name = name;
    m.view = ops::WeightView{t.type, t.ne[1], t.ne[0], t.data, io::row_bytes(t.type, t.ne[0])};
    return m;
  }
  at::Tensor vec(const std::string& name, int64_t n) const {
    const io::GgufTensorInfo& t = f->tensor(name);
    FKV_CHECK_FORMAT(t.n_elements() == n, "GGUF tensor '{}' has {} elements, expected {}", name, t.n_elements(), n);
    std::vector<float> v = f->dequantize(t);
    return vec_f32(v.data(), n);
  }
  bool has(const std::string& name) const { return f->find_tensor(name) != nullptr; }
};

// ---- per-layer tensors, shared by both formats -------------------------------------------------
struct TensorNames {
  const char* layer_prefix;
  const char *attn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *bo, *q_norm, *k_norm, *ffn_norm, *gate, *up, *down;
};
constexpr TensorNames kGgufNames = {"blk.", "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                                    "attn_output.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias",
                                    "attn_output.bias", "attn_q_norm.weight", "attn_k_norm.weight", "ffn_norm.weight",
                                    "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};
constexpr TensorNames kHfNames = {"model.layers.", "input_layernorm.weight", "self_attn.q_proj.weight",
                                  "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                  "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                                  "self_attn.o_proj.bias", "self_attn.q_norm.weight", "self_attn.k_norm.weight",
                                  "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                                  "mlp.down_proj.weight"};

/// Load every layer from `src` (GgufSource or StSource) with the format's tensor names, checking each
/// shape against the config. `permuted`: llama GGUF Q/K rows (and biases) are un-permuted.
template <class Src>
void load_layers(const Src& src, Weights& w, const TensorNames& n, bool permuted) {
  const auto& c = w.config;
  const int64_t D = c.head_dim;
  auto unpermute_bias = [&](const at::Tensor& b, int64_t heads) {
    // GGUF element 2j is HF element j, 2j+1 is j + D/2: view [heads, D/2, 2] and swap the last two axes.
    return permuted ? b.view({heads, D / 2, 2}).transpose(1, 2).reshape({-1}).contiguous() : b;
  };
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string p = n.layer_prefix + std::to_string(l) + ".";
    LayerWeights L;
    L.attn_norm = src.vec(p + n.attn_norm, c.hidden);
    L.wq = src.matrix(p + n.wq);
    L.wk = src.matrix(p + n.wk);
    L.wv = src.matrix(p + n.wv);
    L.wo = src.matrix(p + n.wo);
    check_shape(L.wq, c.n_head_q * D, c.hidden);
    check_shape(L.wk, c.n_head_kv * D, c.hidden);
    check_shape(L.wv, c.n_head_kv * D, c.hidden);
    check_shape(L.wo, c.hidden, c.n_head_q * D);
    if (permuted) {
      L.wq = unpermute_rows(L.wq, c.n_head_q);
      L.wk = unpermute_rows(L.wk, c.n_head_kv);
    }
    if (c.qkv_bias) {
      L.bq = unpermute_bias(src.vec(p + n.bq, c.n_head_q * D), c.n_head_q);
      L.bk = unpermute_bias(src.vec(p + n.bk, c.n_head_kv * D), c.n_head_kv);
      L.bv = src.vec(p + n.bv, c.n_head_kv * D);
    }
    if (c.o_bias) L.bo = src.vec(p + n.bo, c.hidden);
    if (c.qk_norm) {
      L.q_norm = src.vec(p + n.q_norm, D);
      L.k_norm = src.vec(p + n.k_norm, D);
    }
    L.ffn_norm = src.vec(p + n.ffn_norm, c.hidden);
    L.w_gate = src.matrix(p + n.gate);
    L.w_up = src.matrix(p + n.up);
    L.w_down = src.matrix(p + n.down);
    check_shape(L.w_gate, c.ffn_hidden, c.hidden);
    check_shape(L.w_up, c.ffn_hidden, c.hidden);
    check_shape(L.w_down, c.hidden, c.ffn_hidden);
    w.layers.push_back(std::move(L));
  }
}

std::shared_ptr<Weights> load_gguf(const std::string& path) {
  auto w = std::make_shared<Weights>();
  GgufSource src{std::make_shared<io::GgufFile>(path)};
  w->config = io::config_from_gguf(*src.f);
  w->config.validate();
  w->file_owner = src.f;
  w->format = "gguf";
  const auto& c = w->config;
  w->tok_embd = src.matrix("token_embd.weight");
  check_shape(w->tok_embd, c.n_vocab, c.hidden);
  if (src.has("output.weight")) {
    w->output = src.matrix("output.weight");
    check_shape(w->output, c.n_vocab, c.hidden);
  } else {
    w->output = w->tok_embd;
  }
  w->out_norm = src.vec("output_norm.weight", c.hidden);
  load_layers(src, *w, kGgufNames, /*permuted=*/c.arch == io::Arch::Llama);
  return w;
}

// ---- safetensors -------------------------------------------------------------------------------
struct StSource {
  std::shared_ptr<io::SafetensorsCheckpoint> ck;
  Matrix matrix(const std::string& name) const {
    const io::StTensor& t = ck->get(name);
    FKV_CHECK_FORMAT(t.shape.size() == 2, "tensor '{}' has {} dims, expected a 2-D matrix", name, t.shape.size());
    GgmlType type;
    switch (t.dtype) {
      case io::StDtype::F32: type = GgmlType::F32; break;
      case io::StDtype::F16: type = GgmlType::F16; break;
      case io::StDtype::BF16: type = GgmlType::BF16; break;
      default:
        FKV_THROW_KIND(2, "tensor '{}' has dtype {}; fkv reads F32, F16 and BF16 weights", name,
                       io::st_dtype_name(t.dtype));
    }
    Matrix m;
    m.name = name;
    const size_t es = io::st_dtype_size(t.dtype);
    m.view = ops::WeightView{type, t.shape[0], t.shape[1], t.data, static_cast<size_t>(t.shape[1]) * es};
    if (reinterpret_cast<uintptr_t>(t.data) % es != 0) {  // realign: kernels load elements directly
      auto buf = alloc_bytes(t.nbytes);
      std::memcpy(buf.get(), t.data, t.nbytes);
      m.view.data = static_cast<const uint8_t*>(buf.get());
      m.owner = buf;
    }
    return m;
  }
  at::Tensor vec(const std::string& name, int64_t n) const {
    const io::StTensor& t = ck->get(name);
    FKV_CHECK_FORMAT(t.numel() == n && t.shape.size() == 1, "tensor '{}' has shape of {} elements, expected [{}]",
                     name, t.numel(), n);
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      switch (t.dtype) {
        case io::StDtype::F32: std::memcpy(&v[i], t.data + 4 * i, 4); break;
        case io::StDtype::F16: { uint16_t h; std::memcpy(&h, t.data + 2 * i, 2); v[i] = io::fp16_to_fp32(h); break; }
        case io::StDtype::BF16: { uint16_t h; std::memcpy(&h, t.data + 2 * i, 2); v[i] = io::bf16_to_fp32(h); break; }
        default: FKV_THROW_KIND(2, "tensor '{}' has dtype {}; expected F32, F16 or BF16", name, io::st_dtype_name(t.dtype));
      }
    }
    return vec_f32(v.data(), n);
  }
  bool has(const std::string& name) const { return ck->find(name) != nullptr; }
};

std::shared_ptr<Weights> load_safetensors(const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  FKV_CHECK_ARG(file_exists(cfg_path), "'{}' has no config.json; an HF model directory needs config.json and "
                "model.safetensors (or a sharded index)", dir);
  auto w = std::make_shared<Weights>();
  w->config = io::config_from_hf_json(read_json_file(cfg_path), cfg_path);
  w->config.validate();
  StSource src{std::make_shared<io::SafetensorsCheckpoint>(dir)};
  w->file_owner = src.ck;
  w->format = "safetensors";
  const auto& c = w->config;
  w->tok_embd = src.matrix("model.embed_tokens.weight");
  check_shape(w->tok_embd, c.n_vocab, c.hidden);
  if (c.tie_embeddings) {
    w->output = w->tok_embd;
  } else {
    FKV_CHECK_FORMAT(src.has("lm_head.weight"), "config says tie_word_embeddings=false but '{}' has no lm_head.weight",
                     dir);
    w->output = src.matrix("lm_head.weight");
    check_shape(w->output, c.n_vocab, c.hidden);
  }
  w->out_norm = src.vec("model.norm.weight", c.hidden);
  load_layers(src, *w, kHfNames, /*permuted=*/false);
  return w;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

}  // namespace

int64_t Weights::n_params() const {
  auto mat = [](const Matrix& m) { return m.view.rows * m.view.cols; };
  int64_t n = mat(tok_embd) + out_norm.numel();
  if (output.view.data != tok_embd.view.data) n += mat(output);
  for (const auto& L : layers) {
    n += mat(L.wq) + mat(L.wk) + mat(L.wv) + mat(L.wo) + mat(L.w_gate) + mat(L.w_up) + mat(L.w_down);
    n += L.attn_norm.numel() + L.ffn_norm.numel();
    for (const at::Tensor* t : {&L.bq, &L.bk, &L.bv, &L.bo, &L.q_norm, &L.k_norm})
      if (t->defined()) n += t->numel();
  }
  return n;
}

int64_t Weights::bytes() const {
  auto mat = [](const Matrix& m) { return static_cast<int64_t>(m.view.row_stride) * m.view.rows; };
  int64_t n = mat(tok_embd) + out_norm.nbytes();
  if (output.view.data != tok_embd.view.data) n += mat(output);
  for (const auto& L : layers) {
    n += mat(L.wq) + mat(L.wk) + mat(L.wv) + mat(L.wo) + mat(L.w_gate) + mat(L.w_up) + mat(L.w_down);
    n += L.attn_norm.nbytes() + L.ffn_norm.nbytes();
    for (const at::Tensor* t : {&L.bq, &L.bk, &L.bv, &L.bo, &L.q_norm, &L.k_norm})
      if (t->defined()) n += t->nbytes();
  }
  return n;
}

std::vector<std::pair<std::string, int>> Weights::type_summary() const {
  std::map<std::string, int> h;
  h[io::type_name(tok_embd.view.type)]++;
  if (output.view.data != tok_embd.view.data) h[io::type_name(output.view.type)]++;
  for (const auto& L : layers)
    for (const Matrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) h[io::type_name(m->view.type)]++;
  return {h.begin(), h.end()};
}

std::string resolve_model_path(const std::string& p) {
  if (file_exists(p)) return p;
  // A registry name (configs/models/NAME.json) whose file was fetched into data/models.
  const char* env = std::getenv("FKV_MODEL_DIR");
  const char* root = std::getenv("FKV_ROOT");
  std::vector<std::string> registries, dirs;
  if (root) registries.push_back(std::string(root) + "/configs/models");
  registries.push_back("configs/models");
  if (env) dirs.push_back(env);
  if (root) dirs.push_back(std::string(root) + "/data/models");
  dirs.push_back("data/models");
  for (const auto& reg : registries) {
    const std::string entry = reg + "/" + p + ".json";
    if (!file_exists(entry)) continue;
    const json j = read_json_file(entry);
    const std::string file = j.at("file").get<std::string>();
    for (const auto& d : dirs)
      if (file_exists(d + "/" + file)) return d + "/" + file;
    FKV_THROW_KIND(1, "model '{}' is registered ({}) but {} was not found in data/models; run scripts/fetch_model.sh {}",
                   p, entry, file, p);
  }
  FKV_THROW_KIND(1, "model '{}' not found: expected a .gguf file, an HF model directory (config.json + safetensors) "
                 "or a registered name from configs/models", p);
}

LoadOptions resolve_load_options(LoadOptions opt) {
  FKV_CHECK_ARG(opt.activations == "f32" || opt.activations == "q8",
                "unknown activation format '{}'; expected f32 or q8", opt.activations);
  FKV_CHECK_ARG(opt.backend == "native" || opt.backend == "aten" || opt.backend == "auto",
                "unknown backend '{}'; expected native, aten or auto", opt.backend);
  FKV_CHECK_ARG(opt.dtype == "f32" || opt.dtype == "bf16" || opt.dtype == "auto",
                "unknown compute dtype '{}'; expected f32, bf16 or auto", opt.dtype);
  const bool cuda = opt.device == "cuda" || opt.device.rfind("cuda:", 0) == 0;
  FKV_CHECK_ARG(cuda || opt.device == "cpu", "unknown device '{}'; expected cpu, cuda or cuda:N", opt.device);
  if (cuda) {
    int64_t index = 0;
    if (opt.device.size() > 5) {
      const std::string n = opt.device.substr(5);
      FKV_CHECK_ARG(!n.empty() && n.find_first_not_of("0123456789") == std::string::npos,
                    "device '{}': expected cuda:N with a device index N", opt.device);
      index = std::stoll(n);
    }
    FKV_CHECK_ARG(at::hasCUDA(), "--device {}: no CUDA device is visible to this process (no NVIDIA GPU, driver or "
                  "CUDA_VISIBLE_DEVICES lets none through); run on a GPU machine or use --device cpu", opt.device);
    const int64_t n_dev = at::detail::getCUDAHooks().deviceCount();
    FKV_CHECK_ARG(index < n_dev, "--device {}: this process sees {} CUDA device(s) (indices 0..{})", opt.device, n_dev,
                  n_dev - 1);
    opt.device = "cuda:" + std::to_string(index);
    FKV_CHECK_ARG(opt.backend != "native", "--backend native is the hand-written CPU kernels; --device {} runs "
                  "--backend aten (or leave --backend at auto)", opt.device);
    opt.backend = "aten";
    if (opt.dtype == "auto") opt.dtype = "bf16";
  } else {
    if (opt.backend == "auto") opt.backend = "native";
    if (opt.dtype == "auto") opt.dtype = "f32";
  }
  FKV_CHECK_ARG(opt.backend == "aten" || opt.dtype == "f32", "--dtype {} is the aten backend's compute dtype; the "
                "native kernels compute in fp32 (use --backend aten, or --weights bf16 to store bf16 weights)", opt.dtype);
  FKV_CHECK_ARG(opt.backend == "native" || opt.activations == "f32", "--activations q8 is a native-kernel option; "
                "the aten backend computes in {}", opt.dtype);
  return opt;
}

std::string device_kind(const std::string& device) {
  return device == "cuda" || device.rfind("cuda:", 0) == 0 ? "cuda" : device;
}

std::shared_ptr<Weights> load_weights(const std::string& path_or_name, const LoadOptions& opt) {
  const LoadOptions r = resolve_load_options(opt);  // fail on a bad device/backend before mapping the file
  const std::string path = resolve_model_path(path_or_name);
  std::shared_ptr<Weights> w;
  if (is_directory(path)) {
    w = load_safetensors(path);
  } else if (ends_with(path, ".gguf")) {
    w = load_gguf(path);
  } else if (ends_with(path, ".safetensors") || ends_with(path, "config.json")) {
    const auto slash = path.find_last_of('/');
    w = load_safetensors(slash == std::string::npos ? "." : path.substr(0, slash));
  } else {
    // Sniff the magic so a renamed GGUF still loads.
    MappedFile f(path);
    FKV_CHECK_ARG(f.size() >= 4 && std::memcmp(f.data(), "GGUF", 4) == 0,
                  "'{}' is neither a .gguf file nor an HF model directory", path);
    w = load_gguf(path);
  }
  w->source_path = path;
  w->act_q8 = opt.activations == "q8";
  w->backend = r.backend;
  w->device = r.device;
  w->dtype = r.dtype;
  if (opt.weight_format != "native") {
    GgmlType target;
    if (opt.weight_format == "f32") target = GgmlType::F32;
    else if (opt.weight_format == "bf16") target = GgmlType::BF16;
    else FKV_THROW_KIND(1, "unknown weight format '{}'; expected native, f32 or bf16", opt.weight_format);
    const bool tied = w->output.view.data == w->tok_embd.view.data;
    w->tok_embd = convert_matrix(w->tok_embd, target);
    w->output = tied ? w->tok_embd : convert_matrix(w->output, target);
    for (auto& L : w->layers)
      for (Matrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) *m = convert_matrix(*m, target);
  }
  return w;
}

}  // namespace fkv::model
