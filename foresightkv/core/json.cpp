#include "foresightkv/core/json.h"

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"

namespace fkv {

void check_keys(const json& j, std::initializer_list<const char*> allowed, const std::string& what) {
  FKV_CHECK_ARG(j.is_object(), "{}: expected a JSON object, got {}", what, j.type_name());
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || it.key() == a;
    if (!ok) {
      std::string list;
      for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
      FKV_THROW_KIND(1, "{}: unknown key '{}'; allowed keys: {}", what, it.key(), list);
    }
  }
}

json read_json_file(const std::string& path) {
  std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    FKV_THROW_KIND(2, "'{}' is not valid JSON: {}", path, e.what());
  }
}

}  // namespace fkv
