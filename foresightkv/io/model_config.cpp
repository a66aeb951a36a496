// ModelConfig from HF config.json and GGUF metadata, validation, JSON dump and HF-exact RoPE inv_freq.
// HF semantics mirrored here (transformers 5.24, configuration_{llama,qwen2,qwen3}.py and
// modeling_rope_utils.py): `rope_scaling` wins over `rope_parameters`; the rope type is `rope_type`, else
// `type`, else "default"; theta is the dict's `rope_theta`, else the top-level one, else 10000; llama3's
// original_max_position_embeddings comes from a top-level key, else the dict, else max_position_embeddings.
// Qwen2 always has q/k/v biases; llama/qwen3 `attention_bias` biases q/k/v *and* o_proj.
#include "foresightkv/io/model_config.h"

#include <cmath>
#include <numbers>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/io/gguf.h"

namespace fkv::io {

namespace {

constexpr const char* kSupportedArchs = "llama, qwen2, qwen3";
constexpr const char* kSupportedRope = "default, llama3";

// Typed access to an HF config object. A key holding null counts as absent (HF treats it as "use
// the default"); `defaulted` collects the keys that fell back to a default, for one log line.
class HfReader {
 public:
  HfReader(const json& j, std::string where) : j_(j), where_(std::move(where)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  int64_t req_int(const char* key) const {
    FKV_CHECK_ARG(has(key), "{}: required key '{}' is missing; every HF {} config.json has it", where_, key,
                  model_type());
    return as_int(j_.at(key), key);
  }
  int64_t opt_int(const char* key, int64_t def) {
    if (!has(key)) return defaulted(key, def);
    return as_int(j_.at(key), key);
  }
  double opt_double(const char* key, double def) {
    if (!has(key)) return defaulted(key, def);
    const json& v = j_.at(key);
    FKV_CHECK_ARG(v.is_number(), "{}: '{}' must be a number, got {}", where_, key, v.dump());
    return v.get<double>();
  }
  bool opt_bool(const char* key, bool def) {
    if (!has(key)) return defaulted(key, def);
    const json& v = j_.at(key);
    FKV_CHECK_ARG(v.is_boolean(), "{}: '{}' must be true or false, got {}", where_, key, v.dump());
    return v.get<bool>();
  }
  int64_t as_int(const json& v, const std::string& key) const {
    // HF writes integers; accept integral floats (some exporters write 32.0) but nothing fractional.
    if (v.is_number_integer()) return v.get<int64_t>();
    FKV_CHECK_ARG(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>(),
                  "{}: '{}' must be an integer, got {}", where_, key, v.dump());
    return static_cast<int64_t>(v.get<double>());
  }
  std::string model_type() const {
    return j_.contains("model_type") && j_.at("model_type").is_string() ? j_.at("model_type").get<std::string>()
                                                                         : "";
  }
  std::string str(const char* key) const { return as_str(j_.at(key), key); }
  std::string as_str(const json& v, const std::string& key) const {
    FKV_CHECK_ARG(v.is_string(), "{}: '{}' must be a string, got {}", where_, key, v.dump());
    return v.get<std::string>();
  }
  const json& at(const char* key) const { return j_.at(key); }
  const std::string& where() const { return where_; }
  const std::vector<std::string>& defaults() const { return defaults_; }

 private:
  template <typename T>
  T defaulted(const char* key, T def) {
    defaults_.push_back(fmt::format("{}={}", key, def));
    return def;
  }

  const json& j_;
  std::string where_;
  std::vector<std::string> defaults_;
};

// Per-architecture defaults of transformers' configuration classes (5.24).
struct HfDefaults {
  int64_t max_position;
  int64_t bos;  // -1 = None
  int64_t eos;  // -1 = None
};

HfDefaults hf_defaults(Arch a) {
  switch (a) {
    case Arch::Llama: return {2048, 1, 2};    // LlamaConfig: bos_token_id=1, eos_token_id=2
    case Arch::Qwen2: return {32768, -1, -1};  // Qwen2Config: no bos/eos default
    case Arch::Qwen3: return {32768, -1, -1};
  }
  return {0, -1, -1};
}

void parse_eos(const json& v, const std::string& where, std::vector<int64_t>& out) {
  auto add = [&](const json& x) {
    FKV_CHECK_ARG(x.is_number_integer() && x.get<int64_t>() >= 0,
                  "{}: eos_token_id must be a non-negative integer or a list of them, got {}", where, v.dump());
    int64_t id = x.get<int64_t>();
    for (int64_t e : out)
      if (e == id) return;
    out.push_back(id);
  };
  if (v.is_null()) return;
  if (v.is_array()) {
    for (const json& x : v) add(x);
  } else {
    add(v);
  }
}

// The HF rope dict: `rope_scaling` if set and non-empty, else `rope_parameters`, else {}.
// Per-layer-type nesting ({"full_attention": {...}}) is accepted when only full attention is present.
json hf_rope_dict(const HfReader& r) {
  json d = json::object();
  if (r.has("rope_scaling") && !r.at("rope_scaling").empty())
    d = r.at("rope_scaling");
  else if (r.has("rope_parameters"))
    d = r.at("rope_parameters");
  FKV_CHECK_ARG(d.is_object(), "{}: rope_scaling / rope_parameters must be an object, got {}", r.where(),
                d.dump());
  if (d.contains("full_attention") && d.at("full_attention").is_object()) {
    FKV_CHECK_ARG(d.size() == 1, "{}: rope_parameters is nested per layer type ({}); fkv supports a single "
                  "full-attention rope", r.where(), d.dump());
    return d.at("full_attention");
  }
  return d;
}

RopeConfig parse_hf_rope(HfReader& r, int64_t max_position) {
  const json d = hf_rope_dict(r);
  RopeConfig rope;
  if (d.contains("rope_type") && !d.at("rope_type").is_null())
    rope.type = r.as_str(d.at("rope_type"), "rope_type");
  else if (d.contains("type") && !d.at("type").is_null())
    rope.type = r.as_str(d.at("type"), "type");
  FKV_CHECK_ARG(rope.type == "default" || rope.type == "llama3",
                "{}: rope type '{}' is not supported; fkv implements {} (linear, dynamic, yarn, longrope, ... "
                "would change RoPE and give wrong outputs)", r.where(), rope.type, kSupportedRope);

  auto num = [&](const json& obj, const char* key, const char* what) {
    FKV_CHECK_ARG(obj.contains(key) && obj.at(key).is_number(), "{}: {} rope needs a numeric '{}' in {}, got {}",
                  r.where(), rope.type, key, what, obj.contains(key) ? obj.at(key).dump() : "nothing");
    return obj.at(key).get<double>();
  };
  if (d.contains("rope_theta") && !d.at("rope_theta").is_null())
    rope.theta = num(d, "rope_theta", "the rope dict");
  else
    rope.theta = r.opt_double("rope_theta", 10000.0);  // RotaryEmbeddingConfigMixin.default_theta

  double partial = 1.0;
  if (d.contains("partial_rotary_factor") && !d.at("partial_rotary_factor").is_null())
    partial = num(d, "partial_rotary_factor", "the rope dict");
  else if (r.has("partial_rotary_factor"))
    partial = r.opt_double("partial_rotary_factor", 1.0);
  FKV_CHECK_ARG(partial == 1.0, "{}: partial_rotary_factor {} is not supported; fkv rotates the full head_dim",
                r.where(), partial);

  if (rope.type == "llama3") {
    rope.factor = num(d, "factor", "rope_scaling/rope_parameters");
    rope.low_freq_factor = num(d, "low_freq_factor", "rope_scaling/rope_parameters");
    rope.high_freq_factor = num(d, "high_freq_factor", "rope_scaling/rope_parameters");
    if (r.has("original_max_position_embeddings"))  // top-level key wins in HF (Phi3 convention)
      rope.original_max_position_embeddings = r.opt_int("original_max_position_embeddings", 0);
    else if (d.contains("original_max_position_embeddings") && !d.at("original_max_position_embeddings").is_null())
      rope.original_max_position_embeddings =
          r.as_int(d.at("original_max_position_embeddings"), "original_max_position_embeddings");
    else
      rope.original_max_position_embeddings = max_position;
  }
  return rope;
}

std::string json_path_dir(const std::string& path) {
  auto pos = path.find_last_of('/');
  return pos == std::string::npos ? std::string(".") : path.substr(0, pos);
}

// All entries of a GGUF per-layer value equal, or a scalar: returns it.
int64_t gguf_uniform_int(const GgufValue& v, const std::string& key, const std::string& path) {
  if (v.type != GgufValue::Type::Array) return v.as_int();
  const auto& a = v.as_array();
  FKV_CHECK_FORMAT(!a.empty(), "'{}': {} is an empty array", path, key);
  int64_t x = a[0].as_int();
  for (const auto& e : a)
    FKV_CHECK_FORMAT(e.as_int() == x, "'{}': {} varies per layer; fkv supports uniform layers only", path, key);
  return x;
}

}  // namespace

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Qwen2: return "qwen2";
    case Arch::Qwen3: return "qwen3";
  }
  return "?";
}

