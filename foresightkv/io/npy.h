// Minimal NumPy .npy (format 1.0) writer/reader for float32/int64 C-order arrays; writes atomically.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fkv::io {

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);

struct NpyArray {
  std::string descr;            // "<f4", "<i8", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
NpyArray read_npy(const std::string& path);

}  // namespace fkv::io
