// JSON helpers on nlohmann::json: strict-key checking for configs, typed getters with clear errors.
#pragma once
#include <nlohmann/json.hpp>

#include <initializer_list>
#include <string>

namespace fkv {

using json = nlohmann::json;

/// Throws InvalidArgument naming the first key of `j` that is not in `allowed` (typos fail loudly).
void check_keys(const json& j, std::initializer_list<const char*> allowed, const std::string& what);

/// Parse a JSON file; errors name the file and the parser's position.
json read_json_file(const std::string& path);

}  // namespace fkv