Arch arch_from_name(const std::string& name, const std::string& where) {
  if (name == "llama") return Arch::Llama;
  if (name == "qwen2") return Arch::Qwen2;
  if (name == "qwen3") return Arch::Qwen3;
  FKV_THROW_KIND(1, "{}: architecture '{}' is not supported; fkv supports {}", where, name, kSupportedArchs);
}

void ModelConfig::validate() const {
  const char* a = arch_name(arch);
  FKV_CHECK_ARG(n_vocab > 0, "{} config: vocab size must be > 0, got {}", a, n_vocab);
  FKV_CHECK_ARG(hidden > 0, "{} config: hidden size must be > 0, got {}", a, hidden);
  FKV_CHECK_ARG(n_layer > 0, "{} config: layer count must be > 0, got {}", a, n_layer);
  FKV_CHECK_ARG(ffn_hidden > 0, "{} config: intermediate (FFN) size must be > 0, got {}", a, ffn_hidden);
  FKV_CHECK_ARG(n_head_q > 0, "{} config: attention head count must be > 0, got {}", a, n_head_q);
  FKV_CHECK_ARG(n_head_kv > 0, "{} config: KV head count must be > 0, got {}", a, n_head_kv);
  FKV_CHECK_ARG(n_head_q % n_head_kv == 0,
                "{} config: attention heads ({}) must be a multiple of KV heads ({}) for grouped-query attention",
                a, n_head_q, n_head_kv);
  FKV_CHECK_ARG(head_dim > 0 && head_dim % 2 == 0, "{} config: head_dim must be even and > 0 (RoPE rotates pairs), "
                "got {}", a, head_dim);
  FKV_CHECK_ARG(rms_eps > 0 && std::isfinite(rms_eps), "{} config: rms_norm_eps must be > 0, got {}", a, rms_eps);
  FKV_CHECK_ARG(max_position > 0, "{} config: max_position_embeddings must be > 0, got {}", a, max_position);
  FKV_CHECK_ARG(rope.theta > 0 && std::isfinite(rope.theta), "{} config: rope theta must be > 0, got {}", a,
                rope.theta);
  FKV_CHECK_ARG(rope.type == "default" || rope.type == "llama3", "{} config: rope type '{}' is not supported; "
                "fkv implements {}", a, rope.type, kSupportedRope);
  if (rope.type == "llama3" && rope.freq_factors.empty()) {
    FKV_CHECK_ARG(rope.factor > 0, "{} config: llama3 rope factor must be > 0, got {}", a, rope.factor);
    FKV_CHECK_ARG(rope.low_freq_factor > 0 && rope.high_freq_factor > rope.low_freq_factor,
                  "{} config: llama3 rope needs 0 < low_freq_factor < high_freq_factor, got {} and {}", a,
                  rope.low_freq_factor, rope.high_freq_factor);
    FKV_CHECK_ARG(rope.original_max_position_embeddings > 0,
                  "{} config: llama3 rope original_max_position_embeddings must be > 0, got {}", a,
                  rope.original_max_position_embeddings);
  }
  FKV_CHECK_ARG(rope.freq_factors.empty() || static_cast<int64_t>(rope.freq_factors.size()) == head_dim / 2,
                "{} config: rope freq_factors has {} entries, expected head_dim/2 = {}", a, rope.freq_factors.size(),
                head_dim / 2);
  for (int64_t e : eos_ids)
    FKV_CHECK_ARG(e >= 0 && e < n_vocab, "{} config: eos token id {} is outside the vocabulary [0, {})", a, e,
                  n_vocab);
  FKV_CHECK_ARG(bos_id < n_vocab, "{} config: bos token id {} is outside the vocabulary [0, {})", a, bos_id,
                n_vocab);
}

