// Generation loop on the runtime's KV cache: chunked prefill, token-by-token decode for a batch of
// sequences that finish at different times, stop on EOS ids / stop strings / max new tokens,
// optional streaming of decoded text. Prompts of different lengths share one batched forward: the
// shorter ones are padded inside a chunk and the padding is popped from the cache right after, so
// every sequence sees exactly its own tokens at its own positions. Sampling: runtime/sampler.h, one
// RNG stream per (seed, sequence index), counter = the sequence's own token index, so tokens do not
// depend on batch composition.
//
// Scheduling: with max_batch = 0 (or >= the number of prompts) every prompt is prefilled at once and
// decoded in one batch until the last one finishes (finished rows ride along as padding). With fewer
// slots than prompts the batch is continuous: max_batch rows decode together and a row whose sequence
// finished is refilled with the next prompt before the next decode step. Newly admitted prompts are
// prefilled together in a separate cache (and eviction state) of their own and then moved into the free
// rows (KvCache::copy_sequence, Evictor::import_sequence), so a prompt costs its own rows only; while
// they prefill the running rows wait. A sequence's tokens are those of any other schedule up to fp32
// summation order (the matrix kernels block by the number of rows).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "foresightkv/evict/config.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/model/transformer.h"
#include "foresightkv/runtime/sampler.h"
#include "foresightkv/text/tokenizer.h"

namespace fkv::runtime {

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  std::vector<int64_t> max_new_tokens_each;  // per prompt (empty: max_new_tokens for every prompt)
  int64_t max_batch = 0;                  // rows decoded together; 0 or >= prompts: all at once, else continuous
  SamplingParams sampling = SamplingParams::greedy();
  uint64_t seed = 0;
  std::vector<uint64_t> stream_ids;       // RNG stream per prompt (empty: the prompt's index); lets a resumed or
                                          // re-batched run draw exactly the tokens of the original one
  std::vector<int32_t> eos_ids;           // empty: union of the tokenizer's and the model config's EOS ids
  std::vector<std::string> stop_strings;  // stop when the generated text contains one (kept in text)
  int64_t prefill_chunk = 512;
  bool skip_special_tokens = true;        // for the returned text and the stream
  bool kv_f16 = false;                    // fp16 KV cache (half the bytes) instead of fp32
  evict::EvictionConfig eviction;         // policy "full" (default) never evicts; see evict/evictor.h
  evict::EvictionObserver eviction_observer;  // sees every eviction decision (inspection; EvictionRecord::stream
                                              // is the prompt's stream); changes nothing that is generated
};

struct GenerationResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> ids;         // generated ids (EOS included when it ended the sequence)
  std::string text;                 // decoded generated text
  std::string finish_reason;        // "eos" | "stop_string" | "length"
  uint64_t seed = 0;
  int64_t sequence_index = 0;
  // Wall seconds the whole generate() call had spent in prefill / in decode when this sequence finished
  // (for the last sequence to finish: the call's totals). Eviction seconds likewise (all sequences).
  double prefill_seconds = 0, decode_seconds = 0;
  double tokens_per_s = 0;          // this sequence's generated tokens / its own decode wall time
  // Eviction: events of this sequence, wall seconds spent evicting (all sequences, as above),
  // peak live entries of any (layer, KV head), KV storage allocated for the batch and the peak live
  // KV bytes of this sequence (peak entries x layers x KV heads x 2 x head_dim x element size).
  int64_t eviction_events = 0;
  double eviction_seconds = 0;
  int64_t peak_entries = 0;
  int64_t kv_storage_bytes = 0;
  int64_t peak_kv_bytes = 0;
};

/// Called for every newly decodable piece of text of sequence `seq` (the prompt's index).
using StreamCallback = std::function<void(int64_t seq, const std::string& text)>;
/// Called once per sequence when it finishes (in finish order), with its final result.
using FinishCallback = std::function<void(int64_t seq, const GenerationResult& result)>;

class Generator {
 public:
  Generator(const model::Transformer& model, const text::Tokenizer& tokenizer);

  /// Generate for each prompt (token ids). Sequence i samples with RNG stream (options.seed, i) unless
  /// options.stream_ids says otherwise. Results are in prompt order.
  std::vector<GenerationResult> generate(const std::vector<std::vector<int32_t>>& prompts,
                                         const GenerateOptions& options, const StreamCallback& stream = {},
                                         const FinishCallback& on_finish = {}) const;

 private:
  const model::Transformer& model_;
  const text::Tokenizer& tokenizer_;
};

}  // namespace fkv::runtime
