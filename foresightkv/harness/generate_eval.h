// Task accuracy under KV eviction (fkv-eval generate; foresightkv-spec.md §G.3, §G.4): k sampled
// responses per problem of an evaluation set, generated with the model's chat template, the protocol's
// prompt and sampling, and a policy/budget; graded with exactly the grader of `fkv-eval grade`
// (grading/grader.h: official extraction + math_equal, plus a strict boxed-only score). Reports avg@k
// pass@1 with a percentile-bootstrap 95 % CI over problems and, against a full-cache run with the same
// seed, the paired difference with its CI.
//
// Seeds (reproducible regardless of batching, resuming, offset or limit): one config seed S; sample j of
// problem i (i = 0-based line index of the problem in the data file, before offset/limit) draws its tokens
// from the sampler's Philox stream
//     stream = i * 1'000'003 + j            (key = S; runtime/sampler.h: counter = (step, stream))
// so a paired full-cache run with the same S draws from identical streams, and a resumed or re-batched
// run produces the same tokens as an uninterrupted one.
//
// Output: one JSON line per (problem, sample), appended and flushed as soon as the sample finishes (lines are
// in finish order; readers key them by (problem_index, sample_index)), fields in this order:
//   problem_id (the file's "id", else the index), problem_index, sample_index, seed, stream, dataset, policy,
//   budget, window, variant, prompt_tokens, response (decoded, special tokens skipped), length (generated
//   tokens, EOS included), finish_reason (eos|length|stop_string), extracted, correct, strict_extracted,
//   strict_correct (grading::grade, as `fkv-eval grade`), answer (as in the file), eviction_events, peak_kv_bytes,
//   tokens_per_s (this sample's tokens / its own decode wall time), prefill_seconds, decode_seconds,
//   eviction_seconds (the wall times its generate call had spent when the sample finished; the call's last
//   sample carries the call's totals), batch_first_sample, batch_size, config_hash, batch_first_problem
//   (batch_first_problem/_sample: the first (problem, sample) of the generate call; batch_size: its rows).
// Scheduling (config "scheduling"): "continuous" (default) runs one generate call over all missing pairs in
// order with `batch` rows decoding together; a finished row is refilled with the next pair before the next
// decode step (runtime/generator.h). "static" cuts the pairs into batches of up to `batch` that run until their
// longest sample ends. Either way batches may span problems (prompts of different lengths share a forward
// batch). A sample's RNG stream never depends on its batch; its logits may differ from a differently batched
// run by fp32 summation order (the matrix kernels pick their blocking by the number of rows), so a greedy
// sample can flip at a near-tie.
// A run on an existing output resumes: a torn last line (a write cut by a crash) is dropped (the file is
// rewritten atomically without it), every line must carry this run's config_hash (else InvalidArgument), and
// only the missing (problem_index, sample_index) pairs are generated. config_hash = sha256 of
// {"config": resolved config without data_dir/limit/offset/samples/batch/scheduling, "model_sha256",
// "dataset_sha256"} plus "weights" / "activations" / "backend" when they are not the defaults (native / f32 /
// native):
// everything that decides a sample's tokens, nothing that only selects which samples exist or how they are
// batched, so a run can be extended to more problems or samples in place.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "foresightkv/core/json.h"
#include "foresightkv/evict/config.h"
#include "foresightkv/model/weights.h"
#include "foresightkv/runtime/sampler.h"

namespace fkv::harness {

/// The §G.3 user-turn instruction (run_math.py), placed before the problem.
inline constexpr const char* kProtocolPromptPrefix =
    "Please solve the following problem step by step and put the final answer within \\boxed{}.\n";

struct PromptOptions {
  std::string prefix = kProtocolPromptPrefix;  // user turn = prefix + problem + suffix
  std::string suffix;
  std::string chat_template;                   // family override ("" = the tokenizer's; "none" = no template)
  std::optional<bool> enable_thinking;         // qwen3 enable_thinking (unset = template default: on)
  bool add_special_tokens = false;             // tokenize the rendered prompt with the post-processor (BOS)

