// GGUF v2/v3 reader (engineering.md §3.1). Every length, count and offset read from the file is
// checked against the bytes that are left before it is used, so a corrupt or truncated file gives a
// FormatError that names the file, what was expected and what was found; it never allocates from an
// unchecked count and never reads outside the mapping.
#include "foresightkv/io/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "foresightkv/core/error.h"

namespace fkv::io {
namespace {

constexpr uint32_t kMaxDims = 4;           // GGML_MAX_DIMS
constexpr size_t kMaxNameBytes = 63;       // GGML_MAX_NAME (64) including the NUL ggml stores
constexpr int kMaxArrayNesting = 8;        // deeper nesting is certainly corruption
// Upper bound on metadata array elements in one file. Each element becomes a GgufValue (~48 bytes),
// so a corrupt but in-bounds count inside a large file could otherwise make us allocate many GB
// (<= 400 MB with this cap). Real files hold < 1.5e6 (vocabulary tokens, scores, types, merges).
constexpr uint64_t kMaxMetadataElements = uint64_t(1) << 23;

const char* value_type_name(GgufValue::Type t) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
                                "u64", "i64", "f64"};
  const auto i = uint32_t(t);
  return i < 13 ? names[i] : "invalid";
}

// Smallest encoding of one value of type t (used to bound counts before allocating).
uint64_t min_value_bytes(GgufValue::Type t) {
  switch (t) {
    case GgufValue::Type::U8: case GgufValue::Type::I8: case GgufValue::Type::Bool: return 1;
    case GgufValue::Type::U16: case GgufValue::Type::I16: return 2;
    case GgufValue::Type::U32: case GgufValue::Type::I32: case GgufValue::Type::F32: return 4;
    case GgufValue::Type::U64: case GgufValue::Type::I64: case GgufValue::Type::F64: return 8;
    case GgufValue::Type::String: return 8;   // u64 length
    case GgufValue::Type::Array: return 12;   // u32 type + u64 count
  }
  return 1;
}

// Bounds-checked little-endian cursor over the mapped file.
class Reader {
 public:
  Reader(const std::string& path, const uint8_t* data, size_t size) : path_(path), p_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  const std::string& path() const { return path_; }

  void need(uint64_t n, const std::string& what) const {
    FKV_CHECK_FORMAT(n <= left(), "'{}': truncated: {} needs {} bytes at offset {} but the file has only {} bytes "
                     "(ends at {}); the file is incomplete or corrupt, re-download it",
                     path_, what, n, pos_, left(), size_);
  }
  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " length");
    FKV_CHECK_FORMAT(n <= left(), "'{}': {} has length {} at offset {} but only {} bytes are left in the file; the "
                     "file is truncated or corrupt", path_, what, n, pos_ - 8, left());
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }

 private:
  std::string path_;
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
};

class Parser {
 public:
  explicit Parser(Reader& r) : r_(r) {}

