// Model weights in memory. Matrices stay in their file format by default (GGUF quant blocks,
// safetensors bf16/f16/f32, views into the memory map) and are consumed by ops::matmul, which
// dequantizes on the fly. Norm weights and biases are fp32 tensors. llama-arch GGUF Q/K rows are
// un-permuted at load (engineering.md §3.6) so RoPE is HF's half-split everywhere.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "foresightkv/io/model_config.h"
#include "foresightkv/ops/qmatmul.h"

namespace fkv::model {

struct LoadOptions {
  /// "native": keep file formats; "f32": dequantize every matrix to fp32; "bf16": convert to bf16.
  std::string weight_format = "native";
  /// "f32": fp32 activations in every product (the default; matches HF to the model tests' tolerance).
  /// "q8": decode-size products (<= 8 rows) quantize activations to int8 per 32 columns and multiply
  /// integer levels (ops::matmul_q8, llama.cpp's scheme; faster, not bit-comparable to HF).
  std::string activations = "f32";
  /// "native": the hand-written CPU kernels (default). "aten": the same forward written once in ATen ops on dense
  /// fp32 weights (dequantized at load), the device-neutral path the CUDA build runs; on the CPU it is the
  /// readable specification the native kernels are checked against.
  std::string backend = "native";
  /// "cpu" | "cuda" | "cuda:N". CUDA runs the aten backend with the dense weights, activations and the KV cache on
  /// the GPU (projections through cuBLAS); loading fails with a clear message when no GPU is visible.
  std::string device = "cpu";
  /// Compute dtype of the aten backend: "f32" | "bf16" | "auto" (f32 on the CPU, bf16 on CUDA, as the official
  /// code runs). bf16 follows HF's bf16 semantics: RMSNorm and softmax in fp32, products bf16 in / fp32 accumulate.
  std::string dtype = "auto";
};

/// Validate device / backend / dtype and resolve "auto": backend auto = native on the CPU, aten on CUDA; dtype auto =
/// f32 on the CPU, bf16 on CUDA. Throws InvalidArgument saying how to fix a bad combination (native on CUDA, q8 with
/// aten, bf16 with native) or a CUDA device this process cannot see.
LoadOptions resolve_load_options(LoadOptions opt);

/// "cuda" for "cuda" / "cuda:N", else the device as given: what results and hashes record (the GPU's index does
/// not change what it computes).
std::string device_kind(const std::string& device);

/// A [out, in] matrix: a view, plus the storage that owns it when it is not the mapped file.
struct Matrix {
  ops::WeightView view;
  std::shared_ptr<void> owner;  // keeps converted/un-permuted data alive (null when viewing the map)
  std::string name;             // tensor name in the file, for messages
};

struct LayerWeights {
  at::Tensor attn_norm;              // [hidden] fp32
  Matrix wq, wk, wv, wo;             // [Hq*D, hidden], [Hkv*D, hidden] x2, [hidden, Hq*D]
  at::Tensor bq, bk, bv;             // [Hq*D], [Hkv*D] fp32 (qwen2, attention_bias), undefined otherwise
  at::Tensor bo;                     // [hidden] fp32 (llama/qwen3 attention_bias=true), undefined otherwise
  at::Tensor q_norm, k_norm;         // [D] fp32 (qwen3), undefined otherwise
  at::Tensor ffn_norm;               // [hidden] fp32
  Matrix w_gate, w_up, w_down;       // [ffn, hidden] x2, [hidden, ffn]
};

struct Weights {
  io::ModelConfig config;
  Matrix tok_embd;                   // [vocab, hidden]
  Matrix output;                     // [vocab, hidden]; same view as tok_embd when tied
  at::Tensor out_norm;               // [hidden] fp32
  std::vector<LayerWeights> layers;
  std::string source_path;           // file or directory loaded
  std::string format;                // "gguf" | "safetensors"
  bool act_q8 = false;               // LoadOptions::activations == "q8"
  std::string backend = "native";    // LoadOptions::backend (resolved)
  std::string device = "cpu";        // LoadOptions::device (resolved: "cpu", "cuda:0", ...)
  std::string dtype = "f32";         // LoadOptions::dtype (resolved; the aten backend's compute dtype)
  std::shared_ptr<void> file_owner;  // the mapped file(s)

  int64_t n_params() const;
  /// Weight bytes as held in memory (matrices + norms).
  int64_t bytes() const;
  /// Histogram of matrix types, e.g. {"Q4_1": 210, "Q8_0": 1}.
  std::vector<std::pair<std::string, int>> type_summary() const;
};

/// Load from an HF model directory (config.json + safetensors, single or sharded) or a .gguf file.
std::shared_ptr<Weights> load_weights(const std::string& path, const LoadOptions& opt = {});

/// Resolve `path_or_name`: an existing file/dir, or a registry name under data/models (later issue).
std::string resolve_model_path(const std::string& path_or_name);

}  // namespace fkv::model
