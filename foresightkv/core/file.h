// Files: read-only memory maps (weights), atomic writes (temp file + fsync + rename), SHA-256.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fkv {

/// Read-only memory map of a whole file. Move-only. Throws fkv::Error with the path on failure.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

/// Write `bytes` to `path` atomically: write `path.tmp.<pid>`, fsync, rename. No partial file on failure.
void write_file_atomic(const std::string& path, std::string_view bytes);
std::string read_file(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);

/// Hex SHA-256 of a byte range / a whole file.
std::string sha256_hex(const uint8_t* data, size_t n);
std::string sha256_file(const std::string& path);

}  // namespace fkv
