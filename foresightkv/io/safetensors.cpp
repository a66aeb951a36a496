// safetensors reader/writer (engineering.md §2). The reader validates everything the format promises
// before handing out pointers into the memory map: header length within the 100 MB cap and the file,
// a JSON object header without duplicate names, known dtypes, non-negative shapes, data_offsets inside
// the byte buffer with end - begin == numel * itemsize, and no two non-empty ranges overlapping.
// Gaps and trailing bytes are tolerated (some writers pad). Tests: tests/unit/io/safetensors_test.cpp.
#include "foresightkv/io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "foresightkv/core/error.h"
#include "foresightkv/core/json.h"

namespace fkv::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; fkv reads it in place on little-endian hosts only");

namespace {

// The reference parser (huggingface/safetensors) refuses headers above 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

struct DtypeInfo {
  StDtype dtype;
  const char* name;
  size_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {StDtype::F64, "F64", 8},        {StDtype::F32, "F32", 4},   {StDtype::F16, "F16", 2},
    {StDtype::BF16, "BF16", 2},      {StDtype::I64, "I64", 8},   {StDtype::I32, "I32", 4},
    {StDtype::I16, "I16", 2},        {StDtype::I8, "I8", 1},     {StDtype::U8, "U8", 1},
    {StDtype::BOOL, "BOOL", 1},      {StDtype::U16, "U16", 2},   {StDtype::U32, "U32", 4},
    {StDtype::U64, "U64", 8},        {StDtype::F8_E4M3, "F8_E4M3", 1},
    {StDtype::F8_E5M2, "F8_E5M2", 1},
};

const DtypeInfo& dtype_info(StDtype d) {
  for (const auto& e : kDtypes)
    if (e.dtype == d) return e;
  FKV_THROW_KIND(1, "safetensors: invalid StDtype value {}", static_cast<int>(d));
}

std::string known_dtype_list() {
  std::string s;
  for (const auto& e : kDtypes) s += std::string(s.empty() ? "" : ", ") + e.name;
  return s;
}

// numel of `shape`, or nullopt on overflow past int64.
std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return std::nullopt;
    n *= d;
  }
  return n;
}

