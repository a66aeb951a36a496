// ModelConfig: architecture hyper-parameters read from HF config.json (llama, qwen2, qwen3; old
// `rope_theta`/`rope_scaling` and new `rope_parameters` styles) or GGUF metadata (arch llama, qwen2,
// qwen3). Defaults follow transformers' configuration classes (LlamaConfig, Qwen2Config, Qwen3Config).
// Unknown model types, rope types and inconsistent fields fail loudly. Tests:
// tests/unit/io/model_config_test.cpp against the bundles in tests/data/tiny_models.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "foresightkv/core/json.h"

namespace fkv::io {

class GgufFile;

enum class Arch { Llama, Qwen2, Qwen3 };
const char* arch_name(Arch a);

struct RopeConfig {
  std::string type = "default";  // "default" | "llama3"
  double theta = 10000.0;
  // llama3 scaling (transformers _compute_llama3_parameters)
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
  // llama.cpp's encoding of llama3 scaling in GGUF (tensor `rope_freqs.weight`, length head_dim/2):
  // when non-empty, inv_freq[i] = base_inv_freq[i] / freq_factors[i] and the parameters above are unused.
  std::vector<float> freq_factors;
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  int64_t n_vocab = 0;
  int64_t hidden = 0;
  int64_t n_layer = 0;
  int64_t n_head_q = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int64_t ffn_hidden = 0;       // intermediate_size
  double rms_eps = 1e-6;
  RopeConfig rope;
  int64_t max_position = 0;
  bool tie_embeddings = false;
  bool qkv_bias = false;        // qwen2 (or attention_bias=true)
  bool o_bias = false;          // llama/qwen3 attention_bias=true also biases o_proj (HF); never qwen2
  bool qk_norm = false;         // qwen3
  std::vector<int64_t> eos_ids; // from config / generation_config / GGUF; may be empty
  int64_t bos_id = -1;

  int64_t group_size() const { return n_head_q / n_head_kv; }
  /// Throws InvalidArgument with the offending field when inconsistent (heads not divisible, etc.).
  void validate() const;
  json to_json() const;
};

/// The architecture named by an HF model_type / GGUF general.architecture ("llama", "qwen2", "qwen3");
/// throws InvalidArgument listing the supported ones otherwise.
Arch arch_from_name(const std::string& name, const std::string& where);

/// From an HF config.json object. `where` names the file for messages.
ModelConfig config_from_hf_json(const json& j, const std::string& where);
/// From an HF model directory's config.json (or a path to the json file itself).
ModelConfig config_from_hf_dir(const std::string& path);
/// From a GGUF file's metadata (and tensor presence: output.weight, biases, rope_freqs.weight).
ModelConfig config_from_gguf(const GgufFile& f);

/// RoPE inverse frequencies (length head_dim/2), fp32 as HF computes them, with llama3 scaling applied.
/// Same fp32 op sequence as transformers' _compute_default/_compute_llama3_parameters; bit-identical to
/// HF's scalar CPU path (torch's vectorised pow may differ by 1 ulp for head_dim/2 >= 16).
std::vector<float> rope_inv_freq(const ModelConfig& c);

}  // namespace fkv::io
