// Shared by the CUDA kernel parity tests: skip (exit 4, ctest "skipped") when no GPU is visible, so CI on a
// CPU-only machine stays green while the kernels are still compiled for sm_80 / sm_90.
#pragma once
#include <cuda_runtime_api.h>
#include <string>
#include "support/skip.h"

namespace fkv::test {
inline bool cuda_device_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
}  // namespace fkv::test

#define FKV_REQUIRE_GPU()                                                                  \
  do {                                                                                    \
    if (!::fkv::test::cuda_device_available()) FKV_SKIP("no CUDA device visible (kernel parity tests need a GPU)"); \
  } while (0)