std::string join_dir(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string parent_dir(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  return pos == 0 ? "/" : path.substr(0, pos);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Parses one header entry (`{"dtype", "shape", "data_offsets"}`) into `t`; `buffer_size` bounds it.
StTensor parse_entry(const std::string& path, const std::string& name, const json& e, const uint8_t* buffer,
                     uint64_t buffer_size) {
  FKV_CHECK_FORMAT(e.is_object(), "'{}': header entry '{}' must be an object with dtype, shape and "
                   "data_offsets, got {}", path, name, e.type_name());
  for (const char* k : {"dtype", "shape", "data_offsets"})
    FKV_CHECK_FORMAT(e.contains(k), "'{}': tensor '{}' has no '{}' in the header (expected keys dtype, shape, "
                     "data_offsets)", path, name, k);
  StTensor t;
  t.name = name;

  const json& jd = e.at("dtype");
  FKV_CHECK_FORMAT(jd.is_string(), "'{}': tensor '{}': dtype must be a string, got {}", path, name, jd.dump());
  auto dt = st_dtype_from_name(jd.get<std::string>());
  FKV_CHECK_FORMAT(dt.has_value(), "'{}': tensor '{}' has unknown dtype '{}'; fkv knows {}", path, name,
                   jd.get<std::string>(), known_dtype_list());
  t.dtype = *dt;

  const json& js = e.at("shape");
  FKV_CHECK_FORMAT(js.is_array(), "'{}': tensor '{}': shape must be an array of integers, got {}", path, name,
                   js.dump());
  for (const json& d : js) {
    FKV_CHECK_FORMAT(d.is_number_integer(), "'{}': tensor '{}': shape {} holds a non-integer", path, name,
                     js.dump());
    FKV_CHECK_FORMAT(d.is_number_unsigned() || d.get<int64_t>() >= 0,
                     "'{}': tensor '{}': shape {} has a negative dimension", path, name, js.dump());
    FKV_CHECK_FORMAT(d.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                     "'{}': tensor '{}': shape {} has a dimension beyond int64", path, name, js.dump());
    t.shape.push_back(d.get<int64_t>());
  }
  auto numel = checked_numel(t.shape);
  const size_t isz = st_dtype_size(t.dtype);
  FKV_CHECK_FORMAT(numel && static_cast<uint64_t>(*numel) <= std::numeric_limits<uint64_t>::max() / isz,
                   "'{}': tensor '{}': shape {} overflows the element count", path, name, js.dump());
  const uint64_t expect_bytes = static_cast<uint64_t>(*numel) * isz;

  const json& jo = e.at("data_offsets");
  FKV_CHECK_FORMAT(jo.is_array() && jo.size() == 2 && jo[0].is_number_unsigned() && jo[1].is_number_unsigned(),
                   "'{}': tensor '{}': data_offsets must be [begin, end] with non-negative integers, got {}",
                   path, name, jo.dump());
  const uint64_t begin = jo[0].get<uint64_t>(), end = jo[1].get<uint64_t>();
  FKV_CHECK_FORMAT(begin <= end, "'{}': tensor '{}': data_offsets [{}, {}] has begin > end", path, name, begin,
                   end);
  FKV_CHECK_FORMAT(end <= buffer_size,
                   "'{}': tensor '{}': data_offsets [{}, {}] end past the {}-byte data buffer (file truncated?)",
                   path, name, begin, end, buffer_size);
  FKV_CHECK_FORMAT(end - begin == expect_bytes,
                   "'{}': tensor '{}': data_offsets [{}, {}] span {} bytes but dtype {} shape {} needs {} bytes",
                   path, name, begin, end, end - begin, st_dtype_name(t.dtype), js.dump(), expect_bytes);
  t.data = buffer + begin;
  t.nbytes = static_cast<size_t>(expect_bytes);
  return t;
}

}  // namespace

const char* st_dtype_name(StDtype d) { return dtype_info(d).name; }
size_t st_dtype_size(StDtype d) { return dtype_info(d).size; }

std::optional<StDtype> st_dtype_from_name(std::string_view name) {
  for (const auto& e : kDtypes)
    if (name == e.name) return e.dtype;
  return std::nullopt;
}

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const uint8_t* p = file_.data();
  const uint64_t size = file_.size();
  FKV_CHECK_FORMAT(size >= 8, "'{}' is {} bytes; a safetensors file starts with an 8-byte header length "
                   "(truncated or not a safetensors file?)", path, size);
  uint64_t n = 0;
  std::memcpy(&n, p, 8);  // little-endian u64 (host is little-endian, see static_assert)
  FKV_CHECK_FORMAT(n <= kMaxHeaderBytes, "'{}': header length {} exceeds the 100 MB cap of the reference "
                   "parser (corrupt file or not safetensors?)", path, n);
  FKV_CHECK_FORMAT(n <= size - 8, "'{}': header length {} runs past the end of the {}-byte file (truncated?)",
                   path, n, size);
  FKV_CHECK_FORMAT(n >= 2, "'{}': header length {} is too short for a JSON object", path, n);

  // Top-level names must be unique; nlohmann keeps the last duplicate silently, so catch them while parsing.
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (depth == 1 && ev == json::parse_event_t::key) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  json header;
  const char* hb = reinterpret_cast<const char*>(p + 8);
  try {
    header = json::parse(hb, hb + n, cb);
  } catch (const json::exception& e) {
    FKV_THROW_KIND(2, "'{}': the {}-byte header is not valid JSON: {}", path, n, e.what());
  }
  FKV_CHECK_FORMAT(header.is_object(), "'{}': the header must be a JSON object, got {}", path,
                   header.type_name());
  FKV_CHECK_FORMAT(duplicate.empty(), "'{}': tensor name '{}' appears twice in the header", path, duplicate);

  const uint8_t* buffer = p + 8 + n;
  const uint64_t buffer_size = size - 8 - n;
  std::vector<std::pair<uint64_t, const StTensor*>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      FKV_CHECK_FORMAT(it->is_object(), "'{}': __metadata__ must be an object of strings, got {}", path,
                       it->type_name());
      for (auto m = it->begin(); m != it->end(); ++m) {
        FKV_CHECK_FORMAT(m->is_string(), "'{}': __metadata__['{}'] must be a string, got {}", path, m.key(),
                         m->dump());
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    StTensor t = parse_entry(path, it.key(), *it, buffer, buffer_size);
    auto [pos, inserted] = tensors_.emplace(t.name, std::move(t));
    FKV_CHECK_FORMAT(inserted, "'{}': tensor name '{}' appears twice in the header", path, it.key());
    if (pos->second.nbytes > 0)
      ranges.emplace_back(static_cast<uint64_t>(pos->second.data - buffer), &pos->second);
  }

  // Non-empty ranges, sorted by start, must not overlap.
  std::sort(ranges.begin(), ranges.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const auto& [pb, prev] = ranges[i - 1];
    const auto& [cb_, cur] = ranges[i];
    FKV_CHECK_FORMAT(cb_ >= pb + prev->nbytes,
                     "'{}': data of tensors '{}' [{}, {}) and '{}' [{}, {}) overlap; every tensor needs its own "
                     "byte range", path, prev->name, pb, pb + prev->nbytes, cur->name, cb_, cb_ + cur->nbytes);
  }
}

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& path) {
  std::string index_path, single_path;
  if (is_directory(path)) {
    const std::string idx = join_dir(path, "model.safetensors.index.json");
    const std::string one = join_dir(path, "model.safetensors");
    if (file_exists(idx))
      index_path = idx;
    else if (file_exists(one))
      single_path = one;
    else
      FKV_THROW_KIND(2, "'{}' holds neither model.safetensors nor model.safetensors.index.json; pass an HF "
                     "model directory or a .safetensors file", path);
  } else {
    FKV_CHECK_ARG(file_exists(path), "safetensors checkpoint '{}' does not exist", path);
    if (ends_with(path, ".index.json"))
      index_path = path;
    else
      single_path = path;
  }

  if (!single_path.empty()) {
    shards_.push_back(std::make_unique<SafetensorsFile>(single_path));
    files_.push_back(single_path);
    for (const auto& [name, t] : shards_.back()->tensors()) all_[name] = &t;
    return;
  }

  // Sharded: {"metadata": {...}, "weight_map": {tensor name: shard file name}}.
  const json idx = read_json_file(index_path);
  FKV_CHECK_FORMAT(idx.is_object() && idx.contains("weight_map") && idx.at("weight_map").is_object(),
                   "'{}': expected an object with a 'weight_map' object (tensor name -> shard file)", index_path);
  const json& wm = idx.at("weight_map");
  FKV_CHECK_FORMAT(!wm.empty(), "'{}': weight_map is empty; the checkpoint has no tensors", index_path);
  const std::string dir = parent_dir(index_path);
  std::map<std::string, size_t> shard_of_file;  // shard file name -> index into shards_
  for (auto it = wm.begin(); it != wm.end(); ++it) {
    FKV_CHECK_FORMAT(it->is_string() && !it->get<std::string>().empty(),
                     "'{}': weight_map['{}'] must be a shard file name, got {}", index_path, it.key(), it->dump());
    const std::string shard = it->get<std::string>();
    auto found = shard_of_file.find(shard);
    if (found == shard_of_file.end()) {
      const std::string shard_path = join_dir(dir, shard);
      FKV_CHECK_FORMAT(file_exists(shard_path) && !is_directory(shard_path),
                       "'{}' maps tensor '{}' to shard '{}', but '{}' does not exist; copy the missing shard or "
                       "regenerate the index", index_path, it.key(), shard, shard_path);
      shards_.push_back(std::make_unique<SafetensorsFile>(shard_path));
      files_.push_back(shard_path);
      found = shard_of_file.emplace(shard, shards_.size() - 1).first;
    }
    const SafetensorsFile& f = *shards_[found->second];
    auto t = f.tensors().find(it.key());
    FKV_CHECK_FORMAT(t != f.tensors().end(),
                     "'{}' maps tensor '{}' to '{}', but that shard has no such tensor ({} tensors in it); the "
                     "index and shards are out of sync", index_path, it.key(), f.path(), f.tensors().size());
    all_[it.key()] = &t->second;
  }
}

