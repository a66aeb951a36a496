// Where tests find their data: committed fixtures (tests/data), the shared data set (../shared/data or
// FKV_DATA_DIR), fetched models (data/models or FKV_MODEL_DIR) and generated references (data/cache).
#pragma once
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace fkv::test {

inline std::string test_data(const std::string& rel = "") { return std::string(FKV_TEST_DATA_DIR) + "/" + rel; }
inline std::string source_dir() { return FKV_SOURCE_DIR; }
inline std::string shared_data() {
  const char* e = std::getenv("FKV_DATA_DIR");
  return e && *e ? std::string(e) : std::string(FKV_SOURCE_DIR) + "/../shared/data";
}
inline std::string models_dir() {
  const char* e = std::getenv("FKV_MODEL_DIR");
  return e && *e ? std::string(e) : std::string(FKV_SOURCE_DIR) + "/data/models";
}
inline std::string ref_cache_dir() { return std::string(FKV_SOURCE_DIR) + "/data/cache"; }
/// A fresh (emptied) directory <tmp>/fkv_<suite>_<pid>/<name> for one test's files.
inline std::string fresh_tmp_dir(const std::string& suite, const std::string& name) {
  const std::filesystem::path d =
      std::filesystem::temp_directory_path() / ("fkv_" + suite + "_" + std::to_string(::getpid())) / name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}
inline std::string smollm2_gguf() { return models_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf"; }

}  // namespace fkv::test