  json to_json() const;
  /// Strict keys: prefix, suffix, chat_template, enable_thinking (bool or null), add_special_tokens.
  static PromptOptions from_json(const json& j);
};

struct GenerateEvalConfig {
  std::string dataset = "gsm8k";   // gsm8k | aime24 | aime25 | amc23 | gpqa (file <data_dir>/eval/<file>.jsonl)
  std::string problems_file;       // "" = the dataset's file under data_dir; else this JSONL (dataset = grading rules)
  std::string data_dir;            // "" = $FKV_DATA_DIR, else <repo root>/../shared/data
  int64_t limit = 0;               // problems after offset (0 = all)
  int64_t offset = 0;              // first problem (0-based line index in the file)
  int64_t samples = 1;             // k samples per problem
  uint64_t seed = 0;               // sampler key; see the stream rule above
  int64_t max_new_tokens = 512;
  int64_t max_length = 0;          // prompt + generated tokens cap (official --max_length); 0 = none
  runtime::SamplingParams sampling = runtime::SamplingParams::greedy();
  int64_t batch = 0;               // (problem, sample) pairs decoded together (0 = samples); may span problems
  std::string scheduling = "continuous";  // continuous: a finished row takes the next pair; static: batch by batch
  int64_t prefill_chunk = 512;
  std::string kv_dtype = "f32";    // f32 | f16
  PromptOptions prompt;
  evict::EvictionConfig eviction;

