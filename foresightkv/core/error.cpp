// Out-of-line throw so the FKV_CHECK macros stay small at every call site.
#include "foresightkv/core/error.h"

#include <cstring>

namespace fkv::detail {

void throw_error(int kind, const char* file, int line, const std::string& msg) {
  const char* base = std::strrchr(file, '/');
  std::string full = msg + fmt::format(" [{}:{}]", base ? base + 1 : file, line);
  switch (kind) {
    case 1: throw InvalidArgument(full);
    case 2: throw FormatError(full);
    default: throw Error(full);
  }
}

}  // namespace fkv::detail
