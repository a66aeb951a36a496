// fkv-model: inspect and run a model.  Subcommands: info, logits, tokenize, detokenize, generate, bench,
// bench-kernels.
// Thin: parsing and printing only; the work lives in model/ and runtime/.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <iostream>

#include "foresightkv/cli/args.h"
#include "foresightkv/core/error.h"
#include "foresightkv/evict/config.h"
#include "foresightkv/harness/generate_eval.h"
#include "foresightkv/judge/policy.h"
#include "foresightkv/core/json.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/io/npy.h"
#include "foresightkv/model/transformer.h"
#include "foresightkv/runtime/bench.h"
#include "foresightkv/runtime/generator.h"
#include "foresightkv/text/chat_template.h"
#include "foresightkv/text/tokenizer.h"
#include "foresightkv/core/file.h"
#include "foresightkv/cli/model_options.h"

#include <fstream>

using fkv::cli::Args;
using fkv::cli::Command;
using fkv::cli::OptionSpec;
using fkv::json;

namespace {

const std::vector<OptionSpec> kCommon = {
    {"model", true, "model: .gguf file, HF directory, or registered name", ""},
    {"weights", true, "weight format in memory: native | f32 | bf16", "native"},
    {"activations", true, "f32 | q8 (int8 activations in decode-size products, llama.cpp's scheme)", "f32"},
    {"threads", true, "CPU threads", "2"},
    {"kv-dtype", true, "KV cache storage: f32 | f16 | bf16 (aten backend)", "f32"},
    {"log-level", true, "trace|debug|info|warn|error", "info"},
    {"help", false, "show this help", ""},
};

std::vector<OptionSpec> with_common(std::vector<OptionSpec> v) {
  v.insert(v.end(), kCommon.begin(), kCommon.end());
  return fkv::cli::with_model_load(std::move(v));
}

std::unique_ptr<fkv::model::Transformer> load(const Args& a) {
  const fkv::model::LoadOptions lo = fkv::cli::load_options(a);
  at::set_num_threads(static_cast<int>(a.get_int("threads", 2)));
  return fkv::model::Transformer::load(a.require("model"), lo);
}

int cmd_info(const Args& a) {
  auto m = load(a);
  const auto& c = m->config();
  const auto& w = m->weights();
  const int64_t kv_f32 = 2 * c.n_layer * c.n_head_kv * c.head_dim * 4;
  json types = json::object();
  for (const auto& [name, count] : w.type_summary()) types[name] = count;
  json j = {{"path", w.source_path},
            {"format", w.format},
            {"architecture", fkv::io::arch_name(c.arch)},
            {"config", c.to_json()},
            {"n_params", w.n_params()},
            {"weight_bytes", w.bytes()},
            {"matrix_types", types},
            {"kv_bytes_per_token", {{"f32", kv_f32}, {"bf16", kv_f32 / 2}}}};
  if (a.flag("json")) {
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "model         " << w.source_path << " (" << w.format << ")\n"
              << "architecture  " << fkv::io::arch_name(c.arch) << ": " << c.n_layer << " layers, hidden " << c.hidden
              << ", heads " << c.n_head_q << " (kv " << c.n_head_kv << ", head_dim " << c.head_dim << "), ffn "
              << c.ffn_hidden << ", vocab " << c.n_vocab << "\n"
              << "rope          " << c.rope.type << ", theta " << c.rope.theta << "\n"
              << "parameters    " << w.n_params() << "\n"
              << "weight bytes  " << w.bytes() << "\n"
              << "matrix types  " << types.dump() << "\n"
              << "KV bytes/token " << kv_f32 << " (f32), " << kv_f32 / 2 << " (bf16)\n";
  }
  return 0;
}

int cmd_logits(const Args& a) {
  auto m = load(a);
  const std::vector<int64_t> ids = fkv::cli::parse_int_list(a.require("ids"), "--ids");
  const std::string out = a.require("out");
  const int64_t T = static_cast<int64_t>(ids.size());
  const int64_t chunk = a.get_int("chunk", T);
  FKV_CHECK_ARG(chunk > 0, "--chunk must be positive, got {}", chunk);
  fkv::cache::KvCache kv = m->make_cache(1, T, fkv::runtime::parse_kv_dtype(a.get("kv-dtype", "f32")));
  const int64_t V = m->config().n_vocab;
  std::vector<float> all(static_cast<size_t>(T * V));
  for (int64_t s = 0; s < T; s += chunk) {
    const int64_t n = std::min(chunk, T - s);
    at::Tensor idt = at::from_blob(const_cast<int64_t*>(ids.data()) + s, {1, n}, at::kLong).clone();
    at::Tensor pos = at::arange(s, s + n, at::kLong).view({1, n});
    at::Tensor lg = m->forward(idt, pos, kv, fkv::model::Logits::All).contiguous();
    std::memcpy(all.data() + s * V, lg.data_ptr<float>(), sizeof(float) * n * V);
  }
  fkv::io::write_npy_f32(out, all.data(), {T, V});
  FKV_LOG_INFO("wrote logits [{}, {}] to {}", T, V, out);
  return 0;
}

int cmd_bench(const Args& a) {
  auto m = load(a);
  fkv::runtime::BenchOptions o;
  if (a.has("contexts")) o.contexts = fkv::cli::parse_int_list(a.get("contexts"), "--contexts");
  o.decode_tokens = a.get_int("decode-tokens", o.decode_tokens);
  o.prefill_chunk = a.get_int("chunk", o.prefill_chunk);
  o.threads = a.get_int("threads", o.threads);
  o.repeats = a.get_int("repeats", o.repeats);
  o.kv_dtype = a.get("kv-dtype", "f32");
  json r = fkv::runtime::run_bench(*m, o);
  if (a.flag("json")) {
    std::cout << r.dump() << "\n";
  } else {
    std::printf("%-8s %14s %14s %14s\n", "context", "prefill tok/s", "decode tok/s", "peak RSS MiB");
    for (const auto& row : r["results"])
      std::printf("%-8lld %14.1f %14.1f %14.1f\n", static_cast<long long>(row["context"].get<int64_t>()),
                  row["prefill_tokens_per_s"].get<double>(), row["decode_tokens_per_s"].get<double>(),
                  row["peak_rss_bytes"].get<double>() / 1048576.0);
  }
  return 0;
}

int cmd_bench_kernels(const Args& a) {
  auto m = load(a);
  fkv::runtime::KernelBenchOptions o;
  if (a.has("n-tok")) o.n_tok = fkv::cli::parse_int_list(a.get("n-tok"), "--n-tok");
  if (a.has("contexts")) o.contexts = fkv::cli::parse_int_list(a.get("contexts"), "--contexts");
  o.threads = a.get_int("threads", o.threads);
  o.repeats = a.get_int("repeats", o.repeats);
  o.min_seconds = a.get_double("min-seconds", o.min_seconds);
  json r = fkv::runtime::run_kernel_bench(*m, o);
  if (a.flag("json")) {
    std::cout << r.dump() << "\n";
    return 0;
  }
  std::printf("%-12s %5s %-5s %7s %7s %5s %10s %10s %10s %10s\n", "matrix", "layer", "type", "rows", "cols", "n_tok",
              "f32 ms", "f32 GB/s", "q8 ms", "q8 GB/s");
  for (const auto& row : r["matmul"])
    std::printf("%-12s %5lld %-5s %7lld %7lld %5lld %10.3f %10.1f %10s %10s\n", row["kind"].get<std::string>().c_str(),
                static_cast<long long>(row["layer"].get<int64_t>()), row["type"].get<std::string>().c_str(),
                static_cast<long long>(row["rows"].get<int64_t>()), static_cast<long long>(row["cols"].get<int64_t>()),
                static_cast<long long>(row["n_tok"].get<int64_t>()), row["f32"]["ms"].get<double>(),
                row["f32"]["weight_gb_per_s"].get<double>(),
                row["q8_applies"].get<bool>() ? fmt::format("{:.3f}", row["q8"]["ms"].get<double>()).c_str() : "(f32)",
                row["q8_applies"].get<bool>() ? fmt::format("{:.1f}", row["q8"]["weight_gb_per_s"].get<double>()).c_str()
                                              : "");
  std::printf("\n%-8s %12s %12s %22s\n", "keys", "f32 KV us", "f16 KV us", "f16 KV ms/token (all layers)");
  for (const auto& row : r["attention"])
    std::printf("%-8lld %12.1f %12.1f %22.2f\n", static_cast<long long>(row["context"].get<int64_t>()),
                row["f32_kv"]["us"].get<double>(), row["f16_kv"]["us"].get<double>(),
                row["f16_kv"]["ms_per_token_all_layers"].get<double>());
  return 0;
}

fkv::text::Tokenizer load_tokenizer(const std::string& path_or_name) {
  return fkv::text::Tokenizer::from_file(fkv::model::resolve_model_path(path_or_name));
}

// Reads a JSONL file line by line; blank lines are errors (they would shift the output pairing).
std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  FKV_CHECK_ARG(f.good(), "cannot open '{}'", path);
  std::vector<json> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    try {
      out.push_back(json::parse(line));
    } catch (const json::parse_error& e) {
      FKV_THROW_KIND(2, "'{}' line {}: invalid JSON ({}); expected one JSON object per line", path, n, e.what());
    }
  }
  return out;
}