  GgufValue read_value(GgufValue::Type type, const std::string& key, int depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufValue::Type::U8: v.v = uint64_t(r_.read<uint8_t>(what(key))); break;
      case GgufValue::Type::U16: v.v = uint64_t(r_.read<uint16_t>(what(key))); break;
      case GgufValue::Type::U32: v.v = uint64_t(r_.read<uint32_t>(what(key))); break;
      case GgufValue::Type::U64: v.v = r_.read<uint64_t>(what(key)); break;
      case GgufValue::Type::I8: v.v = int64_t(r_.read<int8_t>(what(key))); break;
      case GgufValue::Type::I16: v.v = int64_t(r_.read<int16_t>(what(key))); break;
      case GgufValue::Type::I32: v.v = int64_t(r_.read<int32_t>(what(key))); break;
      case GgufValue::Type::I64: v.v = r_.read<int64_t>(what(key)); break;
      case GgufValue::Type::F32: v.v = double(r_.read<float>(what(key))); break;
      case GgufValue::Type::F64: v.v = r_.read<double>(what(key)); break;
      case GgufValue::Type::Bool: {
        const size_t at = r_.pos();
        const uint8_t b = r_.read<uint8_t>(what(key));
        FKV_CHECK_FORMAT(b <= 1, "'{}': metadata key '{}' is a bool but holds byte {} at offset {} (expected 0 or 1); "
                         "the file is corrupt", r_.path(), key, b, at);
        v.v = b == 1;
        break;
      }
      case GgufValue::Type::String: v.v = r_.read_string(what(key)); break;
      case GgufValue::Type::Array: v.v = read_array(key, depth); break;
    }
    return v;
  }

  GgufValue::Type read_type(const std::string& key, const char* role) {
    const size_t at = r_.pos();
    const uint32_t t = r_.read<uint32_t>(std::string(role) + " of metadata key '" + key + "'");
    FKV_CHECK_FORMAT(t <= 12, "'{}': metadata key '{}' has {} {} at offset {} (expected 0..12: u8, i8, u16, i16, u32, "
                     "i32, f32, bool, string, array, u64, i64, f64); the file is corrupt",
                     r_.path(), key, role, t, at);
    return GgufValue::Type(t);
  }

 private:
  static std::string what(const std::string& key) { return "the value of metadata key '" + key + "'"; }

  std::vector<GgufValue> read_array(const std::string& key, int depth) {
    FKV_CHECK_FORMAT(depth < kMaxArrayNesting, "'{}': metadata key '{}' nests arrays more than {} deep; the file is "
                     "corrupt", r_.path(), key, kMaxArrayNesting);
    const GgufValue::Type et = read_type(key, "array element type");
    const size_t at = r_.pos();
    const uint64_t n = r_.read<uint64_t>("the array length of metadata key '" + key + "'");
    const uint64_t min_bytes = min_value_bytes(et);
    FKV_CHECK_FORMAT(n <= r_.left() / min_bytes, "'{}': metadata key '{}' is an array of {} {} values (count at "
                     "offset {}) that needs at least {} bytes, but only {} bytes are left; the file is truncated or corrupt",
                     r_.path(), key, n, value_type_name(et), at, n > std::numeric_limits<uint64_t>::max() / min_bytes
                         ? std::string("more than 2^64") : std::to_string(n * min_bytes), r_.left());
    elements_ += n;
    FKV_CHECK_FORMAT(elements_ <= kMaxMetadataElements, "'{}': metadata arrays hold {} elements in total after key "
                     "'{}' (fkv's limit is {}); the file is corrupt", r_.path(), elements_, key, kMaxMetadataElements);
    std::vector<GgufValue> out;
    out.reserve(size_t(n));
    for (uint64_t i = 0; i < n; ++i) out.push_back(read_value(et, key, depth + 1));
    return out;
  }

  Reader& r_;
  uint64_t elements_ = 0;
};

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

}  // namespace

// ---- GgufValue ----------------------------------------------------------------------------------

bool GgufValue::is_int() const {
  switch (type) {
    case Type::U8: case Type::I8: case Type::U16: case Type::I16: case Type::U32: case Type::I32:
    case Type::U64: case Type::I64:
      return true;
    default:
      return false;
  }
}

int64_t GgufValue::as_int() const {
  if (type == Type::Bool) return std::get<bool>(v) ? 1 : 0;
  FKV_CHECK_FORMAT(is_int(), "GGUF value is {}, expected an integer", value_type_name(type));
  if (const auto* u = std::get_if<uint64_t>(&v)) {
    FKV_CHECK_FORMAT(*u <= uint64_t(std::numeric_limits<int64_t>::max()),
                     "GGUF integer {} does not fit in int64", *u);
    return int64_t(*u);
  }
  return std::get<int64_t>(v);
}

double GgufValue::as_float() const {
  if (type == Type::F32 || type == Type::F64) return std::get<double>(v);
  FKV_CHECK_FORMAT(is_int(), "GGUF value is {}, expected a number", value_type_name(type));
  if (const auto* u = std::get_if<uint64_t>(&v)) return double(*u);
  return double(std::get<int64_t>(v));
}

bool GgufValue::as_bool() const {
  if (type == Type::Bool) return std::get<bool>(v);
  FKV_CHECK_FORMAT(is_int(), "GGUF value is {}, expected a bool", value_type_name(type));
  return as_int() != 0;
}

const std::string& GgufValue::as_string() const {
  FKV_CHECK_FORMAT(type == Type::String, "GGUF value is {}, expected a string", value_type_name(type));
  return std::get<std::string>(v);
}

const std::vector<GgufValue>& GgufValue::as_array() const {
  FKV_CHECK_FORMAT(type == Type::Array, "GGUF value is {}, expected an array", value_type_name(type));
  return std::get<std::vector<GgufValue>>(v);
}

// ---- GgufTensorInfo -----------------------------------------------------------------------------

int64_t GgufTensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;  // overflow excluded when the file was opened
  return n;
}

std::vector<int64_t> GgufTensorInfo::shape() const { return std::vector<int64_t>(ne.rbegin(), ne.rend()); }

// ---- GgufFile -----------------------------------------------------------------------------------