const StTensor* SafetensorsCheckpoint::find(const std::string& name) const {
  auto it = all_.find(name);
  return it == all_.end() ? nullptr : it->second;
}

const StTensor& SafetensorsCheckpoint::get(const std::string& name) const {
  if (const StTensor* t = find(name)) return *t;
  std::string files;
  for (const auto& f : files_) files += std::string(files.empty() ? "" : ", ") + "'" + f + "'";
  FKV_THROW_KIND(2, "tensor '{}' not found in {} ({} tensors); check the model architecture and tensor names",
                 name, files, all_.size());
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(all_.size());
  for (const auto& [name, t] : all_) out.push_back(name);
  return out;
}

void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps tensors in the caller's order, matching the data layout.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    FKV_CHECK_ARG(t.name != "__metadata__", "write_safetensors('{}'): '__metadata__' is reserved, rename the "
                  "tensor", path);
    FKV_CHECK_ARG(names.insert(t.name).second, "write_safetensors('{}'): tensor name '{}' given twice", path,
                  t.name);
    for (int64_t d : t.shape)
      FKV_CHECK_ARG(d >= 0, "write_safetensors('{}'): tensor '{}' has negative dimension {}", path, t.name, d);
    auto numel = checked_numel(t.shape);
    FKV_CHECK_ARG(numel.has_value(), "write_safetensors('{}'): tensor '{}' shape overflows", path, t.name);
    const uint64_t nbytes = static_cast<uint64_t>(*numel) * st_dtype_size(t.dtype);
    FKV_CHECK_ARG(nbytes == 0 || t.data != nullptr, "write_safetensors('{}'): tensor '{}' has {} bytes but a "
                  "null data pointer", path, t.name, nbytes);
    header[t.name] = {{"dtype", st_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // pad with spaces so the data buffer starts 8-byte aligned
  const uint64_t n = h.size();

  std::string out;
  out.reserve(8 + h.size() + offset);
  out.append(reinterpret_cast<const char*>(&n), 8);
  out += h;
  for (const auto& t : tensors) {
    const uint64_t nbytes = static_cast<uint64_t>(*checked_numel(t.shape)) * st_dtype_size(t.dtype);
    if (nbytes) out.append(static_cast<const char*>(t.data), nbytes);
  }
  write_file_atomic(path, out);
}

}  // namespace fkv::io
