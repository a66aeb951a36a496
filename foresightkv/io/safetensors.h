// safetensors reader and writer (engineering.md §2): single files and sharded checkpoints
// (model.safetensors.index.json). Memory-mapped; header JSON, dtypes, shapes and data offsets validated
// (no overlap, within the buffer, size = numel * itemsize, no duplicate names). Tensor data may be
// unaligned: consumers memcpy. No LibTorch. Tests: tests/unit/io/safetensors_test.cpp.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "foresightkv/core/file.h"

namespace fkv::io {

enum class StDtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, U16, U32, U64, F8_E4M3, F8_E5M2 };
const char* st_dtype_name(StDtype d);
size_t st_dtype_size(StDtype d);
/// The dtype named `name` in a safetensors header ("F32", "BF16", ...); nullopt when unknown.
std::optional<StDtype> st_dtype_from_name(std::string_view name);

struct StTensor {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapped file; may be unaligned
  size_t nbytes = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  /// Maps and validates `path`; throws FormatError naming the file and the offending entry.
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return file_.path(); }
  const std::map<std::string, StTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MappedFile file_;
  std::map<std::string, StTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// All tensors of a checkpoint directory or file: `model.safetensors`, an index with shards, or a
/// single .safetensors path.
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& path);
  const StTensor* find(const std::string& name) const;  // nullptr when absent
  const StTensor& get(const std::string& name) const;   // throws FormatError naming the file set
  std::vector<std::string> names() const;
  const std::vector<std::string>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, const StTensor*> all_;
  std::vector<std::string> files_;
};

/// Write tensors (fp32/fp16/bf16/i64/...) to a safetensors file atomically (used for traces, tests).
struct StWriteTensor {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  const void* data;
};
void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace fkv::io
