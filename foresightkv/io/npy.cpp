#include "foresightkv/io/npy.h"

#include <cstring>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"

namespace fkv::io {

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  std::string dims;
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
    n *= shape[i];
  }
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t pre = 10;  // magic(6) + version(2) + header_len(2)
  size_t total = pre + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out;
  out.reserve(pre + header.size() + n * 4);
  out.append("\x93NUMPY\x01\x00", 8);
  const uint16_t hl = static_cast<uint16_t>(header.size());
  out.push_back(static_cast<char>(hl & 0xff));
  out.push_back(static_cast<char>(hl >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n) * 4);
  write_file_atomic(path, out);
}

NpyArray read_npy(const std::string& path) {
  MappedFile f(path);
  FKV_CHECK_FORMAT(f.size() >= 10 && std::memcmp(f.data(), "\x93NUMPY", 6) == 0, "'{}' is not a .npy file", path);
  const uint8_t major = f.data()[6];
  size_t hl, off;
  if (major == 1) {
    hl = f.data()[8] | (size_t(f.data()[9]) << 8);
    off = 10;
  } else {
    FKV_CHECK_FORMAT(f.size() >= 12, "'{}': truncated .npy header", path);
    hl = f.data()[8] | (size_t(f.data()[9]) << 8) | (size_t(f.data()[10]) << 16) | (size_t(f.data()[11]) << 24);
    off = 12;
  }
  FKV_CHECK_FORMAT(off + hl <= f.size(), "'{}': truncated .npy header", path);
  std::string h(reinterpret_cast<const char*>(f.data() + off), hl);
  NpyArray a;
  auto d = h.find("'descr': '");
  FKV_CHECK_FORMAT(d != std::string::npos, "'{}': .npy header lacks descr", path);
  a.descr = h.substr(d + 10, h.find('\'', d + 10) - d - 10);
  FKV_CHECK_FORMAT(h.find("'fortran_order': False") != std::string::npos, "'{}': Fortran-order .npy not supported", path);
  auto s = h.find("'shape': (");
  FKV_CHECK_FORMAT(s != std::string::npos, "'{}': .npy header lacks shape", path);
  std::string dims = h.substr(s + 10, h.find(')', s) - s - 10);
  int64_t n = 1;
  size_t p = 0;
  while (p < dims.size()) {
    while (p < dims.size() && (dims[p] == ' ' || dims[p] == ',')) ++p;
    if (p >= dims.size()) break;
    size_t q = p;
    while (q < dims.size() && std::isdigit(static_cast<unsigned char>(dims[q]))) ++q;
    FKV_CHECK_FORMAT(q > p, "'{}': bad .npy shape '{}'", path, dims);
    a.shape.push_back(std::stoll(dims.substr(p, q - p)));
    n *= a.shape.back();
    p = q;
  }
  size_t es = a.descr == "<f4" || a.descr == "<i4" ? 4 : a.descr == "<i8" || a.descr == "<f8" ? 8 : 0;
  FKV_CHECK_FORMAT(es != 0, "'{}': unsupported .npy dtype {}", path, a.descr);
  const size_t data_off = off + hl;
  FKV_CHECK_FORMAT(data_off + n * es <= f.size(), "'{}': truncated .npy data ({} bytes expected)", path, n * es);
  a.bytes.assign(f.data() + data_off, f.data() + data_off + n * es);
  return a;
}

}  // namespace fkv::io
