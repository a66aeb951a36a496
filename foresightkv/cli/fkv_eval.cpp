// fkv-eval: evaluation tools. Subcommands: grade (score JSONL responses with the protocol's grader,
// foresightkv-spec.md §G.4). Thin: parsing and printing only; the work lives in foresightkv/grading/.
// New subcommands (fidelity, generate, ...) are one entry in commands() plus a cmd_* function.
#include <iostream>
#include <string>
#include <vector>

#include "foresightkv/cli/model_options.h"
#include "foresightkv/cli/args.h"
#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/harness/fidelity.h"
#include "foresightkv/model/weights.h"
#include "foresightkv/trace/trace_file.h"
#include "foresightkv/grading/grade_jsonl.h"
#include "foresightkv/grading/grader.h"
#include "foresightkv/harness/generate_eval.h"
#include "foresightkv/core/logging.h"
#include <ATen/Parallel.h>

using fkv::cli::Args;
using fkv::cli::Command;
using fkv::cli::OptionSpec;

namespace {

// fidelity: teacher-forced trace fidelity under eviction (foresightkv/harness/fidelity.h).
int cmd_fidelity(const Args& a) {
  at::set_num_threads(static_cast<int>(a.get_int("threads", 2)));
  const std::string model_path = fkv::model::resolve_model_path(a.require("model"));
  auto model = fkv::model::Transformer::load(model_path, fkv::cli::load_options(a));
  const std::string traces_path = a.require("traces");
  const fkv::trace::TraceSet set = fkv::trace::read_trace_set(traces_path);
  fkv::harness::FidelityOptions o;
  for (const std::string& p : fkv::cli::split_list(a.require("policies"))) o.policies.push_back(p);
  if (a.has("budgets")) o.budgets = fkv::cli::parse_int_list(a.get("budgets"), "--budgets");
  o.base.window = a.get_int("window", 0);
  o.base.variant = fkv::evict::parse_variant(a.get("variant", "intended"));
  o.base.protect = a.get_int("protect", -1);
  o.base.query_window = a.get_int("query-window", -1);
  o.base.seed = static_cast<uint64_t>(a.get_int("seed", 0));
  o.base.judge = a.get("judge", "");
  o.model_path = model_path;
  for (const auto& p : o.policies)  // the committed-judge lookup needs the model's sha256
    if (fkv::evict::is_learned_policy(p) && o.model_sha256.empty()) o.model_sha256 = fkv::harness::model_sha256(model_path);
  o.batch = a.get_int("batch", 4);
  o.limit = a.get_int("limit", 0);
  o.kv_f16 = a.get("kv-dtype", "f32") == "f16";
  FKV_CHECK_ARG(a.get("kv-dtype", "f32") == "f32" || o.kv_f16, "--kv-dtype must be f32 or f16");
  o.per_token_path = a.get("per-token", "");
  const fkv::harness::FidelityReport rep = fkv::harness::run_fidelity(*model, set, o);
  fkv::json rows = fkv::json::array();
  for (const auto& r : rep.rows) rows.push_back(r.to_json());
  fkv::json out = {{"kind", "fidelity"},
                   {"model", {{"path", model_path}, {"sha256", fkv::sha256_file(model_path)}}},
                   {"traces", {{"path", traces_path}, {"count", rep.traces}, {"header", set.header}}},
                   {"tokens", rep.tokens},
                   {"window", o.base.window},
                   {"variant", fkv::evict::to_string(o.base.variant)},
                   {"seed", o.base.seed},
                   {"full_seconds", rep.full_seconds},
                   {"rows", rows}};
  if (a.has("output")) fkv::write_file_atomic(a.get("output"), out.dump(2) + "\n");
  // human-readable table on stderr, JSON on stdout
  std::cerr << fmt::format("{:<13} {:>6} {:>5} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9}\n", "policy", "budget", "L",
                           "lm_ratio", "dNLL", "KL", "top1", "low_ent", "high_ent");
  for (const auto& r : rep.rows)
    std::cerr << fmt::format("{:<13} {:>6} {:>5} {:>9.4f} {:>9.4f} {:>8.4f} {:>7.4f} {:>+9.3f} {:>+9.3f}\n", r.policy,
                             r.budget, r.window, r.lm_loss_ratio, r.mean_delta_nll, r.kl, r.top1_agreement,
                             r.low_entropy_loss_increase, r.high_entropy_loss_increase);
  std::cout << out.dump() << "\n";
  return 0;
}

int cmd_grade(const Args& a) {
  fkv::grading::GradeJsonlOptions o;
  o.input = a.require("input");
  o.output = a.require("output");
  o.dataset = fkv::grading::parse_dataset(a.get("dataset", "math"));
  o.field = a.get("field", "response");
  const fkv::grading::GradeSummary s = fkv::grading::grade_jsonl(o);
  std::cout << s.to_json_line() << "\n";
  return 0;
}

// fkv-eval generate: options override the --config file's fields, then the runner does the work.
int cmd_generate(const Args& a) {
  namespace er = fkv::harness;
  const int64_t threads = a.get_int("threads", 2);
  FKV_CHECK_ARG(threads > 0, "--threads must be positive, got {}", threads);
  at::set_num_threads(static_cast<int>(threads));
  er::GenerateEvalConfig c = a.has("config") ? er::GenerateEvalConfig::load(a.get("config")) : er::GenerateEvalConfig{};
  if (a.has("dataset")) c.dataset = a.get("dataset");
  if (a.has("problems")) c.problems_file = a.get("problems");
  if (a.has("data-dir")) c.data_dir = a.get("data-dir");
  if (a.has("samples")) c.samples = a.get_int("samples", c.samples);
  if (a.has("limit")) c.limit = a.get_int("limit", c.limit);
  if (a.has("offset")) c.offset = a.get_int("offset", c.offset);
  if (a.has("seed")) {
    const int64_t seed = a.get_int("seed", 0);
    FKV_CHECK_ARG(seed >= 0, "--seed must be >= 0, got {}", seed);
    c.seed = static_cast<uint64_t>(seed);
  }
  if (a.has("max-new-tokens")) c.max_new_tokens = a.get_int("max-new-tokens", c.max_new_tokens);
  if (a.has("max-length")) c.max_length = a.get_int("max-length", c.max_length);
  const bool sampled = a.has("temperature") || a.has("top-p") || a.has("top-k") || a.has("min-p");
  FKV_CHECK_ARG(!(a.flag("greedy") && sampled), "--greedy excludes --temperature/--top-p/--top-k/--min-p");
  if (a.flag("greedy")) c.sampling = fkv::runtime::SamplingParams::greedy();
  if (a.has("temperature")) c.sampling.temperature = static_cast<float>(a.get_double("temperature", 1.0));
  if (sampled && !a.has("temperature") && c.sampling.is_greedy()) c.sampling.temperature = 1.0f;
  if (a.has("top-p")) c.sampling.top_p = static_cast<float>(a.get_double("top-p", 1.0));
  if (a.has("top-k")) c.sampling.top_k = static_cast<int32_t>(a.get_int("top-k", 0));
  if (a.has("min-p")) c.sampling.min_p = static_cast<float>(a.get_double("min-p", 0.0));
  if (a.has("batch")) c.batch = a.get_int("batch", c.batch);
  if (a.has("scheduling")) c.scheduling = a.get("scheduling");
  if (a.has("chunk")) c.prefill_chunk = a.get_int("chunk", c.prefill_chunk);
  if (a.has("kv-dtype")) c.kv_dtype = a.get("kv-dtype");
  if (a.has("chat-template")) c.prompt.chat_template = a.get("chat-template");
  if (a.has("thinking")) {
    const std::string t = a.get("thinking");
    FKV_CHECK_ARG(t == "on" || t == "off", "--thinking on|off, got '{}'", t);
    c.prompt.enable_thinking = t == "on";
  }
  if (a.has("policy")) c.eviction.policy = a.get("policy");
  if (a.has("budget")) c.eviction.budget = a.get_int("budget", c.eviction.budget);
  if (a.has("window")) c.eviction.window = a.get_int("window", c.eviction.window);
  if (a.has("protect")) c.eviction.protect = a.get_int("protect", c.eviction.protect);
  if (a.has("query-window")) c.eviction.query_window = a.get_int("query-window", c.eviction.query_window);
  if (a.has("variant")) c.eviction.variant = fkv::evict::parse_variant(a.get("variant"));
  if (a.has("judge")) c.eviction.judge = a.get("judge");
  er::GenerateEvalRun r;
  r.model = a.require("model");
  r.load = fkv::cli::load_options(a);
  r.output = a.require("output");
  r.summary = a.get("summary", "");
  r.paired_with = a.get("paired-with", "");
  r.eviction_log = a.get("eviction-log", "");
  const fkv::json s = er::run_generate_eval(c, r);
  std::cout << s.dump(2) << "\n";
  return 0;
}

std::vector<Command> commands() {
  std::vector<Command> v = {
      {"fidelity",
       "fkv-eval fidelity --model PATH|NAME --traces FILE --policies full,h2o,... --budgets 64,128 --window L\n"
       "       [--variant intended|parity] [--protect N] [--query-window N] [--seed S] [--batch 4] [--limit N]\n"
       "       [--kv-dtype f32|f16] [--threads 2] [--output F.json] [--per-token F.jsonl]\n"
       "  Teacher-forced chunked forward (spec A.1): chunks of L tokens; after a chunk that leaves >= B + L entries the\n"
       "  policy evicts to B (newest L protected). Per response token: NLL under eviction and under the full cache\n"
       "  (same run, same chunks). One row per (policy, budget): lm_loss_ratio, mean_delta_nll, kl (full || evicted),\n"
       "  top1_agreement, low/high_entropy_loss_increase (bottom 80 % / top 20 % by full-cache entropy), tokens.\n"
       "  Traces: an fkv trace file (.safetensors, see docs/trace_format.md; needed for the golden policy) or JSONL\n"
       "  with one {\"prompt_ids\": [...], \"response_ids\": [...]} per line. JSON on stdout (and --output).\n"
       "options:",
       "LM-loss ratio, KL, top-1 agreement of eviction policies on teacher-forced traces",
       {{"model", true, "GGUF file, HF directory or registry name", ""},
        {"traces", true, "trace file (.safetensors) or JSONL of prompt_ids/response_ids", ""},
        {"policies", true, "comma list: full, streamingllm, h2o, snapkv, rkv, tova, knorm, random, golden, "
                           "foresightkv, foresightkv_topk", ""},
        {"judge", true, "judge checkpoint for foresightkv* (default: the committed judge for the model, nearest B/L)", ""},
        {"budgets", true, "comma list of budgets B (entries kept per layer and KV head)", ""},
        {"window", true, "eviction interval L (chunk length, also the protected newest entries)", ""},
        {"variant", true, "intended (the method) or parity (the official code's behaviour)", "intended"},
        {"protect", true, "newest entries never evicted (default: L; parity SnapKV/R-KV: 8)", ""},
        {"query-window", true, "observed recent queries for attention statistics (default per policy)", ""},
        {"seed", true, "seed of the random policy", "0"},
        {"batch", true, "traces per forward batch", "4"},
        {"limit", true, "use only the first N traces (0 = all)", "0"},
        {"kv-dtype", true, "KV cache storage f32 or f16", "f32"},
        {"threads", true, "CPU threads", "2"},
        {"output", true, "write the JSON summary here (atomically)", ""},
        {"per-token", true, "write per-token rows (JSONL) here", ""},
        {"help", false, "show this help", ""}},
       cmd_fidelity},
      {"grade",
       "fkv-eval grade --input F.jsonl --output G.jsonl [--dataset gsm8k|aime24|aime25|amc23|gpqa|math] "
       "[--field response]\n"
       "  Each input line is a JSON object with the response (--field) and \"answer\"; each output line is that\n"
       "  object plus \"extracted\", \"correct\", \"strict_extracted\", \"strict_correct\" (strict: only the last\n"
       "  \\boxed{...} counts). Blank lines are skipped. Prints {\"n\", \"accuracy\", \"strict_accuracy\"} with\n"
       "  accuracies as fractions in [0, 1]. Rules: docs/grading.md.\n"
       "options:",
       "grade model responses in a JSONL file (extraction + math_equal of the official grader)",
       {{"input", true, "JSONL with one {\"response\": ..., \"answer\": ...} object per line", ""},
        {"output", true, "JSONL written atomically, only when every line graded", ""},
        {"dataset", true, "ground-truth format: gsm8k (\"... #### N\"), aime24, aime25, amc23, gpqa (letters), math",
         "math"},
        {"field", true, "key of the model response in each object", "response"},
        {"help", false, "show this help", ""}},
       cmd_grade},
      {"generate",
       "fkv-eval generate --model PATH|NAME --output F.jsonl [--config configs/eval/X.json] [--dataset gsm8k]\n"
       "                  [--policy P --budget B --window L] [--samples K] [--limit N] [--seed S] [--paired-with FULL.jsonl]\n"
       "  Generates K samples per problem of ../shared/data/eval/<dataset>.jsonl with the model's chat template and\n"
       "  the spec §G.3 prompt under a KV eviction policy, grades them like `fkv-eval grade` (official + strict\n"
       "  boxed-only), appends one JSON line per sample to --output and resumes an interrupted run (only missing\n"
       "  (problem, sample) pairs are generated; a different config/model is refused). Sample j of problem i uses\n"
       "  the Philox stream i * 1000003 + j under --seed, so a full-cache run with the same seed is paired sample\n"
       "  by sample. Writes the summary (avg@k pass@1 with a bootstrap 95% CI, lengths, tokens/s, peak KV bytes,\n"
       "  eviction time share, [paired difference]) to --summary and prints it. Options override --config.\n"
       "options:",
       "task accuracy under KV eviction: sampled generation + grading, resumable, with bootstrap CIs",
       {{"model", true, ".gguf file, HF model directory, or registered name (configs/models)", ""},
        {"weights", true, "weight format in memory: native | f32 | bf16", "native"},
        {"activations", true, "f32 | q8 (int8 activations in decode-size products; part of the config hash)", "f32"},
        {"output", true, "per-sample JSONL (appended; an existing file of the same config is resumed)", ""},
        {"summary", true, "summary JSON (written atomically)", "OUTPUT minus .jsonl + .summary.json"},
        {"paired-with", true, "per-sample JSONL of a full-cache run with the same seed: adds the paired difference",
         ""},
        {"eviction-log", true,
         "inspection JSONL: every eviction decision of each sample generated now (layer, event, newest position, "
         "dropped original positions per KV head; scripts/flip_analysis.py reads it); no effect on the samples",
         ""},
        {"config", true, "config JSON (configs/eval/*.json, strict keys); the options below override it", ""},
        {"dataset", true, "gsm8k | aime24 | aime25 | amc23 | gpqa", "gsm8k"},
        {"problems", true, "problem JSONL to use instead of the dataset's file (the dataset picks the grading)", ""},
        {"data-dir", true, "directory holding eval/<dataset>.jsonl", "$FKV_DATA_DIR or <repo>/../shared/data"},
        {"limit", true, "number of problems after --offset (0 = all)", "0"},
        {"offset", true, "first problem (0-based line index)", "0"},
        {"samples", true, "samples per problem (k of avg@k)", "1"},
        {"seed", true, "sampler seed (sample j of problem i: stream i * 1000003 + j)", "0"},
        {"max-new-tokens", true, "maximum generated tokens", "512"},
        {"max-length", true, "cap on prompt + generated tokens (0 = none)", "0"},
        {"greedy", false, "greedy decoding (the default without --temperature)", ""},
        {"temperature", true, "sampling temperature", ""},
        {"top-p", true, "top-p", "1.0"},
        {"top-k", true, "top-k (0 = off)", "0"},
        {"min-p", true, "min-p", "0.0"},
        {"batch", true, "(problem, sample) pairs decoded together; batches span problems when larger than --samples", "samples"},
        {"scheduling", true, "continuous (a finished row takes the next pair) | static (batch by batch)", "continuous"},
        {"chunk", true, "prefill chunk", "512"},
        {"kv-dtype", true, "KV cache storage: f32 | f16", "f32"},
        {"chat-template", true, "chat template family override (qwen3, qwen2.5, deepseek-r1, smollm2, chatml, none)",
         ""},
        {"thinking", true, "qwen3 enable_thinking: on|off", "template default"},
        {"policy", true, "eviction policy: full|streamingllm|h2o|snapkv|rkv|tova|knorm|random|foresightkv|foresightkv_topk",
         "full"},
        {"judge", true, "judge checkpoint for foresightkv* (default: the committed judge for the model)", ""},
        {"budget", true, "KV budget B (entries per sequence, layer and KV head)", ""},
        {"window", true, "eviction interval L", ""},
        {"variant", true, "intended | parity", "intended"},
        {"protect", true, "newest entries never evicted (-1 = policy default)", "-1"},
        {"query-window", true, "queries the statistics see (-1 = policy default)", "-1"},
        {"threads", true, "CPU threads", "2"},
        {"log-level", true, "trace|debug|info|warn|error", "info"},
        {"help", false, "show this help", ""}},
       cmd_generate},
  };
  // the subcommands that load a model share --backend / --device / --dtype
  for (Command& c : v)
    if (std::string(c.name) == "fidelity" || std::string(c.name) == "generate") c.spec = fkv::cli::with_model_load(c.spec);
  return v;
}

}  // namespace

int main(int argc, char** argv) { return fkv::cli::run_subcommands("fkv-eval", argc, argv, commands()); }