GgufFile::GgufFile(const std::string& path) : file_(path) {
  const std::string& p = file_.path();
  const size_t size = file_.size();
  Reader r(p, file_.data(), size);

  // header: magic, version, tensor count, kv count
  FKV_CHECK_FORMAT(size >= 4, "'{}': not a GGUF file: it has {} bytes, fewer than the 4-byte magic \"GGUF\"", p, size);
  const uint8_t* m = file_.data();
  FKV_CHECK_FORMAT(std::memcmp(m, "GGUF", 4) == 0, "'{}': not a GGUF file: expected magic \"GGUF\" (47 47 55 46), "
                   "found {:02x} {:02x} {:02x} {:02x}", p, m[0], m[1], m[2], m[3]);
  r.read<uint32_t>("magic");
  version_ = r.read<uint32_t>("the GGUF version");
  FKV_CHECK_FORMAT(version_ == 2 || version_ == 3, "'{}': GGUF version {} is not supported (expected 2 or 3{}); "
                   "re-convert the model with a current llama.cpp", p, version_,
                   version_ == 1 ? ", version 1 used 32-bit counts" :
                   (version_ & 0xFFFF) == 0 ? ", this looks like a big-endian file" : "");
  const uint64_t n_tensors = r.read<uint64_t>("the tensor count");
  const uint64_t n_kv = r.read<uint64_t>("the metadata key/value count");
  // Each key/value takes at least 13 bytes (u64 key length, u32 type, 1-byte value), each tensor info
  // at least 32 (u64 name length, u32 n_dims, one u64 dim, u32 type, u64 offset).
  FKV_CHECK_FORMAT(n_kv <= r.left() / 13, "'{}': header claims {} metadata key/values, but the {} bytes after the "
                   "header can hold at most {}; the file is corrupt or truncated", p, n_kv, r.left(), r.left() / 13);
  FKV_CHECK_FORMAT(n_tensors <= (r.left() - n_kv * 13) / 32, "'{}': header claims {} tensors and {} key/values, but the "
                   "{} bytes after the header can hold at most {} tensor infos; the file is corrupt or truncated",
                   p, n_tensors, n_kv, r.left(), (r.left() - n_kv * 13) / 32);

  // metadata
  Parser parser(r);
  for (uint64_t i = 0; i < n_kv; ++i) {
    const size_t at = r.pos();
    std::string key = r.read_string("metadata key #" + std::to_string(i));
    FKV_CHECK_FORMAT(!key.empty(), "'{}': metadata key #{} at offset {} is empty; the file is corrupt", p, i, at);
    const GgufValue::Type t = parser.read_type(key, "value type");
    GgufValue v = parser.read_value(t, key, 0);
    FKV_CHECK_FORMAT(kv_.count(key) == 0, "'{}': metadata key '{}' appears twice (second at offset {}); the file is "
                     "corrupt", p, key, at);
    kv_.emplace(std::move(key), std::move(v));
  }
  if (auto it = kv_.find("general.alignment"); it != kv_.end()) {
    const GgufValue& a = it->second;
    FKV_CHECK_FORMAT(a.type == GgufValue::Type::U32, "'{}': general.alignment must be a u32, found {}", p,
                     value_type_name(a.type));
    const uint64_t al = std::get<uint64_t>(a.v);
    FKV_CHECK_FORMAT(al != 0 && (al & (al - 1)) == 0, "'{}': general.alignment must be a power of two, found {}", p, al);
    alignment_ = size_t(al);
  }

  // tensor infos
  tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    const std::string which = "tensor info #" + std::to_string(i);
    t.name = r.read_string("the name of " + which);
    FKV_CHECK_FORMAT(!t.name.empty() && t.name.size() <= kMaxNameBytes, "'{}': {} has a name of {} bytes (expected 1.."
                     "{}); the file is corrupt", p, which, t.name.size(), kMaxNameBytes);
    const std::string tn = "tensor '" + t.name + "'";
    const uint32_t n_dims = r.read<uint32_t>("n_dims of " + tn);
    FKV_CHECK_FORMAT(n_dims >= 1 && n_dims <= kMaxDims, "'{}': {} has n_dims {} (expected 1..{}); the file is corrupt",
                     p, tn, n_dims, kMaxDims);
    t.ne.resize(n_dims);
    int64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = r.read<uint64_t>("ne of " + tn);
      FKV_CHECK_FORMAT(ne <= uint64_t(std::numeric_limits<int64_t>::max()), "'{}': {} has ne[{}] = {} (negative as "
                       "int64); the file is corrupt", p, tn, d, ne);
      t.ne[d] = int64_t(ne);
      FKV_CHECK_FORMAT(t.ne[d] == 0 || n_el <= std::numeric_limits<int64_t>::max() / t.ne[d], "'{}': {} has shape {} "
                       "whose element count overflows int64; the file is corrupt", p, tn, shape_str(t.ne));
      n_el *= t.ne[d];
    }
    const size_t type_at = r.pos();
    const uint32_t type_id = r.read<uint32_t>("ggml type of " + tn);
    FKV_CHECK_FORMAT(is_known_type(type_id), "'{}': {} has ggml type id {} at offset {}{}; fkv knows F32, F16, BF16, "
                     "F64, I8..I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K..Q8_K, IQ4_NL and IQ4_XS; use a model "
                     "quantized to one of these", p, tn, type_id, type_at,
                     type_id < 64 && type_name(GgmlType(type_id)).rfind("type#", 0) != 0
                         ? " (" + type_name(GgmlType(type_id)) + ", not supported by fkv)" : " (unknown to ggml)");
    t.type = GgmlType(type_id);
    const TypeTraits& tt = type_traits(t.type);
    FKV_CHECK_FORMAT(t.ne[0] % tt.block_size == 0, "'{}': {} has type {} and shape {} but ne[0] = {} is not a multiple "
                     "of the {} block size {}; the file is corrupt", p, tn, tt.name, shape_str(t.ne), t.ne[0], tt.name,
                     tt.block_size);
    const uint64_t rb = uint64_t(t.ne[0] / tt.block_size) * uint64_t(tt.type_size);
    const uint64_t rows = t.ne[0] == 0 ? 0 : uint64_t(n_el / t.ne[0]);
    FKV_CHECK_FORMAT(rows == 0 || rb <= std::numeric_limits<uint64_t>::max() / rows, "'{}': {} shape {} gives a byte "
                     "size that overflows; the file is corrupt", p, tn, shape_str(t.ne));
    t.nbytes = size_t(rb * rows);
    t.offset = r.read<uint64_t>("the data offset of " + tn);
    FKV_CHECK_FORMAT(t.offset % alignment_ == 0, "'{}': {} has data offset {}, which is not a multiple of the alignment "
                     "{}; the file is corrupt", p, tn, t.offset, alignment_);
    FKV_CHECK_FORMAT(index_.count(t.name) == 0, "'{}': tensor name '{}' appears twice (infos #{} and #{}); the file is "
                     "corrupt", p, t.name, index_.count(t.name) ? index_.at(t.name) : 0, i);
    t.data = nullptr;
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // data section: starts at the next multiple of the alignment after the tensor infos
  const uint64_t infos_end = r.pos();
  const uint64_t data_start = (infos_end + alignment_ - 1) / alignment_ * alignment_;
  for (GgufTensorInfo& t : tensors_) {
    const bool fits = data_start <= size && t.offset <= size - data_start && t.nbytes <= size - data_start - t.offset;
    if (!fits) {
      // report the extent in 128-bit arithmetic: a corrupt offset may be near 2^64
      const unsigned __int128 begin = (unsigned __int128)data_start + t.offset;
      const unsigned __int128 end = begin + t.nbytes;
      auto str = [](unsigned __int128 v) {
        std::string s;
        do {
          s.insert(s.begin(), char('0' + int(v % 10)));
          v /= 10;
        } while (v != 0);
        return s;
      };
      FKV_THROW_KIND(2, "'{}': truncated: tensor '{}' needs bytes [{}, {}) but the file has {} bytes; re-download the "
                     "file", p, t.name, str(begin), str(end), size);
    }
    t.data = file_.data() + data_start + t.offset;
  }
  // overlapping extents mean corrupt offsets (ggml writes tensors back to back, padded to the alignment)
  std::vector<const GgufTensorInfo*> by_off;
  by_off.reserve(tensors_.size());
  for (const GgufTensorInfo& t : tensors_) by_off.push_back(&t);
  std::sort(by_off.begin(), by_off.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_off.size(); ++i) {
    const GgufTensorInfo& a = *by_off[i - 1];
    const GgufTensorInfo& b = *by_off[i];
    FKV_CHECK_FORMAT(a.offset + a.nbytes <= b.offset || a.nbytes == 0 || b.nbytes == 0, "'{}': tensor '{}' (data "
                     "offset {}, {} bytes) overlaps tensor '{}' (data offset {}); the file is corrupt", p, a.name,
                     a.offset, a.nbytes, b.name, b.offset);
  }
}

const GgufValue& GgufFile::get(const std::string& key) const {
  auto it = kv_.find(key);
  FKV_CHECK_FORMAT(it != kv_.end(), "'{}': missing GGUF key '{}' (the file has {} metadata keys)", path(), key,
                   kv_.size());
  return it->second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  FKV_CHECK_FORMAT(t != nullptr, "'{}': missing tensor '{}' (the file has {} tensors)", path(), name, tensors_.size());
  return *t;
}

std::vector<float> GgufFile::dequantize(const GgufTensorInfo& t) const {
  const TypeTraits& tt = type_traits(t.type);
  FKV_CHECK_FORMAT(tt.dequantizable, "'{}': tensor '{}' has type {}, which fkv cannot dequantize", path(), t.name,
                   tt.name);
  // ggml's ne[0] is the contiguous dimension, so the flat element order already is HF's row-major order.
  std::vector<float> out(size_t(t.n_elements()));
  if (!out.empty()) dequantize_row(t.type, t.data, out.data(), t.n_elements());
  return out;
}

}  // namespace fkv::io