void write_jsonl(const std::string& path, const std::vector<json>& rows) {
  std::string s;
  for (const auto& r : rows) s += r.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  fkv::write_file_atomic(path, s);
}

int cmd_tokenize(const Args& a) {
  auto tok = load_tokenizer(a.require("tokenizer"));
  const bool add_special = a.flag("add-special-tokens");
  if (a.has("text")) {
    const auto ids = tok.encode(a.get("text"), add_special);
    std::string s;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(ids[i]);
    }
    std::cout << s << "\n";
    return 0;
  }
  const std::string in = a.require("input"), out = a.require("output");
  std::vector<json> rows;
  int64_t n = 0;
  for (const json& j : read_jsonl(in)) {
    ++n;
    FKV_CHECK_ARG(j.is_object() && j.contains("text") && j["text"].is_string(),
                  "'{}' line {}: expected {{\"text\": string}}", in, n);
    rows.push_back({{"ids", tok.encode(j["text"].get<std::string>(), add_special)}});
  }
  write_jsonl(out, rows);
  FKV_LOG_INFO("tokenized {} lines into {}", rows.size(), out);
  return 0;
}

int cmd_detokenize(const Args& a) {
  auto tok = load_tokenizer(a.require("tokenizer"));
  const bool skip = a.flag("skip-special-tokens");
  auto to_ids = [&](const std::vector<int64_t>& v) {
    std::vector<int32_t> ids;
    for (int64_t x : v) {
      FKV_CHECK_ARG(x >= 0 && x < tok.vocab_size(), "token id {} outside the vocabulary [0, {})", x, tok.vocab_size());
      ids.push_back(static_cast<int32_t>(x));
    }
    return ids;
  };
  if (a.has("ids")) {
    std::cout << tok.decode(to_ids(fkv::cli::parse_int_list(a.get("ids"), "--ids")), skip) << "\n";
    return 0;
  }
  const std::string in = a.require("input"), out = a.require("output");
  std::vector<json> rows;
  int64_t n = 0;
  for (const json& j : read_jsonl(in)) {
    ++n;
    FKV_CHECK_ARG(j.is_object() && j.contains("ids") && j["ids"].is_array(), "'{}' line {}: expected {{\"ids\": [...]}}",
                  in, n);
    rows.push_back({{"text", tok.decode(to_ids(j["ids"].get<std::vector<int64_t>>()), skip)}});
  }
  write_jsonl(out, rows);
  return 0;
}

