// Monotonic wall-clock seconds for throughput measurements (benchmarks, generation stats).
#pragma once
#include <chrono>

namespace fkv {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace fkv
