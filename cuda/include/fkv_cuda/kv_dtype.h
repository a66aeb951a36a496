// Storage element type of the KV cache as the CUDA kernels see it (cache/kv_cache.h: KvCacheOptions::dtype).
// Shared by attention.h and compact.h; the kernels compute in fp32 whatever the storage type.
#pragma once
#include <cstddef>

namespace fkv_cuda {

/// F32 = float, F16 = IEEE binary16 (__half, at::kHalf), BF16 = bfloat16 (__nv_bfloat16, at::kBFloat16).
enum class KvDtype : int { F32 = 0, F16 = 1, BF16 = 2 };

/// Bytes per element; 0 for a value outside the enum.
inline size_t kv_dtype_size(KvDtype t) {
  switch (t) {
    case KvDtype::F32: return 4;
    case KvDtype::F16:
    case KvDtype::BF16: return 2;
  }
  return 0;
}

}  // namespace fkv_cuda
