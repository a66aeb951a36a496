#include "foresightkv/runtime/generator.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <optional>

#include "foresightkv/core/error.h"
#include "foresightkv/core/timer.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/judge/policy.h"
#include "foresightkv/runtime/evictor_taps.h"

namespace fkv::runtime {

namespace {

// Chunked prefill of prompts[i] into row i of a fresh `kv` / `ev` (rows >= prompts.size() must be empty and
// get padding only). Writes each prompt's last-row logits to out + i * V.
void prefill(const model::Transformer& model, const std::vector<const std::vector<int32_t>*>& prompts,
             cache::KvCache& kv, evict::Evictor& ev, int64_t chunk, int64_t pad_id, float* out) {
  const int64_t n_seq = kv.n_seq(), n = static_cast<int64_t>(prompts.size()), V = model.config().n_vocab;
  int64_t max_prompt = 0;
  for (const auto* p : prompts) max_prompt = std::max<int64_t>(max_prompt, static_cast<int64_t>(p->size()));
  EvictorTaps taps(ev);
  model::ForwardTaps* tp = ev.enabled() ? &taps : nullptr;
  for (int64_t start = 0; start < max_prompt; start += chunk) {
    const int64_t T = std::min(chunk, max_prompt - start);
    at::Tensor ids = at::empty({n_seq, T}, at::kLong), pos = at::empty({n_seq, T}, at::kLong);
    int64_t* ip = ids.data_ptr<int64_t>();
    int64_t* pp = pos.data_ptr<int64_t>();
    std::vector<int64_t> real(n_seq, 0), last(n_seq, 0);
    std::vector<bool> ends(n_seq, false);
    bool any_ends = false;
    for (int64_t s = 0; s < n_seq; ++s) {
      const int64_t len = s < n ? static_cast<int64_t>(prompts[s]->size()) : 0;
      for (int64_t i = 0; i < T; ++i) {
        const int64_t p = start + i;
        ip[s * T + i] = p < len ? (*prompts[s])[p] : pad_id;
        pp[s * T + i] = p;
      }
      real[s] = std::clamp<int64_t>(len - start, 0, T);
      // logits only at the last prompt row of the sequences whose prompt ends in this chunk
      ends[s] = real[s] > 0 && start + real[s] == len;
      last[s] = ends[s] ? real[s] - 1 : 0;
      any_ends = any_ends || ends[s];
    }
    ev.begin_forward(pos, real);
    at::Tensor lg = any_ends ? model.forward(ids, pos, kv, model::Logits::Last, tp, last)  // [n_seq, V]
                             : model.forward(ids, pos, kv, model::Logits::None, tp);
    for (int64_t s = 0; s < n_seq; ++s) {
      if (real[s] < T) kv.pop_back(s, T - real[s]);
      if (ends[s]) std::memcpy(out + s * V, lg[s].contiguous().data_ptr<float>(), sizeof(float) * V);
    }
    ev.end_forward(kv);
  }
}

}  // namespace

Generator::Generator(const model::Transformer& model, const text::Tokenizer& tokenizer)
    : model_(model), tokenizer_(tokenizer) {}

std::vector<GenerationResult> Generator::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                  const GenerateOptions& opt, const StreamCallback& stream,
                                                  const FinishCallback& on_finish) const {
  FKV_CHECK_ARG(!prompts.empty(), "generate: no prompts");
  FKV_CHECK_ARG(opt.max_new_tokens >= 0 && opt.prefill_chunk > 0 && opt.max_batch >= 0,
                "generate: bad max_new_tokens {}, chunk {} or max_batch {}", opt.max_new_tokens, opt.prefill_chunk,
                opt.max_batch);
  opt.sampling.validate();
  const int64_t n_prompts = static_cast<int64_t>(prompts.size());
  FKV_CHECK_ARG(opt.stream_ids.empty() || static_cast<int64_t>(opt.stream_ids.size()) == n_prompts,
                "generate: {} stream ids for {} prompts", opt.stream_ids.size(), prompts.size());
  FKV_CHECK_ARG(opt.max_new_tokens_each.empty() || static_cast<int64_t>(opt.max_new_tokens_each.size()) == n_prompts,
                "generate: {} max_new_tokens_each for {} prompts", opt.max_new_tokens_each.size(), prompts.size());
  const auto& cfg = model_.config();
  const int64_t V = cfg.n_vocab;
  // EOS: the caller's list, else the union of the tokenizer's and the model config's (generation_config
  // lists e.g. Qwen3's <|endoftext|> next to <|im_end|>).
  std::vector<int32_t> eos = opt.eos_ids;
  if (eos.empty()) {
    eos = tokenizer_.eos_ids();
    for (int64_t e : cfg.eos_ids)
      if (std::find(eos.begin(), eos.end(), static_cast<int32_t>(e)) == eos.end()) eos.push_back(static_cast<int32_t>(e));
  }
  auto max_new_of = [&](int64_t i) {
    return opt.max_new_tokens_each.empty() ? opt.max_new_tokens : opt.max_new_tokens_each[i];
  };
  auto stream_of = [&](int64_t i) {
    return opt.stream_ids.empty() ? static_cast<uint64_t>(i) : opt.stream_ids[i];
  };
  int64_t max_prompt = 0, max_new = 0;
  for (int64_t i = 0; i < n_prompts; ++i) {
    const auto& p = prompts[i];
    FKV_CHECK_ARG(!p.empty(), "generate: empty prompt");
    for (int32_t id : p)
      FKV_CHECK_ARG(id >= 0 && id < V, "generate: prompt token {} outside the vocabulary [0, {})", id, V);
    max_prompt = std::max<int64_t>(max_prompt, static_cast<int64_t>(p.size()));
    const int64_t mn = max_new_of(i);
    FKV_CHECK_ARG(mn >= 0, "generate: max_new_tokens {} of prompt {} is negative", mn, i);
    max_new = std::max(max_new, mn);
  }
  const int64_t n_slots = opt.max_batch > 0 ? std::min(opt.max_batch, n_prompts) : n_prompts;
  // Vocabulary padding rows of the embedding (ids >= tokenizer size) are never sampled.
  Sampler sampler(opt.sampling, tokenizer_.vocab_size());
  const int64_t pad_id = eos.empty() || eos.front() < 0 ? 0 : eos.front();  // (a -1 "never stop" id is no token)
  judge::register_policies();  // the learned policies (foresightkv, foresightkv_topk) by name
  auto make_evictor = [&](int64_t rows) {
    evict::Evictor e(opt.eviction, rows, cfg.n_layer, cfg.n_head_q, cfg.n_head_kv, cfg.head_dim);
    if (opt.eviction_observer) e.set_observer(opt.eviction_observer);
    return e;
  };
  evict::Evictor evictor = make_evictor(n_slots);
  const int64_t full_cap = max_prompt + max_new + opt.prefill_chunk;
  const int64_t cap = evictor.enabled()
                          ? std::min(full_cap, evictor.config().capacity_for_chunk(std::min(opt.prefill_chunk, max_prompt)))
                          : full_cap;
  const at::ScalarType kv_dtype = opt.kv_f16 ? at::kHalf : at::kFloat;
  cache::KvCache kv = model_.make_cache(n_slots, cap, kv_dtype);
  EvictorTaps taps(evictor);
  model::ForwardTaps* tp = evictor.enabled() ? &taps : nullptr;
  const int64_t kv_elem = static_cast<int64_t>(c10::elementSize(kv_dtype));

  std::vector<GenerationResult> res(n_prompts);
  std::vector<std::optional<text::StreamDecoder>> decoders(n_prompts);
  std::vector<int64_t> slot_prompt(n_slots, -1);   // prompt decoded in each row (-1: free)
  std::vector<char> fresh(n_slots, 0);              // the row holds logits not sampled yet
  std::vector<double> started(n_prompts, 0.0);      // wall clock when the prompt's decode began
  std::vector<float> last_logits(static_cast<size_t>(n_slots * V));
  int64_t queued = 0;                               // next prompt to admit
  double prefill_total = 0, side_evict_seconds = 0, callback_total = 0;  // callback: the caller's on_finish time
  const double t_start = now_seconds();

  // Admit queued prompts into the free rows: one prefill for all of them, in place when every row is free,
  // else in a side cache whose rows are then moved into the batch.
  auto admit = [&]() {
    std::vector<int64_t> rows;
    for (int64_t s = 0; s < n_slots && queued + static_cast<int64_t>(rows.size()) < n_prompts; ++s)
      if (slot_prompt[s] < 0) rows.push_back(s);
    if (rows.empty()) return false;
    const double t0 = now_seconds();
    const int64_t g = static_cast<int64_t>(rows.size());
    std::vector<const std::vector<int32_t>*> ps;
    for (int64_t i = 0; i < g; ++i) {
      const int64_t pi = queued + i;
      ps.push_back(&prompts[pi]);
      res[pi].prompt_ids = prompts[pi];
      res[pi].seed = opt.seed;
      res[pi].sequence_index = static_cast<int64_t>(stream_of(pi));
      decoders[pi].emplace(tokenizer_, opt.skip_special_tokens);
    }
    if (g == n_slots) {  // every row free (and reset): rows[i] == i
      for (int64_t i = 0; i < g; ++i) evictor.set_stream(i, stream_of(queued + i));
      prefill(model_, ps, kv, evictor, opt.prefill_chunk, pad_id, last_logits.data());
    } else {
      cache::KvCache side = model_.make_cache(g, cap, kv_dtype);
      evict::Evictor side_ev = make_evictor(g);
      for (int64_t i = 0; i < g; ++i) side_ev.set_stream(i, stream_of(queued + i));
      std::vector<float> lg(static_cast<size_t>(g * V));
      prefill(model_, ps, side, side_ev, opt.prefill_chunk, pad_id, lg.data());
      for (int64_t i = 0; i < g; ++i) {
        kv.copy_sequence(rows[i], side, i);
        evictor.import_sequence(rows[i], side_ev, i);
        std::memcpy(last_logits.data() + rows[i] * V, lg.data() + i * V, sizeof(float) * V);
      }
      side_evict_seconds += side_ev.stats().seconds;
    }
    const double t1 = now_seconds();
    prefill_total += t1 - t0;
    for (int64_t i = 0; i < g; ++i) {
      slot_prompt[rows[i]] = queued + i;
      fresh[rows[i]] = 1;
      started[queued + i] = t1;
    }
    queued += g;
    return true;
  };

  auto finish = [&](int64_t s, const char* reason) {
    const int64_t pi = slot_prompt[s];
    GenerationResult& r = res[pi];
    r.finish_reason = reason;
    const std::string tail = decoders[pi]->finish();
    r.text += tail;
    if (stream && !tail.empty()) stream(pi, tail);
    decoders[pi].reset();
    const double now = now_seconds();
    r.prefill_seconds = prefill_total;
    r.decode_seconds = now - t_start - prefill_total - callback_total;
    r.tokens_per_s = now > started[pi] ? static_cast<double>(r.ids.size()) / (now - started[pi]) : 0.0;
    r.eviction_events = evictor.events(s);
    r.eviction_seconds = evictor.stats().seconds + side_evict_seconds;
    r.peak_entries = evictor.peak_entries(s);
    r.kv_storage_bytes = kv.storage_bytes();
    r.peak_kv_bytes = r.peak_entries * cfg.n_layer * cfg.n_head_kv * 2 * cfg.head_dim * kv_elem;
    slot_prompt[s] = -1;
    fresh[s] = 0;
    kv.clear(s);
    evictor.reset(s);
    if (on_finish) {
      on_finish(pi, r);
      callback_total += now_seconds() - now;
    }
  };

  // Sample the next token of every row with fresh logits; finished rows are freed and refilled.
  auto sample_fresh = [&]() {
    for (int64_t s = 0; s < n_slots; ++s) {
      if (!fresh[s]) continue;
      fresh[s] = 0;
      const int64_t pi = slot_prompt[s];
      GenerationResult& r = res[pi];
      if (static_cast<int64_t>(r.ids.size()) >= max_new_of(pi)) {  // max_new_tokens 0
        finish(s, "length");
        continue;
      }
      std::span<const float> lg(last_logits.data() + s * V, static_cast<size_t>(V));
      const int32_t tok = sampler.sample(lg, opt.seed, stream_of(pi), static_cast<uint64_t>(r.ids.size()));
      r.ids.push_back(tok);
      const std::string piece = decoders[pi]->put(tok);
      r.text += piece;
      if (stream && !piece.empty()) stream(pi, piece);
      if (std::find(eos.begin(), eos.end(), tok) != eos.end()) {
        finish(s, "eos");
      } else if (!opt.stop_strings.empty() &&
                 std::any_of(opt.stop_strings.begin(), opt.stop_strings.end(), [&](const std::string& st) {
                   return !st.empty() && r.text.find(st) != std::string::npos;
                 })) {
        finish(s, "stop_string");
      } else if (static_cast<int64_t>(r.ids.size()) >= max_new_of(pi)) {
        finish(s, "length");
      }
    }
  };

  admit();
  while (true) {
    do sample_fresh();
    while (admit());
    if (std::all_of(slot_prompt.begin(), slot_prompt.end(), [](int64_t p) { return p < 0; })) break;
    // one decode step for every row; free rows get a pad token that is popped right after
    at::Tensor ids = at::empty({n_slots, 1}, at::kLong), pos = at::empty({n_slots, 1}, at::kLong);
    int64_t* ip = ids.data_ptr<int64_t>();
    int64_t* pp = pos.data_ptr<int64_t>();
    std::vector<int64_t> real(n_slots, 1);
    for (int64_t s = 0; s < n_slots; ++s) {
      const int64_t pi = slot_prompt[s];
      if (pi < 0) {
        ip[s] = pad_id;
        pp[s] = 0;
        real[s] = 0;
      } else {
        ip[s] = res[pi].ids.back();
        pp[s] = static_cast<int64_t>(prompts[pi].size() + res[pi].ids.size()) - 1;
      }
    }
    evictor.begin_forward(pos, real);
    at::Tensor lg = model_.forward(ids, pos, kv, model::Logits::Last, tp);  // [n_slots, V]
    for (int64_t s = 0; s < n_slots; ++s) {
      if (slot_prompt[s] < 0) {
        kv.pop_back(s, 1);
        continue;
      }
      std::memcpy(last_logits.data() + s * V, lg[s].contiguous().data_ptr<float>(), sizeof(float) * V);
      fresh[s] = 1;
    }
    evictor.end_forward(kv);
  }
  return res;
}

}  // namespace fkv::runtime
