// Errors: library code throws fkv::Error (never exits); only main() decides exit codes.
// FKV_CHECK(cond, "fmt {}", args...) formats a message with what was expected, what was found
// and how to fix it, and appends the source location.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace fkv {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

/// Bad argument from a caller (CLI flag, config value, API misuse).
class InvalidArgument : public Error {
 public:
  explicit InvalidArgument(const std::string& msg) : Error(msg) {}
};

/// Malformed or inconsistent input file (truncated, corrupt header, wrong shapes).
class FormatError : public Error {
 public:
  explicit FormatError(const std::string& msg) : Error(msg) {}
};

namespace detail {
[[noreturn]] void throw_error(int kind, const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace fkv

#define FKV_THROW_KIND(kind, ...) \
  ::fkv::detail::throw_error(kind, __FILE__, __LINE__, ::fmt::format(__VA_ARGS__))

#define FKV_THROW(...) FKV_THROW_KIND(0, __VA_ARGS__)
#define FKV_CHECK(cond, ...)                 \
  do {                                       \
    if (!(cond)) FKV_THROW_KIND(0, __VA_ARGS__); \
  } while (0)
#define FKV_CHECK_ARG(cond, ...)             \
  do {                                       \
    if (!(cond)) FKV_THROW_KIND(1, __VA_ARGS__); \
  } while (0)
#define FKV_CHECK_FORMAT(cond, ...)          \
  do {                                       \
    if (!(cond)) FKV_THROW_KIND(2, __VA_ARGS__); \
  } while (0)