json ModelConfig::to_json() const {
  json r = {{"type", rope.type}, {"theta", rope.theta}};
  if (rope.type == "llama3") {
    r["factor"] = rope.factor;
    r["low_freq_factor"] = rope.low_freq_factor;
    r["high_freq_factor"] = rope.high_freq_factor;
    r["original_max_position_embeddings"] = rope.original_max_position_embeddings;
  }
  if (!rope.freq_factors.empty()) r["freq_factors"] = rope.freq_factors;
  return {{"arch", arch_name(arch)},
          {"n_vocab", n_vocab},
          {"hidden", hidden},
          {"n_layer", n_layer},
          {"n_head_q", n_head_q},
          {"n_head_kv", n_head_kv},
          {"head_dim", head_dim},
          {"ffn_hidden", ffn_hidden},
          {"rms_eps", rms_eps},
          {"rope", r},
          {"max_position", max_position},
          {"tie_embeddings", tie_embeddings},
          {"qkv_bias", qkv_bias},
          {"o_bias", o_bias},
          {"qk_norm", qk_norm},
          {"eos_ids", eos_ids},
          {"bos_id", bos_id}};
}

ModelConfig config_from_hf_json(const json& j, const std::string& where) {
  FKV_CHECK_ARG(j.is_object(), "{}: expected an HF config JSON object, got {}", where, j.type_name());
  FKV_CHECK_ARG(j.contains("model_type") && j.at("model_type").is_string(),
                "{}: 'model_type' is missing; expected one of {}", where, kSupportedArchs);
  HfReader r(j, where);
  ModelConfig c;
  c.arch = arch_from_name(j.at("model_type").get<std::string>(), where + " model_type");
  const HfDefaults defs = hf_defaults(c.arch);

  c.n_vocab = r.req_int("vocab_size");
  c.hidden = r.req_int("hidden_size");
  c.ffn_hidden = r.req_int("intermediate_size");
  c.n_layer = r.req_int("num_hidden_layers");
  c.n_head_q = r.req_int("num_attention_heads");
  FKV_CHECK_ARG(c.n_head_q > 0, "{}: num_attention_heads must be > 0, got {}", where, c.n_head_q);
  c.n_head_kv = r.opt_int("num_key_value_heads", c.n_head_q);
  if (r.has("head_dim")) {
    c.head_dim = r.opt_int("head_dim", 0);
  } else if (c.arch == Arch::Qwen3) {
    c.head_dim = r.opt_int("head_dim", 128);  // Qwen3Config's class default, not hidden/heads
  } else {
    FKV_CHECK_ARG(c.hidden % c.n_head_q == 0, "{}: hidden_size {} is not divisible by num_attention_heads {} and "
                  "no head_dim is given; add \"head_dim\" or fix the head count", where, c.hidden, c.n_head_q);
    c.head_dim = c.hidden / c.n_head_q;
  }
  // LlamaConfig.validate_architecture rejects this even with an explicit head_dim.
  FKV_CHECK_ARG(c.arch != Arch::Llama || c.hidden % c.n_head_q == 0,
                "{}: llama hidden_size {} must be divisible by num_attention_heads {} (transformers' LlamaConfig "
                "refuses it too)", where, c.hidden, c.n_head_q);
  c.rms_eps = r.opt_double("rms_norm_eps", 1e-6);
  c.max_position = r.opt_int("max_position_embeddings", defs.max_position);
  c.tie_embeddings = r.opt_bool("tie_word_embeddings", false);  // false in all three HF classes

  const std::string act = r.has("hidden_act") ? r.str("hidden_act") : "silu";
  FKV_CHECK_ARG(act == "silu", "{}: hidden_act '{}' is not supported; fkv's MLP is SwiGLU with silu", where, act);

  switch (c.arch) {
    case Arch::Llama: {
      const bool attn_bias = r.opt_bool("attention_bias", false);
      c.qkv_bias = c.o_bias = attn_bias;
      FKV_CHECK_ARG(!(r.has("mlp_bias") && r.opt_bool("mlp_bias", false)), "{}: mlp_bias=true is not supported (fkv's MLP has no "
                    "biases); use a checkpoint without MLP biases", where);
      break;
    }
    case Arch::Qwen2:
      c.qkv_bias = true;  // Qwen2Attention: q/k/v bias=True always, o_proj bias=False
      break;
    case Arch::Qwen3: {
      const bool attn_bias = r.opt_bool("attention_bias", false);
      c.qkv_bias = c.o_bias = attn_bias;
      c.qk_norm = true;
      break;
    }
  }
  if (c.arch != Arch::Llama) {
    FKV_CHECK_ARG(!(r.has("use_sliding_window") && r.opt_bool("use_sliding_window", false)), "{}: use_sliding_window=true is not supported (fkv "
                  "runs every layer with full attention); set it to false only if the model was trained so", where);
  }
  if (r.has("layer_types")) {
    const json& lt = r.at("layer_types");
    FKV_CHECK_ARG(lt.is_array(), "{}: layer_types must be a list, got {}", where, lt.dump());
    for (const json& t : lt)
      FKV_CHECK_ARG(t == "full_attention", "{}: layer_types contains {}; fkv supports full_attention layers only",
                    where, t.dump());
  }

  c.rope = parse_hf_rope(r, c.max_position);

  // An explicit null means "no token"; an absent key takes the class default (llama: bos 1, eos 2).
  if (j.contains("bos_token_id"))
    c.bos_id = j.at("bos_token_id").is_null() ? -1 : r.as_int(j.at("bos_token_id"), "bos_token_id");
  else if (defs.bos >= 0)
    c.bos_id = r.opt_int("bos_token_id", defs.bos);
  if (j.contains("eos_token_id"))
    parse_eos(j.at("eos_token_id"), where, c.eos_ids);
  else if (defs.eos >= 0)
    c.eos_ids.push_back(r.opt_int("eos_token_id", defs.eos));

  if (!r.defaults().empty()) {
    std::string list;
    for (const auto& d : r.defaults()) list += (list.empty() ? "" : ", ") + d;
    FKV_LOG_INFO("{}: defaults of transformers' {} config used for absent keys: {}", where, arch_name(c.arch), list);
  }
  c.validate();
  return c;
}