int cmd_generate(const Args& a) {
  auto m = load(a);
  const std::string model_path = m->weights().source_path;
  auto tok = load_tokenizer(a.get("tokenizer", model_path));
  const int n_modes = a.has("prompt") + a.has("chat") + a.has("messages");
  FKV_CHECK_ARG(n_modes == 1, "give exactly one of --prompt TEXT, --chat TEXT, --messages FILE.json");
  std::string text;
  if (a.has("prompt")) {
    text = a.get("prompt");
  } else {
    std::vector<fkv::text::ChatMessage> msgs;
    if (a.has("chat")) {
      msgs.push_back({"user", a.get("chat"), std::nullopt});
    } else {
      const json j = fkv::read_json_file(a.get("messages"));
      FKV_CHECK_ARG(j.is_array(), "--messages: expected a JSON list of {{\"role\", \"content\"}} objects");
      for (const auto& e : j) {
        FKV_CHECK_ARG(e.is_object() && e.contains("role") && e.contains("content"),
                      "--messages: every entry needs \"role\" and \"content\"");
        msgs.push_back({e["role"].get<std::string>(), e["content"].get<std::string>(), std::nullopt});
      }
    }
    auto tpl = fkv::text::ChatTemplate::for_tokenizer(tok, a.get("chat-template", ""));
    fkv::text::ChatOptions co;
    if (a.has("thinking")) co.enable_thinking = a.get("thinking") != "off";
    text = tpl.render(msgs, co);
  }
  const auto prompt_ids = tok.encode(text, false);
  fkv::runtime::GenerateOptions o;
  o.max_new_tokens = a.get_int("max-new-tokens", 256);
  o.seed = static_cast<uint64_t>(a.get_int("seed", 0));
  o.prefill_chunk = a.get_int("chunk", 512);
  o.kv_f16 = fkv::runtime::parse_kv_dtype(a.get("kv-dtype", "f32")) == at::kHalf;
  if (a.flag("greedy") || !a.has("temperature")) {
    FKV_CHECK_ARG(!(a.flag("greedy") && a.has("temperature")), "--greedy and --temperature exclude each other");
    o.sampling = fkv::runtime::SamplingParams::greedy();
  } else {
    o.sampling.temperature = static_cast<float>(a.get_double("temperature", 1.0));
    o.sampling.top_k = static_cast<int32_t>(a.get_int("top-k", 0));
    o.sampling.top_p = static_cast<float>(a.get_double("top-p", 1.0));
    o.sampling.min_p = static_cast<float>(a.get_double("min-p", 0.0));
  }
  if (a.has("stop")) o.stop_strings.push_back(a.get("stop"));
  if (a.flag("ignore-eos")) o.eos_ids = {-1};  // no id matches: run to --max-new-tokens (benchmarks)
  o.eviction.policy = a.get("policy", "full");
  o.eviction.budget = a.get_int("budget", 0);
  o.eviction.window = a.get_int("window", 0);
  o.eviction.variant = fkv::evict::parse_variant(a.get("variant", "intended"));
  o.eviction.protect = a.get_int("protect", -1);
  o.eviction.query_window = a.get_int("query-window", -1);
  o.eviction.seed = static_cast<uint64_t>(a.get_int("seed", 0));
  o.eviction.judge = a.get("judge", "");
  if (fkv::evict::is_learned_policy(o.eviction.policy)) {  // the learned policies: pick and check the judge
    const auto& mc = m->config();
    fkv::judge::register_policies();
    fkv::judge::resolve_judge(o.eviction, model_path, fkv::harness::model_sha256(model_path),
                              {mc.n_layer, mc.n_head_kv, mc.head_dim, mc.n_head_q / mc.n_head_kv, 0});
  }
  const int64_t n = a.get_int("num-sequences", 1);
  FKV_CHECK_ARG(n >= 1, "--num-sequences must be >= 1");
  o.max_batch = a.get_int("max-batch", 0);
  FKV_CHECK_ARG(o.max_batch >= 0, "--max-batch must be >= 0 (0 = all sequences at once)");
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(n), prompt_ids);
  const bool as_json = a.flag("json");
  fkv::runtime::StreamCallback cb;
  if (!as_json && n == 1)
    cb = [](int64_t, const std::string& piece) {
      std::cout << piece << std::flush;
    };
  fkv::runtime::Generator gen(*m, tok);
  auto res = gen.generate(prompts, o, cb);
  if (as_json) {
    for (const auto& r : res) {
      json j = {{"prompt_ids", r.prompt_ids},   {"ids", r.ids},
                {"text", r.text},               {"finish_reason", r.finish_reason},
                {"seed", r.seed},               {"sequence_index", r.sequence_index},
                {"prompt_tokens", r.prompt_ids.size()}, {"generated_tokens", r.ids.size()},
                {"prefill_seconds", r.prefill_seconds}, {"decode_seconds", r.decode_seconds},
                {"tokens_per_s", r.tokens_per_s},
                {"eviction", {{"config", o.eviction.resolved().to_json()}, {"events", r.eviction_events},
                              {"seconds", r.eviction_seconds}, {"peak_entries", r.peak_entries},
                              {"kv_storage_bytes", r.kv_storage_bytes}, {"peak_kv_bytes", r.peak_kv_bytes},
                              {"time_share_of_decode", r.decode_seconds > 0 ? r.eviction_seconds / r.decode_seconds : 0.0}}}};
      std::cout << j.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    }
  } else if (n == 1) {
    std::cout << "\n";
    FKV_LOG_INFO("{} prompt tokens, {} generated ({}), {:.1f} tokens/s", res[0].prompt_ids.size(), res[0].ids.size(),
                 res[0].finish_reason, res[0].tokens_per_s);
  } else {
    for (const auto& r : res) std::cout << "--- sequence " << r.sequence_index << " (" << r.finish_reason << ")\n" << r.text << "\n";
  }
  return 0;
}

