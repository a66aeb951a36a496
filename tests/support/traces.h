// Random token traces for tests that need sequences but not their text.
#pragma once
#include <random>
#include <string>

#include <ATen/ATen.h>

#include "foresightkv/evict/evictor.h"
#include "foresightkv/model/transformer.h"
#include "foresightkv/trace/trace_file.h"

namespace fkv::test {

/// T uniform token ids below `vocab` from mt19937_64(seed), the first `prompt` of them the prompt; id "r<seed>".
inline trace::Trace random_trace(int64_t T, int64_t prompt, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  trace::Trace t;
  t.id = "r" + std::to_string(seed);
  for (int64_t i = 0; i < T; ++i) t.tokens.push_back(static_cast<int32_t>(rng() % vocab));
  t.prompt_len = prompt;
  return t;
}

/// Feed trace `t` (batch 1) to `m` teacher-forced in chunks of W from position 0 with `ev` deciding evictions (the
/// fidelity / A-train schedule; `taps` default: none). After every forward that evicted, on_event(k) with k the
/// index of that event (0, 1, ...); with `logits` != Logits::None, on_logits(start, logits [1, n, V]) after every
/// forward (before its eviction). Returns the number of events.
template <class OnEvent, class OnLogits>
int64_t run_in_chunks(const model::Transformer& m, const trace::Trace& t, int64_t W, evict::Evictor& ev,
                      cache::KvCache& kv, model::ForwardTaps* taps, OnEvent on_event, model::Logits logits,
                      OnLogits on_logits) {
  const int64_t T = t.length();
  int64_t events = 0;
  for (int64_t s = 0; s < T; s += W) {
    const int64_t n = std::min(W, T - s);
    at::Tensor ids =
        at::tensor(std::vector<int64_t>(t.tokens.begin() + s, t.tokens.begin() + s + n), at::kLong).view({1, n});
    at::Tensor pos = at::arange(s, s + n, at::kLong).view({1, n});
    ev.begin_forward(pos, {n});
    at::Tensor lg = m.forward(ids, pos, kv, logits, taps);
    if (logits != model::Logits::None) on_logits(s, lg);
    ev.end_forward(kv);
    if (ev.stats().events > events) {
      events = ev.stats().events;
      on_event(events - 1);
    }
  }
  return events;
}

template <class OnEvent>
int64_t run_in_chunks(const model::Transformer& m, const trace::Trace& t, int64_t W, evict::Evictor& ev,
                      cache::KvCache& kv, model::ForwardTaps* taps, OnEvent on_event) {
  return run_in_chunks(m, t, W, ev, kv, taps, on_event, model::Logits::None, [](int64_t, const at::Tensor&) {});
}

}  // namespace fkv::test
