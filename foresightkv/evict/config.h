// Eviction settings shared by generation (spec §A.2) and teacher-forced fidelity (spec §A.1).
// Budget B, eviction interval L and the protected length are independent (spec §A.4). Where the
// official code differs from the method it names, `variant` picks "intended" (the method) or
// "parity" (the released code); resolve() fills every derived default so a result file can embed
// exactly what ran. Semantics: docs/eviction.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "foresightkv/core/json.h"

namespace fkv::evict {

enum class Variant { Intended, Parity };
enum class Trigger {
  Auto,     // the variant's: Length for intended, Counter for parity
  Length,   // after a forward that leaves >= B + L entries in a sequence's cache, evict it to B
  Counter,  // parity (spec §A.2): a per-sequence token counter N; N % L == 0 after a forward flags the next
            // forward, which evicts to B after attending to the full cache (whenever the cache holds > B)
};

struct EvictionConfig {
  std::string policy = "full";  // full|streamingllm|h2o|snapkv|rkv|tova|knorm|random|golden|foresightkv|foresightkv_topk
  int64_t budget = 0;           // B: entries kept per (sequence, layer, KV head) after an eviction
  int64_t window = 0;           // L: eviction interval in new tokens
  int64_t protect = -1;         // newest entries never candidates; -1 = policy/variant default (L; 8 for parity SnapKV/R-KV)
  int64_t query_window = -1;    // recent queries whose attention the statistics see; -1 = policy default
  Variant variant = Variant::Intended;
  Trigger trigger = Trigger::Auto;
  int64_t sink_tokens = 4;        // streamingllm: first tokens always kept
  int64_t pool_kernel = 7;        // snapkv/rkv: max-pool kernel along the key axis (odd)
  double mix_lambda = 0.1;        // rkv: weight of the attention term
  double similarity_threshold = 0.5;  // rkv: "last duplicate" threshold
  double decay = 0.9;             // decayed accumulator
  uint64_t seed = 0;              // random policy; foresightkv's sampled drop sets
  std::string judge;              // foresightkv*: judge checkpoint (safetensors file or HF directory)

  Trigger effective_trigger() const;
  bool is_full() const { return policy == "full"; }
  /// Fill the -1 defaults for the policy and variant; validate (throws InvalidArgument with the fix).
  EvictionConfig resolved() const;
  /// Slots per (sequence, layer, KV head) a cache needs when chunks of up to `chunk` tokens arrive.
  int64_t capacity_for_chunk(int64_t chunk) const;
  json to_json() const;
  /// Strict keys: policy, budget, window, protect, query_window, variant, trigger, sink_tokens, pool_kernel,
  /// mix_lambda, similarity_threshold, decay, seed, judge. to_json() writes "judge" only when set, so configs
  /// recorded before the learned policies existed compare equal.
  static EvictionConfig from_json(const json& j);
};

std::string to_string(Variant v);
std::string to_string(Trigger t);
Variant parse_variant(const std::string& s);
/// Every policy name, in report order.
const std::vector<std::string>& policy_names();
/// foresightkv or foresightkv_topk: the policies that score with a learned judge (EvictionConfig::judge).
bool is_learned_policy(const std::string& policy);

}  // namespace fkv::evict