ModelConfig config_from_hf_dir(const std::string& path) {
  const std::string cfg_path = is_directory(path) ? path + "/config.json" : path;
  FKV_CHECK_ARG(file_exists(cfg_path), "'{}' not found; pass an HF model directory with config.json", cfg_path);
  ModelConfig c = config_from_hf_json(read_json_file(cfg_path), cfg_path);
  // generate() stops on generation_config.json's eos ids (often a list, e.g. Llama 3 instruct): merge them.
  const std::string gen_path = json_path_dir(cfg_path) + "/generation_config.json";
  if (file_exists(gen_path)) {
    const json g = read_json_file(gen_path);
    if (g.is_object() && g.contains("eos_token_id")) parse_eos(g.at("eos_token_id"), gen_path, c.eos_ids);
    if (c.bos_id < 0 && g.is_object() && g.contains("bos_token_id") && g.at("bos_token_id").is_number_integer())
      c.bos_id = g.at("bos_token_id").get<int64_t>();
    c.validate();
  }
  return c;
}

ModelConfig config_from_gguf(const GgufFile& f) {
  const std::string& path = f.path();
  const std::string arch = f.get("general.architecture").as_string();
  ModelConfig c;
  c.arch = arch_from_name(arch, "'" + path + "' general.architecture");
  const std::string p = arch + ".";
  auto req = [&](const std::string& k) -> const GgufValue& {
    FKV_CHECK_FORMAT(f.has(p + k), "'{}': missing GGUF key '{}{}' required for arch {}", path, p, k, arch);
    return f.get(p + k);
  };

  c.hidden = req("embedding_length").as_int();
  c.n_layer = req("block_count").as_int();
  c.ffn_hidden = gguf_uniform_int(req("feed_forward_length"), p + "feed_forward_length", path);
  c.n_head_q = gguf_uniform_int(req("attention.head_count"), p + "attention.head_count", path);
  c.n_head_kv = f.has(p + "attention.head_count_kv")
                    ? gguf_uniform_int(f.get(p + "attention.head_count_kv"), p + "attention.head_count_kv", path)
                    : c.n_head_q;  // llama.cpp's default
  c.rms_eps = req("attention.layer_norm_rms_epsilon").as_float();
  c.max_position = req("context_length").as_int();
  c.rope.theta = f.has(p + "rope.freq_base") ? f.get(p + "rope.freq_base").as_float() : 10000.0;

  FKV_CHECK_FORMAT(c.n_head_q > 0, "'{}': {}attention.head_count must be > 0, got {}", path, p, c.n_head_q);
  if (f.has(p + "attention.key_length")) {
    c.head_dim = f.get(p + "attention.key_length").as_int();
  } else if (f.has(p + "rope.dimension_count")) {
    c.head_dim = f.get(p + "rope.dimension_count").as_int();
  } else {
    FKV_CHECK_FORMAT(c.hidden % c.n_head_q == 0, "'{}': embedding_length {} not divisible by head_count {} and no "
                     "{}attention.key_length", path, c.hidden, c.n_head_q, p);
    c.head_dim = c.hidden / c.n_head_q;
  }
  if (f.has(p + "attention.value_length"))
    FKV_CHECK_FORMAT(f.get(p + "attention.value_length").as_int() == c.head_dim, "'{}': {}attention.value_length "
                     "{} differs from key_length {}; fkv needs equal K and V head sizes", path, p,
                     f.get(p + "attention.value_length").as_int(), c.head_dim);
  if (f.has(p + "rope.dimension_count"))
    FKV_CHECK_FORMAT(f.get(p + "rope.dimension_count").as_int() == c.head_dim, "'{}': {}rope.dimension_count {} "
                     "differs from head_dim {}; partial rotary embeddings are not supported", path, p,
                     f.get(p + "rope.dimension_count").as_int(), c.head_dim);

  if (f.has(p + "vocab_size")) {
    c.n_vocab = f.get(p + "vocab_size").as_int();
  } else if (const GgufTensorInfo* t = f.find_tensor("token_embd.weight")) {
    const auto shape = t->shape();  // [vocab, hidden]
    FKV_CHECK_FORMAT(shape.size() == 2, "'{}': token_embd.weight must be 2-D, got {} dims", path, shape.size());
    c.n_vocab = shape[0];
  } else {
    FKV_THROW_KIND(2, "'{}': cannot determine the vocabulary size: no {}vocab_size and no token_embd.weight", path, p);
  }

  // Rope scaling: llama.cpp writes rope.scaling.type (none/linear/yarn/...) and, for llama3 models, a
  // rope_freqs.weight tensor of per-frequency divisors. A writer may also spell llama3 out in keys.
  if (f.has(p + "rope.scaling.type")) {
    const std::string t = f.get(p + "rope.scaling.type").as_string();
    if (t == "llama3") {
      c.rope.type = "llama3";
      c.rope.factor = req("rope.scaling.factor").as_float();
      c.rope.low_freq_factor = req("rope.scaling.low_freq_factor").as_float();
      c.rope.high_freq_factor = req("rope.scaling.high_freq_factor").as_float();
      c.rope.original_max_position_embeddings = req("rope.scaling.original_context_length").as_int();
    } else {
      const bool inert = t == "none" || (f.has(p + "rope.scaling.factor") &&
                                         f.get(p + "rope.scaling.factor").as_float() == 1.0);
      FKV_CHECK_FORMAT(inert, "'{}': {}rope.scaling.type '{}' is not supported; fkv implements {}", path, p, t,
                       kSupportedRope);
    }
  }
  if (const GgufTensorInfo* rf = f.find_tensor("rope_freqs.weight")) {
    c.rope.type = "llama3";
    c.rope.freq_factors = f.dequantize(*rf);
  }

  c.tie_embeddings = f.find_tensor("output.weight") == nullptr;
  c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.o_bias = f.find_tensor("blk.0.attn_output.bias") != nullptr;
  c.qk_norm = c.arch == Arch::Qwen3 || f.find_tensor("blk.0.attn_q_norm.weight") != nullptr;
  if (f.has("tokenizer.ggml.eos_token_id")) c.eos_ids.push_back(f.get("tokenizer.ggml.eos_token_id").as_int());
  if (f.has("tokenizer.ggml.bos_token_id")) c.bos_id = f.get("tokenizer.ggml.bos_token_id").as_int();
  try {
    c.validate();
  } catch (const InvalidArgument& e) {
    FKV_THROW_KIND(2, "'{}': inconsistent GGUF metadata: {}", path, e.what());
  }
  return c;
}

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  FKV_CHECK_ARG(c.head_dim > 0 && c.head_dim % 2 == 0, "rope_inv_freq: head_dim must be even and > 0, got {}",
                c.head_dim);
  const int64_t n = c.head_dim / 2;
  // Each fp32 intermediate goes through a volatile store so the compiler can neither fuse a*b+c into an
  // FMA (-march=native allows it) nor keep excess precision: HF rounds after every torch op.
  volatile float t;
  const float dim = static_cast<float>(c.head_dim);
  const float base = static_cast<float>(c.rope.theta);
  std::vector<float> inv(n);
  for (int64_t i = 0; i < n; ++i) {
    // 1.0 / (base ** (arange(0, D, 2).float() / D)); Python's 1.0 / t is t.reciprocal().
    t = static_cast<float>(2 * i) / dim;
    t = std::pow(base, static_cast<float>(t));
    t = 1.0f / t;
    inv[i] = t;
  }
  if (c.rope.type != "llama3") return inv;

  if (!c.rope.freq_factors.empty()) {  // llama.cpp rope_freqs: theta / freq_factor
    FKV_CHECK_ARG(static_cast<int64_t>(c.rope.freq_factors.size()) == n, "rope_inv_freq: {} freq_factors for "
                  "head_dim {}, expected {}", c.rope.freq_factors.size(), c.head_dim, n);
    for (int64_t i = 0; i < n; ++i) inv[i] /= c.rope.freq_factors[i];
    return inv;
  }

  // transformers _compute_llama3_parameters, op by op in fp32 (Python scalars are rounded to fp32 first;
  // `x / tensor` is `tensor.reciprocal() * x`).
  const float factor = static_cast<float>(c.rope.factor);
  const float low = static_cast<float>(c.rope.low_freq_factor);
  const float high_minus_low = static_cast<float>(c.rope.high_freq_factor - c.rope.low_freq_factor);
  const double old_ctx = static_cast<double>(c.rope.original_max_position_embeddings);
  const float old_ctx_f = static_cast<float>(old_ctx);
  const float low_wavelen = static_cast<float>(old_ctx / c.rope.low_freq_factor);
  const float high_wavelen = static_cast<float>(old_ctx / c.rope.high_freq_factor);
  const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
  for (int64_t i = 0; i < n; ++i) {
    const float f = inv[i];
    t = 1.0f / f;
    t = t * two_pi;
    const float wavelen = t;
    float fl = f;
    if (wavelen > low_wavelen) {
      t = f / factor;
      fl = t;
    }
    const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    if (!medium) {
      inv[i] = fl;
      continue;
    }
    t = 1.0f / wavelen;
    t = t * old_ctx_f;
    t = t - low;
    t = t / high_minus_low;
    const float s = t;
    t = 1.0f - s;
    t = t * fl;
    t = t / factor;
    const float a = t;
    t = s * fl;
    const float b = t;
    t = a + b;
    inv[i] = t;
  }
  return inv;
}

}  // namespace fkv::io
