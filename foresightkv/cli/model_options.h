// The model-loading options every fkv tool shares (--backend, --device, --dtype), parsed into a resolved
// model::LoadOptions: a bad combination or a CUDA device this process cannot see fails before any file is read.
#pragma once
#include <vector>
#include "foresightkv/cli/args.h"
#include "foresightkv/model/weights.h"

namespace fkv::cli {

inline std::vector<OptionSpec> model_load_specs() {
  return {
      {"backend", true, "forward: auto (native on cpu, aten on cuda) | native (hand-written CPU kernels) | aten (ATen "
                        "ops on dense weights)", "auto"},
      {"device", true, "cpu | cuda | cuda:N (CUDA runs the aten backend: weights, activations and KV cache on the GPU)",
       "cpu"},
      {"dtype", true, "aten compute dtype: auto (f32 on cpu, bf16 on cuda) | f32 | bf16", "auto"},
  };
}

/// Append model_load_specs() to a subcommand's options.
inline std::vector<OptionSpec> with_model_load(std::vector<OptionSpec> v) {
  for (auto& o : model_load_specs()) v.push_back(o);
  return v;
}

/// --backend / --device / --dtype (+ --weights / --activations where the subcommand has them), resolved.
inline model::LoadOptions load_options(const Args& a) {
  model::LoadOptions lo;
  lo.weight_format = a.get("weights", "native");
  lo.activations = a.get("activations", "f32");
  lo.backend = a.get("backend", "auto");
  lo.device = a.get("device", "cpu");
  lo.dtype = a.get("dtype", "auto");
  return model::resolve_load_options(lo);
}

}  // namespace fkv::cli
