#include "foresightkv/judge/judge.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <cstring>
#include <regex>
#include <set>

#include <fmt/ostream.h>

#include "foresightkv/core/error.h"
#include "foresightkv/io/safetensors.h"

namespace fkv::judge {
namespace {

at::Tensor st_to_float(const io::StTensor& t, const std::string& path) {
  FKV_CHECK_FORMAT(t.dtype == io::StDtype::F32 || t.dtype == io::StDtype::F16 || t.dtype == io::StDtype::BF16 ||
                       t.dtype == io::StDtype::F64,
                   "{}: judge tensor {} has dtype {} (expected F32, F16, BF16 or F64)", path, t.name,
                   io::st_dtype_name(t.dtype));
  return tensor_from_st(t, path).to(at::kFloat);
}

}  // namespace

at::Tensor tensor_from_st(const io::StTensor& t, const std::string& path) {
  at::ScalarType dt;
  switch (t.dtype) {
    case io::StDtype::F64: dt = at::kDouble; break;
    case io::StDtype::F32: dt = at::kFloat; break;
    case io::StDtype::F16: dt = at::kHalf; break;
    case io::StDtype::BF16: dt = at::kBFloat16; break;
    case io::StDtype::I64: dt = at::kLong; break;
    case io::StDtype::I32: dt = at::kInt; break;
    case io::StDtype::I16: dt = at::kShort; break;
    default:
      throw FormatError(fmt::format("{}: tensor {} has unsupported dtype {}", path, t.name, io::st_dtype_name(t.dtype)));
  }
  at::Tensor out = at::empty(t.shape, dt);
  FKV_CHECK_FORMAT(static_cast<size_t>(out.nbytes()) == t.nbytes, "{}: tensor {} holds {} bytes for shape {}", path,
                   t.name, t.nbytes, fmt::streamed(out.sizes()));
  std::memcpy(out.data_ptr(), t.data, t.nbytes);
  return out;
}

std::string judge_key(int64_t layer, const char* fc, const char* kind) {
  return fmt::format("model.layers.{}.self_attn.judge_model.{}.{}", layer, fc, kind);
}

Judge Judge::init(const JudgeShape& s, double init_std, uint64_t seed) {
  FKV_CHECK_ARG(s.n_layer > 0 && s.n_head_kv > 0 && s.head_dim > 0 && s.group > 0 && s.hidden > 0,
                "judge: bad shape (layers {}, KV heads {}, head_dim {}, group {}, hidden {})", s.n_layer, s.n_head_kv,
                s.head_dim, s.group, s.hidden);
  FKV_CHECK_ARG(init_std > 0, "judge: init_std must be > 0 (got {})", init_std);
  Judge j;
  j.shape_ = s;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t H = s.n_head_kv, F = s.n_feature(), K = s.hidden;
  auto draw = [&](std::vector<int64_t> shape) { return at::normal(0.0, init_std, shape, gen, at::kFloat); };
  for (int64_t l = 0; l < s.n_layer; ++l) {
    j.w1_.push_back(draw({H, F, K}));
    j.b1_.push_back(draw({H, K}));
    j.w2_.push_back(draw({H, K, 1}));
    j.b2_.push_back(draw({H, 1}));
  }
  j.meta_ = json{{"format", "fkv-judge"}, {"version", kJudgeFormatVersion}};
  return j;
}

Judge Judge::load(const std::string& path) {
  io::SafetensorsCheckpoint ck(path);
  // layers from the judge_model keys; everything else (LLM weights, reference copy, optimizer state) ignored
  static const std::regex key_re(R"(model\.layers\.(\d+)\.self_attn\.judge_model\.(fc1|fc2)\.(weight|bias))");
  std::set<int64_t> layers;
  for (const auto& n : ck.names()) {
    std::smatch m;
    if (std::regex_match(n, m, key_re)) layers.insert(std::stoll(m[1].str()));
  }
  FKV_CHECK_FORMAT(!layers.empty(),
                   "{}: no judge tensors (expected model.layers.{{l}}.self_attn.judge_model.fc1.weight ...); is this a "
                   "judge checkpoint or an official ForesightKV checkpoint?",
                   path);
  const int64_t L = *layers.rbegin() + 1;
  FKV_CHECK_FORMAT(static_cast<int64_t>(layers.size()) == L, "{}: judge tensors for {} layers but the highest is {}",
                   path, layers.size(), L - 1);
  Judge j;
  for (int64_t l = 0; l < L; ++l) {
    auto get = [&](const char* fc, const char* kind) {
      const std::string k = judge_key(l, fc, kind);
      const io::StTensor* t = ck.find(k);
      FKV_CHECK_FORMAT(t != nullptr, "{}: missing judge tensor '{}'", path, k);
      return st_to_float(*t, path);
    };
    j.w1_.push_back(get("fc1", "weight"));
    j.b1_.push_back(get("fc1", "bias"));
    j.w2_.push_back(get("fc2", "weight"));
    j.b2_.push_back(get("fc2", "bias"));
  }
  const at::Tensor& w0 = j.w1_[0];
  FKV_CHECK_FORMAT(w0.dim() == 3, "{}: fc1.weight must be [Hkv, F, hidden], got {}", path, fmt::streamed(w0.sizes()));
  const int64_t H = w0.size(0), F = w0.size(1), K = w0.size(2);
  for (int64_t l = 0; l < L; ++l) {
    FKV_CHECK_FORMAT(j.w1_[l].sizes() == at::IntArrayRef({H, F, K}) && j.b1_[l].sizes() == at::IntArrayRef({H, K}) &&
                         j.w2_[l].sizes() == at::IntArrayRef({H, K, 1}) && j.b2_[l].sizes() == at::IntArrayRef({H, 1}),
                     "{}: layer {} judge shapes fc1 {} / {}, fc2 {} / {} (expected [{}, {}, {}], [{}, {}], [{}, {}, 1], "
                     "[{}, 1])",
                     path, l, fmt::streamed(j.w1_[l].sizes()), fmt::streamed(j.b1_[l].sizes()),
                     fmt::streamed(j.w2_[l].sizes()), fmt::streamed(j.b2_[l].sizes()), H, F, K, H, K, H, K, H);
    for (const at::Tensor* t : {&j.w1_[l], &j.b1_[l], &j.w2_[l], &j.b2_[l]})
      FKV_CHECK_FORMAT(at::isfinite(*t).all().item<bool>(), "{}: layer {} judge weights contain NaN or Inf", path, l);
  }
  // metadata (our files): shape facts and provenance
  json meta = json::object();
  if (!ck.files().empty()) {
    io::SafetensorsFile f(ck.files().front());
    auto it = f.metadata().find("fkv_judge");
    if (it != f.metadata().end()) {
      try {
        meta = json::parse(it->second);
      } catch (const json::exception& e) {
        throw FormatError(fmt::format("{}: fkv_judge metadata is not valid JSON ({})", path, e.what()));
      }
      FKV_CHECK_FORMAT(meta.value("format", "") == "fkv-judge", "{}: metadata format is not fkv-judge", path);
      FKV_CHECK_FORMAT(meta.value("version", 0) == kJudgeFormatVersion,
                       "{}: judge format version {} (this fkv reads {}); retrain or convert it", path,
                       meta.value("version", 0), kJudgeFormatVersion);
    }
  }
  j.shape_.n_layer = L;
  j.shape_.n_head_kv = H;
  j.shape_.hidden = K;
  if (meta.contains("head_dim") && meta.contains("group")) {
    j.shape_.head_dim = meta["head_dim"].get<int64_t>();
    j.shape_.group = meta["group"].get<int64_t>();
    FKV_CHECK_FORMAT(j.shape_.n_feature() == F, "{}: metadata head_dim {} / group {} give F = {}, weights have {}",
                     path, j.shape_.head_dim, j.shape_.group, j.shape_.n_feature(), F);
  } else {
    // official checkpoints carry no metadata: head_dim and group are fixed when checked against a model
    j.shape_.head_dim = 0;
    j.shape_.group = 0;
    meta["n_feature"] = F;
  }
  if (!meta.contains("format")) {
    meta["format"] = "fkv-judge";
    meta["version"] = kJudgeFormatVersion;
    meta["imported_from"] = path;
    meta["variant"] = "parity";  // the official code's feature layout (spec §B.2)
  }
  j.meta_ = meta;
  return j;
}

void Judge::check_model(const JudgeShape& m, const std::string& what) const {
  const int64_t F = w1_.empty() ? 0 : w1_[0].size(1);
  const bool ok = shape_.n_layer == m.n_layer && shape_.n_head_kv == m.n_head_kv && F == m.n_feature() &&
                  (shape_.head_dim == 0 || (shape_.head_dim == m.head_dim && shape_.group == m.group));
  FKV_CHECK_ARG(ok,
                "judge {} was trained for {} layers x {} KV heads, F = {} (head_dim {}, group {}); the model has {} "
                "layers x {} KV heads, head_dim {}, group {} (F = 2*head_dim + 8*group = {}): use a judge trained for "
                "this model (fkv-train sft --model ...)",
                what, shape_.n_layer, shape_.n_head_kv, F, shape_.head_dim, shape_.group, m.n_layer, m.n_head_kv,
                m.head_dim, m.group, m.n_feature());
}

void Judge::adopt_model_shape(const JudgeShape& m, const std::string& what) {
  check_model(m, what);
  shape_.head_dim = m.head_dim;
  shape_.group = m.group;
}

at::Tensor Judge::score(int64_t layer, const at::Tensor& x) const {
  FKV_CHECK_ARG(layer >= 0 && layer < shape_.n_layer, "judge: layer {} out of range [0, {})", layer, shape_.n_layer);
  const at::Tensor& w1 = w1_[layer];
  FKV_CHECK_ARG(x.dim() == 3 && x.size(0) == w1.size(0) && x.size(2) == w1.size(1),
                "judge: features must be [Hkv={}, n, F={}], got {}", w1.size(0), w1.size(1), fmt::streamed(x.sizes()));
  at::Tensor h = at::baddbmm(b1_[layer].unsqueeze(1), x, w1);  // [H, n, K]
  h = at::gelu(h);                                            // exact (erf) GELU, torch's default
  at::Tensor phi = at::baddbmm(b2_[layer].unsqueeze(1), h, w2_[layer]);  // [H, n, 1]
  return phi.squeeze(-1);
}

std::vector<at::Tensor> Judge::parameters() const {
  std::vector<at::Tensor> p;
  for (int64_t l = 0; l < shape_.n_layer; ++l) {
    p.push_back(w1_[l]);
    p.push_back(b1_[l]);
    p.push_back(w2_[l]);
    p.push_back(b2_[l]);
  }
  return p;
}

std::vector<std::string> Judge::parameter_names() const {
  std::vector<std::string> n;
  for (int64_t l = 0; l < shape_.n_layer; ++l) {
    n.push_back(judge_key(l, "fc1", "weight"));
    n.push_back(judge_key(l, "fc1", "bias"));
    n.push_back(judge_key(l, "fc2", "weight"));
    n.push_back(judge_key(l, "fc2", "bias"));
  }
  return n;
}

void Judge::set_requires_grad(bool on) {
  for (auto* v : {&w1_, &b1_, &w2_, &b2_})
    for (auto& t : *v) t.set_requires_grad(on);
}

void Judge::scale_output(double s) {
  FKV_CHECK_ARG(s > 0 && std::isfinite(s), "judge: output scale must be finite and > 0, got {}", s);
  at::NoGradGuard ng;
  for (int64_t l = 0; l < shape_.n_layer; ++l) {
    w2_[l].mul_(s);
    b2_[l].mul_(s);
  }
  meta_["score_scale"] = meta_.value("score_scale", 1.0) * s;
}

Judge Judge::clone() const {
  Judge j;
  j.shape_ = shape_;
  j.meta_ = meta_;
  for (int64_t l = 0; l < shape_.n_layer; ++l) {
    j.w1_.push_back(w1_[l].detach().clone());
    j.b1_.push_back(b1_[l].detach().clone());
    j.w2_.push_back(w2_[l].detach().clone());
    j.b2_.push_back(b2_[l].detach().clone());
  }
  return j;
}

Judge Judge::to(at::ScalarType dt) const {
  Judge j = clone();
  for (auto* v : {&j.w1_, &j.b1_, &j.w2_, &j.b2_})
    for (auto& t : *v) t = t.to(dt);
  return j;
}

void Judge::save(const std::string& path, const std::map<std::string, at::Tensor>& extra) const {
  std::vector<at::Tensor> keep;  // contiguous fp32 copies alive until written
  std::vector<io::StWriteTensor> out;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    at::Tensor c = t.detach().to(at::kFloat).contiguous();
    FKV_CHECK(at::isfinite(c).all().item<bool>(), "judge save: tensor {} contains NaN or Inf; not writing {}", name,
              path);
    keep.push_back(c);
    out.push_back({name, io::StDtype::F32, std::vector<int64_t>(c.sizes().begin(), c.sizes().end()), c.data_ptr()});
  };
  const auto names = parameter_names();
  const auto params = parameters();
  for (size_t i = 0; i < params.size(); ++i) add(names[i], params[i]);
  for (const auto& [name, t] : extra) add(name, t);
  json m = meta_;
  m["format"] = "fkv-judge";
  m["version"] = kJudgeFormatVersion;
  m["n_layer"] = shape_.n_layer;
  m["n_head_kv"] = shape_.n_head_kv;
  m["head_dim"] = shape_.head_dim;
  m["group"] = shape_.group;
  m["hidden"] = shape_.hidden;
  m["n_feature"] = shape_.n_feature();
  io::write_safetensors(path, out, {{"fkv_judge", m.dump()}});
}

}  // namespace fkv::judge
