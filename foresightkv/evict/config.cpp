#include "foresightkv/evict/config.h"

#include <algorithm>

#include "foresightkv/core/error.h"

namespace fkv::evict {

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names = {"full", "streamingllm", "h2o",    "snapkv", "rkv",
                                                  "tova", "knorm",        "random", "golden",
                                                  "foresightkv", "foresightkv_topk"};
  return names;
}

bool is_learned_policy(const std::string& p) { return p == "foresightkv" || p == "foresightkv_topk"; }

std::string to_string(Variant v) { return v == Variant::Parity ? "parity" : "intended"; }
std::string to_string(Trigger t) {
  return t == Trigger::Length ? "length" : t == Trigger::Counter ? "counter" : "auto";
}

Variant parse_variant(const std::string& s) {
  if (s == "intended") return Variant::Intended;
  if (s == "parity") return Variant::Parity;
  throw InvalidArgument(fmt::format("eviction variant '{}': expected 'intended' or 'parity'", s));
}

static Trigger parse_trigger(const std::string& s) {
  if (s == "auto") return Trigger::Auto;
  if (s == "length") return Trigger::Length;
  if (s == "counter") return Trigger::Counter;
  throw InvalidArgument(fmt::format("eviction trigger '{}': expected 'auto', 'length' or 'counter'", s));
}

Trigger EvictionConfig::effective_trigger() const {
  if (trigger != Trigger::Auto) return trigger;
  return variant == Variant::Parity ? Trigger::Counter : Trigger::Length;
}

EvictionConfig EvictionConfig::resolved() const {
  EvictionConfig c = *this;
  const auto& names = policy_names();
  FKV_CHECK_ARG(std::find(names.begin(), names.end(), c.policy) != names.end(),
                "unknown eviction policy '{}'; valid: full, streamingllm, h2o, snapkv, rkv, tova, knorm, random, golden, "
                "foresightkv, foresightkv_topk",
                c.policy);
  c.trigger = c.effective_trigger();
  if (c.is_full()) return c;
  FKV_CHECK_ARG(c.budget > 0, "eviction budget must be > 0 for policy '{}' (got {})", c.policy, c.budget);
  FKV_CHECK_ARG(c.window > 0, "eviction window (interval L) must be > 0 (got {})", c.window);
  const bool parity = c.variant == Variant::Parity;
  if (c.query_window < 0) {
    if (c.policy == "h2o")
      c.query_window = parity ? 8 : c.window;  // intended: every query since the last event is observed once
    else if (c.policy == "snapkv" || c.policy == "rkv")
      c.query_window = 8;  // official window_size default (spec §F.0)
    else if (c.policy == "tova")
      c.query_window = 1;  // TOVA scores by the newest query's attention
    else if (is_learned_policy(c.policy))
      c.query_window = c.window;  // the judge's statistics: the last segment's L queries (spec §B.2)
    else
      c.query_window = 0;
  }
  if (c.protect < 0) {
    // Parity SnapKV/R-KV protect only their observation window w (spec §F.1); everything else the newest L.
    if (parity && (c.policy == "snapkv" || c.policy == "rkv"))
      c.protect = c.query_window;
    else
      c.protect = c.window;
  }
  FKV_CHECK_ARG(c.protect >= 0 && c.protect < c.budget,
                "eviction protect length {} must be in [0, budget {}): the protected newest entries must fit in the budget",
                c.protect, c.budget);
  FKV_CHECK_ARG(c.query_window >= 0, "query_window must be >= 0");
  if (c.policy == "streamingllm")
    FKV_CHECK_ARG(c.sink_tokens >= 0 && c.sink_tokens + c.protect <= c.budget,
                  "streamingllm: sink_tokens {} + protect {} exceed budget {}", c.sink_tokens, c.protect, c.budget);
  FKV_CHECK_ARG(c.pool_kernel >= 1 && c.pool_kernel % 2 == 1, "pool_kernel must be odd and >= 1 (got {})",
                c.pool_kernel);
  FKV_CHECK_ARG(c.mix_lambda >= 0 && c.mix_lambda <= 1, "mix_lambda must be in [0, 1] (got {})", c.mix_lambda);
  FKV_CHECK_ARG(c.decay >= 0 && c.decay <= 1, "decay must be in [0, 1] (got {})", c.decay);
  return c;
}

int64_t EvictionConfig::capacity_for_chunk(int64_t chunk) const {
  // Length trigger: at most B + L - 1 entries before a forward, then the chunk. Counter trigger: the cache
  // can reach B + L (+1 for the flagged step) before the eviction that follows the next forward.
  return budget + window + std::max<int64_t>(chunk, 1) + 1;
}

json EvictionConfig::to_json() const {
  json j{{"policy", policy},
              {"budget", budget},
              {"window", window},
              {"protect", protect},
              {"query_window", query_window},
              {"variant", to_string(variant)},
              {"trigger", to_string(trigger)},
              {"sink_tokens", sink_tokens},
              {"pool_kernel", pool_kernel},
              {"mix_lambda", mix_lambda},
              {"similarity_threshold", similarity_threshold},
              {"decay", decay},
              {"seed", seed}};
  if (!judge.empty()) j["judge"] = judge;
  return j;
}

EvictionConfig EvictionConfig::from_json(const json& j) {
  FKV_CHECK_ARG(j.is_object(), "eviction config must be a JSON object");
  check_keys(j,
             {"policy", "budget", "window", "protect", "query_window", "variant", "trigger", "sink_tokens",
              "pool_kernel", "mix_lambda", "similarity_threshold", "decay", "seed", "judge"},
             "eviction config");
  EvictionConfig c;
  try {
    if (j.contains("policy")) c.policy = j.at("policy").get<std::string>();
    if (j.contains("budget")) c.budget = j.at("budget").get<int64_t>();
    if (j.contains("window")) c.window = j.at("window").get<int64_t>();
    if (j.contains("protect")) c.protect = j.at("protect").get<int64_t>();
    if (j.contains("query_window")) c.query_window = j.at("query_window").get<int64_t>();
    if (j.contains("variant")) c.variant = parse_variant(j.at("variant").get<std::string>());
    if (j.contains("trigger")) c.trigger = parse_trigger(j.at("trigger").get<std::string>());
    if (j.contains("sink_tokens")) c.sink_tokens = j.at("sink_tokens").get<int64_t>();
    if (j.contains("pool_kernel")) c.pool_kernel = j.at("pool_kernel").get<int64_t>();
    if (j.contains("mix_lambda")) c.mix_lambda = j.at("mix_lambda").get<double>();
    if (j.contains("similarity_threshold")) c.similarity_threshold = j.at("similarity_threshold").get<double>();
    if (j.contains("decay")) c.decay = j.at("decay").get<double>();
    if (j.contains("seed")) c.seed = j.at("seed").get<uint64_t>();
    if (j.contains("judge")) c.judge = j.at("judge").get<std::string>();
  } catch (const json::exception& e) {
    throw InvalidArgument(fmt::format("eviction config: wrong value type ({})", e.what()));
  }
  return c;
}

}  // namespace fkv::evict