  /// {"dataset", "data_dir", "limit", "offset", "samples", "seed", "max_new_tokens", "max_length",
  ///  "sampling": {"greedy", "temperature", "top_p", "top_k", "min_p"}, "batch", "scheduling", "prefill_chunk",
  ///  "kv_dtype", "prompt": {...}, "eviction": {...}}
  json to_json() const;
  /// Strict keys (the ones to_json writes, plus "comment"); absent keys keep the defaults above.
  /// "sampling": {"greedy": true} is argmax; otherwise temperature (default 1), top_p, top_k, min_p.
  static GenerateEvalConfig from_json(const json& j);
  static GenerateEvalConfig load(const std::string& path);
  /// Defaults filled (data_dir absolute, batch, eviction.resolved()) and validated; throws InvalidArgument.
  GenerateEvalConfig resolved() const;
};

/// Sampler stream of sample `sample` of problem `problem_index` (see the header comment).
inline uint64_t sample_stream(int64_t problem_index, int64_t sample) {
  return static_cast<uint64_t>(problem_index) * 1'000'003ULL + static_cast<uint64_t>(sample);
}

/// The repository root: $FKV_ROOT, else the first ancestor of the executable, then of the working directory,
/// that holds configs/prompts.json; "" when none.
std::string repo_root();
/// $FKV_DATA_DIR, else <repo root>/../shared/data.
std::string default_data_dir();
/// The data file of a dataset name (tries <dir>/eval/<file>.jsonl, then <dir>/<file>.jsonl).
std::string dataset_file(const std::string& data_dir, const std::string& dataset);

struct Problem {
  int64_t index = 0;   // 0-based line index in the file
  json id;             // the file's "id" when present, else the index
  std::string question;
  json answer;         // ground truth as stored in the file ("answer", or "output" for gpqa)
};
/// Non-blank lines of a dataset file; the question is "problem", else "question", else "input".
std::vector<Problem> read_problems(const std::string& path);

/// sha256 of a model file, or of "<relative name> <sha256>\n" over the sorted files of a model directory.
std::string model_sha256(const std::string& path);

// ---- statistics -----------------------------------------------------------------------------------------

struct Interval {
  double estimate = 0, low = 0, high = 0;
};

/// Percentile bootstrap over groups (problems): group g contributes sum[g] over count[g] items; a resample
/// draws groups with replacement and its statistic is sum of sums / sum of counts. 95 % by default; indices
/// come from Philox (seed), so the interval is deterministic for a seed. estimate = the full-sample statistic.
/// Percentiles interpolate linearly (numpy's default). Empty input gives zeros.
Interval bootstrap_ci(const std::vector<double>& sum, const std::vector<int64_t>& count, uint64_t seed,
                      int64_t resamples = 2000, double level = 0.95);

/// p-th percentile (0..100) with linear interpolation (numpy default); 0 for an empty vector.
double percentile(std::vector<double> v, double p);

// ---- runs -------------------------------------------------------------------------------------------------

struct GenerateEvalRun {
  std::string model;               // .gguf / HF directory / registry name
  // How the model is loaded and run (resolved by run_generate_eval with model::resolve_load_options). Whatever is
  // not the CPU default joins the config hash (weights f32/bf16, activations q8, backend aten, dtype bf16, and a
  // GPU as model::device_kind, without its index): those change the samples' rounding.
  model::LoadOptions load;
  std::string output;              // per-sample JSONL (appended; resumed)
  std::string summary;             // "" = output without ".jsonl" + ".summary.json"
  std::string paired_with;         // full-cache JSONL of the same config seed ("" = none)
  // Inspection ("" = none; not part of the config hash): one JSON line per sample generated by this call,
  // appended when the sample is written: {"problem_index", "sample_index", "stream", "policy", "budget",
  // "window", "config_hash", "prompt_tokens", "events": [{"event", "layer", "at", "n", "dropped": [[positions
  // of KV head 0], ...]}]}: every eviction decision of the sample, with the original positions it dropped; "at"
  // is the newest position in the cache when it was taken (the token whose forward triggered it), "n" the live
  // entries before it.
  std::string eviction_log;
};

/// Reads a per-sample JSONL. With repair, a torn last line (invalid JSON, or a valid object missing its
/// newline) is dropped / completed and the file rewritten atomically; any other invalid line throws
/// FormatError naming the file and line.
std::vector<json> read_sample_lines(const std::string& path, bool repair = false);

/// Summary of per-sample rows (see run_generate_eval for the fields), over the rows whose problem is in
/// `problems` and whose sample_index < samples. `paired_rows` (may be empty) adds "paired".
json summarize(const GenerateEvalConfig& resolved, const std::vector<json>& rows,
               const std::vector<int64_t>& problems, const std::vector<json>* paired_rows = nullptr,
               const std::string& paired_path = "");

/// Generates the missing samples, appends them to run.output, writes the summary atomically and returns it:
/// {"config", "model": {"path", "sha256"}, "config_hash", "seed", "dataset", "dataset_file", "dataset_sha256",
///  "n_problems", "samples", "n_samples", "accuracy", "ci_low", "ci_high", "strict_accuracy", "strict_ci_low",
///  "strict_ci_high", "mean_length", "p90_length", "mean_prompt_tokens", "finish_reasons", "tokens_per_s",
///  "prefill_seconds", "decode_seconds", "eviction_seconds", "peak_kv_bytes", "eviction_time_share", "output",
///  "generated_now", "rows", ["paired": {"against", "against_policy", "n_problems", "n_pairs", "diff", "ci_low",
///  "ci_high", "accuracy", "accuracy_against"}]}
/// Accuracies are fractions in [0, 1]; accuracy = correct / samples over the selection (avg@k pass@1). Times are
/// per generate call (batch = (batch_first_problem, batch_first_sample); the maximum over the call's rows is its
/// total) and summed over calls: tokens_per_s = generated tokens / decode seconds, eviction_time_share = eviction
/// seconds / (prefill + decode seconds) (evictions also follow prefill chunks). peak_kv_bytes = max over samples.
/// paired: over the (problem, sample) pairs present in both runs, diff = accuracy here - accuracy there, CI by a
/// paired bootstrap over problems; the other run must have the same seed and dataset.
json run_generate_eval(const GenerateEvalConfig& config, const GenerateEvalRun& run);

}  // namespace fkv::harness
