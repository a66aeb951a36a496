#include "foresightkv/runtime/generator.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "foresightkv/core/error.h"
#include "foresightkv/core/timer.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/runtime/evictor_taps.h"

namespace fkv::runtime {

Generator::Generator(const model::Transformer& model, const text::Tokenizer& tokenizer)
    : model_(model), tokenizer_(tokenizer) {}

std::vector<GenerationResult> Generator::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                  const GenerateOptions& opt, const StreamCallback& stream) const {
  FKV_CHECK_ARG(!prompts.empty(), "generate: no prompts");
  FKV_CHECK_ARG(opt.max_new_tokens >= 0 && opt.prefill_chunk > 0, "generate: bad max_new_tokens {} or chunk {}",
                opt.max_new_tokens, opt.prefill_chunk);
  opt.sampling.validate();
  FKV_CHECK_ARG(opt.stream_ids.empty() || opt.stream_ids.size() == prompts.size(),
                "generate: {} stream ids for {} prompts", opt.stream_ids.size(), prompts.size());
  const auto& cfg = model_.config();
  const int64_t n_seq = static_cast<int64_t>(prompts.size());
  // EOS: the caller's list, else the union of the tokenizer's and the model config's (generation_config
  // lists e.g. Qwen3's <|endoftext|> next to <|im_end|>).
  std::vector<int32_t> eos = opt.eos_ids;
  if (eos.empty()) {
    eos = tokenizer_.eos_ids();
    for (int64_t e : cfg.eos_ids)
      if (std::find(eos.begin(), eos.end(), static_cast<int32_t>(e)) == eos.end()) eos.push_back(static_cast<int32_t>(e));
  }
  int64_t max_prompt = 0;
  for (const auto& p : prompts) {
    FKV_CHECK_ARG(!p.empty(), "generate: empty prompt");
    for (int32_t id : p)
      FKV_CHECK_ARG(id >= 0 && id < cfg.n_vocab, "generate: prompt token {} outside the vocabulary [0, {})", id,
                    cfg.n_vocab);
    max_prompt = std::max<int64_t>(max_prompt, static_cast<int64_t>(p.size()));
  }
  // Vocabulary padding rows of the embedding (ids >= tokenizer size) are never sampled.
  Sampler sampler(opt.sampling, tokenizer_.vocab_size());
  const int64_t pad_id = eos.empty() || eos.front() < 0 ? 0 : eos.front();  // (a -1 "never stop" id is no token)
  evict::Evictor evictor(opt.eviction, n_seq, cfg.n_layer, cfg.n_head_q, cfg.n_head_kv, cfg.head_dim);
  const int64_t full_cap = max_prompt + opt.max_new_tokens + opt.prefill_chunk;
  const int64_t cap =
      evictor.enabled() ? std::min(full_cap, evictor.config().capacity_for_chunk(std::min(opt.prefill_chunk, max_prompt))) : full_cap;
  cache::KvCache kv = model_.make_cache(n_seq, cap, opt.kv_f16 ? at::kHalf : at::kFloat);
  EvictorTaps taps(evictor);
  model::ForwardTaps* tp = evictor.enabled() ? &taps : nullptr;

  std::vector<GenerationResult> res(n_seq);
  std::vector<text::StreamDecoder> decoders;
  for (int64_t s = 0; s < n_seq; ++s) {
    res[s].prompt_ids = prompts[s];
    res[s].seed = opt.seed;
    res[s].sequence_index = opt.stream_ids.empty() ? s : static_cast<int64_t>(opt.stream_ids[s]);
    decoders.emplace_back(tokenizer_, opt.skip_special_tokens);
  }

  // ---- prefill: chunks over the longest prompt; shorter prompts are padded and the padding popped.
  const double t0 = now_seconds();
  std::vector<float> last_logits(static_cast<size_t>(n_seq * cfg.n_vocab));
  for (int64_t start = 0; start < max_prompt; start += opt.prefill_chunk) {
    const int64_t T = std::min(opt.prefill_chunk, max_prompt - start);
    at::Tensor ids = at::empty({n_seq, T}, at::kLong), pos = at::empty({n_seq, T}, at::kLong);
    std::vector<int64_t> real(n_seq, 0);
    for (int64_t s = 0; s < n_seq; ++s) {
      const int64_t len = static_cast<int64_t>(prompts[s].size());
      for (int64_t i = 0; i < T; ++i) {
        const int64_t p = start + i;
        ids[s][i] = p < len ? prompts[s][p] : pad_id;
        pos[s][i] = p;
      }
      real[s] = std::clamp<int64_t>(len - start, 0, T);
    }
    // logits only at the last prompt row of the sequences whose prompt ends in this chunk
    std::vector<int64_t> last(n_seq, 0);
    std::vector<bool> ends(n_seq, false);
    bool any_ends = false;
    for (int64_t s = 0; s < n_seq; ++s) {
      ends[s] = real[s] > 0 && start + real[s] == static_cast<int64_t>(prompts[s].size());
      last[s] = ends[s] ? real[s] - 1 : 0;
      any_ends = any_ends || ends[s];
    }
    evictor.begin_forward(pos, real);
    at::Tensor lg = any_ends ? model_.forward(ids, pos, kv, model::Logits::Last, tp, last)  // [n_seq, V]
                             : model_.forward(ids, pos, kv, model::Logits::None, tp);
    for (int64_t s = 0; s < n_seq; ++s) {
      if (real[s] < T) kv.pop_back(s, T - real[s]);
      if (ends[s])
        std::memcpy(last_logits.data() + s * cfg.n_vocab, lg[s].contiguous().data_ptr<float>(),
                    sizeof(float) * cfg.n_vocab);
    }
    evictor.end_forward(kv);
  }
  const double t1 = now_seconds();

  // ---- decode
  std::vector<bool> done(n_seq, opt.max_new_tokens == 0);
  for (int64_t s = 0; s < n_seq; ++s)
    if (done[s]) res[s].finish_reason = "length";
  int64_t step = 0;
  while (true) {
    // sample the next token of every live sequence from its last logits
    std::vector<int64_t> next(n_seq, pad_id);
    bool any = false;
    for (int64_t s = 0; s < n_seq; ++s) {
      if (done[s]) continue;
      std::span<const float> lg(last_logits.data() + s * cfg.n_vocab, static_cast<size_t>(cfg.n_vocab));
      const uint64_t rng_stream = opt.stream_ids.empty() ? static_cast<uint64_t>(s) : opt.stream_ids[s];
      const int32_t tok = sampler.sample(lg, opt.seed, rng_stream, static_cast<uint64_t>(step));
      res[s].ids.push_back(tok);
      const std::string piece = decoders[s].put(tok);
      res[s].text += piece;
      if (stream && !piece.empty()) stream(s, piece);
      next[s] = tok;
      if (std::find(eos.begin(), eos.end(), tok) != eos.end()) {
        done[s] = true;
        res[s].finish_reason = "eos";
      } else if (!opt.stop_strings.empty() &&
                 std::any_of(opt.stop_strings.begin(), opt.stop_strings.end(), [&](const std::string& st) {
                   return !st.empty() && res[s].text.find(st) != std::string::npos;
                 })) {
        done[s] = true;
        res[s].finish_reason = "stop_string";
      } else if (static_cast<int64_t>(res[s].ids.size()) >= opt.max_new_tokens) {
        done[s] = true;
        res[s].finish_reason = "length";
      }
      any = any || !done[s];
    }
    if (!any) break;
    // one decode step for the batch; finished sequences get a pad token that is popped right after
    at::Tensor ids = at::empty({n_seq, 1}, at::kLong), pos = at::empty({n_seq, 1}, at::kLong);
    std::vector<int64_t> real(n_seq, 1);
    for (int64_t s = 0; s < n_seq; ++s) {
      ids[s][0] = next[s];
      pos[s][0] = static_cast<int64_t>(prompts[s].size() + res[s].ids.size()) - 1;
      if (done[s]) real[s] = 0;
    }
    evictor.begin_forward(pos, real);
    at::Tensor lg = model_.forward(ids, pos, kv, model::Logits::Last, tp);  // [n_seq, V]
    for (int64_t s = 0; s < n_seq; ++s) {
      if (done[s]) {
        kv.pop_back(s, 1);
        continue;
      }
      std::memcpy(last_logits.data() + s * cfg.n_vocab, lg[s].contiguous().data_ptr<float>(),
                  sizeof(float) * cfg.n_vocab);
    }
    evictor.end_forward(kv);
    ++step;
  }
  const double t2 = now_seconds();
  for (int64_t s = 0; s < n_seq; ++s) {
    const std::string tail = decoders[s].finish();
    res[s].text += tail;
    if (stream && !tail.empty()) stream(s, tail);
    res[s].prefill_seconds = t1 - t0;
    res[s].decode_seconds = t2 - t1;
    res[s].tokens_per_s = t2 > t1 ? static_cast<double>(res[s].ids.size()) / (t2 - t1) : 0.0;
    res[s].eviction_events = evictor.events(s);
    res[s].eviction_seconds = evictor.stats().seconds;
    res[s].peak_entries = evictor.peak_entries(s);
    res[s].kv_storage_bytes = kv.storage_bytes();
    res[s].peak_kv_bytes = res[s].peak_entries * cfg.n_layer * cfg.n_head_kv * 2 * cfg.head_dim *
                           static_cast<int64_t>(c10::elementSize(kv.options().dtype));
  }
  return res;
}

}  // namespace fkv::runtime
