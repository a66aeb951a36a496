// ModelConfig: architecture hyper-parameters read from HF config.json (llama, qwen2, qwen3; old
// `rope_theta`/`rope_scaling` and new `rope_parameters` styles) or GGUF metadata (arch llama, qwen2,
// qwen3). Unknown model types, rope types and inconsistent fields fail loudly.
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
  bool qk_norm = false;         // qwen3
  std::vector<int64_t> eos_ids; // from config / generation_config / GGUF; may be empty
  int64_t bos_id = -1;

  int64_t group_size() const { return n_head_q / n_head_kv; }
  /// Throws InvalidArgument with the offending field when inconsistent (heads not divisible, etc.).
  void validate() const;
  json to_json() const;
};

/// From an HF config.json object. `where` names the file for messages.
ModelConfig config_from_hf_json(const json& j, const std::string& where);
/// From a GGUF file's metadata.
ModelConfig config_from_gguf(const GgufFile& f);

/// RoPE inverse frequencies (length head_dim/2), fp32 as HF computes them, with llama3 scaling applied.
std::vector<float> rope_inv_freq(const ModelConfig& c);

}  // namespace fkv::io
