// GGUF v2/v3 reader (engineering.md §3.1-3.4): metadata key/values, tensor infos, memory-mapped data.
// Validates magic, version, counts, string/array lengths, alignment, tensor extents and overflow;
// every failure is a FormatError naming the file and what was expected.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "foresightkv/core/file.h"
#include "foresightkv/io/quant.h"

namespace fkv::io {

/// One metadata value. Arrays hold their elements as GgufValue too (nesting allowed).
struct GgufValue {
  enum class Type : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64 };
  Type type = Type::U8;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<GgufValue>> v;

  bool is_int() const;            // any integer type
  int64_t as_int() const;         // throws unless integer (or bool)
  double as_float() const;        // integers and floats
  bool as_bool() const;
  const std::string& as_string() const;
  const std::vector<GgufValue>& as_array() const;
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;   // ggml order: ne[0] innermost (= HF shape reversed)
  uint64_t offset;           // relative to the data section
  const uint8_t* data;       // into the mapped file
  size_t nbytes;
  int64_t n_elements() const;
  /// HF/PyTorch-order shape (reversed ne).
  std::vector<int64_t> shape() const;
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  /// Throws FormatError "missing GGUF key ..." when absent.
  const GgufValue& get(const std::string& key) const;
  const GgufTensorInfo* find_tensor(const std::string& name) const;  // nullptr when absent
  const GgufTensorInfo& tensor(const std::string& name) const;       // throws when absent

  /// Dequantize a whole tensor to fp32 (row-major, HF order).
  std::vector<float> dequantize(const GgufTensorInfo& t) const;

 private:
  MappedFile file_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

}  // namespace fkv::io
