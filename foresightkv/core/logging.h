// Logging facade: spdlog is included only in logging.cpp. Level from init(), else FKV_LOG_LEVEL.
// Metrics are not log lines: they go to JSONL files.
#pragma once
#include <fmt/format.h>

#include <string>

namespace fkv::log {

enum class Level { Trace, Debug, Info, Warn, Error, Critical, Off };

/// Initialise the default logger (stderr). `level` may be "", in which case FKV_LOG_LEVEL or "info" is used.
void init(const std::string& level = "");
void set_level(Level level);
Level parse_level(const std::string& s);
bool enabled(Level level);
void write(Level level, const std::string& msg);

}  // namespace fkv::log

#define FKV_LOG_AT(lvl, ...)                                                    \
  do {                                                                          \
    if (::fkv::log::enabled(lvl)) ::fkv::log::write(lvl, ::fmt::format(__VA_ARGS__)); \
  } while (0)
#define FKV_LOG_DEBUG(...) FKV_LOG_AT(::fkv::log::Level::Debug, __VA_ARGS__)
#define FKV_LOG_INFO(...) FKV_LOG_AT(::fkv::log::Level::Info, __VA_ARGS__)
#define FKV_LOG_WARN(...) FKV_LOG_AT(::fkv::log::Level::Warn, __VA_ARGS__)
#define FKV_LOG_ERROR(...) FKV_LOG_AT(::fkv::log::Level::Error, __VA_ARGS__)
#define FKV_LOG_CRITICAL(...) FKV_LOG_AT(::fkv::log::Level::Critical, __VA_ARGS__)
