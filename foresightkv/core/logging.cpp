// spdlog behind fkv::log. Pattern: [time] [level] message, to stderr (stdout stays for data).
#include "foresightkv/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "foresightkv/core/error.h"

namespace fkv::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::Info)};
std::once_flag g_once;
std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = spdlog::stderr_color_mt("fkv");
    lg->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
    lg->set_level(spdlog::level::trace);
    return lg;
  }();
  return l;
}
void init_from_env() {
  const char* env = std::getenv("FKV_LOG_LEVEL");
  if (env && *env) g_level = static_cast<int>(parse_level(env));
}
}  // namespace

Level parse_level(const std::string& s) {
  if (s == "trace") return Level::Trace;
  if (s == "debug") return Level::Debug;
  if (s == "info") return Level::Info;
  if (s == "warn" || s == "warning") return Level::Warn;
  if (s == "error") return Level::Error;
  if (s == "critical") return Level::Critical;
  if (s == "off") return Level::Off;
  FKV_THROW_KIND(1, "unknown log level '{}'; expected one of trace, debug, info, warn, error, critical, off", s);
}

void init(const std::string& level) {
  std::call_once(g_once, init_from_env);
  if (!level.empty()) g_level = static_cast<int>(parse_level(level));
}

void set_level(Level level) { g_level = static_cast<int>(level); }

bool enabled(Level level) {
  std::call_once(g_once, init_from_env);
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void write(Level level, const std::string& msg) {
  static const spdlog::level::level_enum map[] = {spdlog::level::trace, spdlog::level::debug, spdlog::level::info,
                                                  spdlog::level::warn,  spdlog::level::err,   spdlog::level::critical,
                                                  spdlog::level::off};
  logger()->log(map[static_cast<int>(level)], msg);
}

}  // namespace fkv::log