std::vector<Command> commands() {
  return {
      {"info", "fkv-model info --model PATH [--json]", "model config, tensor count and weight formats", with_common({{"json", false, "print JSON", ""}}), cmd_info},
      {"logits", "fkv-model logits --model PATH --ids 1,2,3 [--chunk N] --out FILE.npy", "logits of every position to .npy",
       with_common({{"ids", true, "comma-separated token ids", ""},
                    {"chunk", true, "tokens per forward through the KV cache (1 = token-by-token)", "all"},
                    {"out", true, "output .npy, float32 [T, vocab]", ""}}),
       cmd_logits},
      {"tokenize", "fkv-model tokenize --tokenizer PATH (--input texts.jsonl --output ids.jsonl | --text STRING)",
       "text to token ids",
       {{"tokenizer", true, "tokenizer.json, a directory holding one, a .gguf, or a registered model name", ""},
        {"input", true, "JSONL, one {\"text\": ...} per line", ""},
        {"output", true, "JSONL, one {\"ids\": [...]} per input line", ""},
        {"text", true, "encode this string and print the ids", ""},
        {"add-special-tokens", false, "apply the tokenizer's post-processor (BOS etc.); off like HF add_special_tokens=False", ""},
        {"log-level", true, "log level", "info"},
        {"help", false, "show this help", ""}},
       cmd_tokenize},
      {"detokenize", "fkv-model detokenize --tokenizer PATH (--input ids.jsonl --output texts.jsonl | --ids 1,2,3)",
       "token ids to text",
       {{"tokenizer", true, "tokenizer.json, a directory holding one, a .gguf, or a registered model name", ""},
        {"input", true, "JSONL, one {\"ids\": [...]} per line", ""},
        {"output", true, "JSONL, one {\"text\": ...} per input line", ""},
        {"ids", true, "decode these ids and print the text", ""},
        {"skip-special-tokens", false, "drop special tokens (HF skip_special_tokens=True)", ""},
        {"log-level", true, "log level", "info"},
        {"help", false, "show this help", ""}},
       cmd_detokenize},
      {"generate",
       "fkv-model generate --model PATH (--prompt TEXT | --chat TEXT | --messages FILE.json) [--greedy | "
       "--temperature T --top-k K --top-p P --min-p M] [--seed S] [--max-new-tokens N] [--json]",
       "generate text, optionally under KV eviction (--policy/--budget/--window)",
       with_common({{"prompt", true, "raw prompt text (no template)", ""},
                    {"chat", true, "one user turn, rendered with the model's chat template + generation prompt", ""},
                    {"messages", true, "JSON file: list of {role, content}", ""},
                    {"tokenizer", true, "tokenizer path (default: the model's own)", ""},
                    {"chat-template", true, "template family override: qwen3, qwen2.5, deepseek-r1, smollm2, chatml", ""},
                    {"thinking", true, "qwen3 enable_thinking: on|off", "on"},
                    {"greedy", false, "greedy decoding (the default without --temperature)", ""},
                    {"temperature", true, "sampling temperature", ""},
                    {"top-k", true, "top-k (0 = off)", "0"},
                    {"top-p", true, "top-p", "1.0"},
                    {"min-p", true, "min-p", "0.0"},
                    {"seed", true, "RNG seed; sequence i uses stream (seed, i)", "0"},
                    {"max-new-tokens", true, "maximum generated tokens", "256"},
                    {"num-sequences", true, "sequences generated in one batch", "1"},
                    {"max-batch", true, "rows decoded together; fewer than --num-sequences: continuous batching", "0"},
                    {"stop", true, "stop string", ""},
                    {"chunk", true, "prefill chunk", "512"},
                    {"ignore-eos", false, "do not stop at EOS (fixed-length runs for benchmarks)", ""},
                    {"policy", true, "KV eviction policy: full, streamingllm, h2o, snapkv, rkv, tova, knorm, random, "
                                     "foresightkv, foresightkv_topk", "full"},
                    {"judge", true, "judge checkpoint for foresightkv* (default: the committed judge for the model)", ""},
                    {"budget", true, "eviction budget B per layer and KV head", ""},
                    {"window", true, "eviction interval L (new tokens between evictions)", ""},
                    {"variant", true, "intended | parity (docs/eviction.md)", "intended"},
                    {"protect", true, "newest entries never evicted (default L)", ""},
                    {"query-window", true, "observed queries for attention statistics (default per policy)", ""},
                    {"json", false, "print one JSON object per sequence (with eviction statistics)", ""}}),
       cmd_generate},
      {"bench", "fkv-model bench --model PATH [--contexts 128,1024,4096] [--decode-tokens 32] [--threads 2] [--json]",
       "prefill/decode throughput and peak RSS",
       with_common({{"contexts", true, "context lengths", "128,1024,4096"},
                    {"decode-tokens", true, "decode steps per context", "32"},
                    {"chunk", true, "prefill chunk", "512"},
                    {"repeats", true, "best of N", "1"},
                    {"json", false, "print one JSON object", ""}}),
       cmd_bench},
      {"bench-kernels",
       "fkv-model bench-kernels --model PATH [--n-tok 1,16] [--contexts 1024] [--threads 2] [--repeats 1] [--json]",
       "time the model's matrix products (fp32 and int8 activations) and the decode attention kernel",
       with_common({{"n-tok", true, "activation rows per product", "1,16"},
                    {"contexts", true, "keys per KV head for the attention kernel", "1024"},
                    {"repeats", true, "best of N", "1"},
                    {"min-seconds", true, "each timing loops the call at least this long", "0.3"},
                    {"json", false, "print one JSON object", ""}}),
       cmd_bench_kernels},
  };
}

}  // namespace

int main(int argc, char** argv) { return fkv::cli::run_subcommands("fkv-model", argc, argv, commands()); }
