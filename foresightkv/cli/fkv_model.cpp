// fkv-model: inspect and run a model.  Subcommands: info, logits, bench.
// Thin: parsing and printing only; the work lives in model/ and runtime/.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <iostream>

#include "foresightkv/cli/args.h"
#include "foresightkv/core/error.h"
#include "foresightkv/core/json.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/io/npy.h"
#include "foresightkv/model/transformer.h"
#include "foresightkv/runtime/bench.h"

using fkv::cli::Args;
using fkv::cli::OptionSpec;
using fkv::json;

namespace {

const std::vector<OptionSpec> kCommon = {
    {"model", true, "model: .gguf file, HF directory, or registered name", ""},
    {"weights", true, "weight format in memory: native | f32 | bf16", "native"},
    {"threads", true, "CPU threads", "2"},
    {"log-level", true, "trace|debug|info|warn|error", "info"},
    {"help", false, "show this help", ""},
};

std::vector<OptionSpec> with_common(std::vector<OptionSpec> v) {
  v.insert(v.end(), kCommon.begin(), kCommon.end());
  return v;
}

std::unique_ptr<fkv::model::Transformer> load(const Args& a) {
  fkv::model::LoadOptions lo;
  lo.weight_format = a.get("weights", "native");
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
  fkv::cache::KvCache kv = m->make_cache(1, T);
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

struct Command {
  const char* name;
  const char* usage;
  std::vector<OptionSpec> spec;
  int (*run)(const Args&);
};

std::vector<Command> commands() {
  return {
      {"info", "fkv-model info --model PATH [--json]", with_common({{"json", false, "print JSON", ""}}), cmd_info},
      {"logits", "fkv-model logits --model PATH --ids 1,2,3 [--chunk N] --out FILE.npy",
       with_common({{"ids", true, "comma-separated token ids", ""},
                    {"chunk", true, "tokens per forward through the KV cache (1 = token-by-token)", "all"},
                    {"out", true, "output .npy, float32 [T, vocab]", ""}}),
       cmd_logits},
      {"bench", "fkv-model bench --model PATH [--contexts 128,1024,4096] [--decode-tokens 32] [--threads 2] [--json]",
       with_common({{"contexts", true, "context lengths", "128,1024,4096"},
                    {"decode-tokens", true, "decode steps per context", "32"},
                    {"chunk", true, "prefill chunk", "512"},
                    {"repeats", true, "best of N", "1"},
                    {"json", false, "print one JSON object", ""}}),
       cmd_bench},
  };
}

void usage_all() {
  std::cerr << "usage: fkv-model SUBCOMMAND [options]   (SUBCOMMAND --help for details)\nsubcommands:";
  for (const auto& c : commands()) std::cerr << " " << c.name;
  std::cerr << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    usage_all();
    return argc < 2 ? 2 : 0;
  }
  const std::string sub = argv[1];
  for (const auto& c : commands()) {
    if (sub != c.name) continue;
    try {
      Args a(argc, argv, 2, c.spec);
      if (a.flag("help")) {
        std::cout << fkv::cli::format_help(c.usage, c.spec);
        return 0;
      }
      FKV_CHECK_ARG(a.positional().empty(), "unexpected argument '{}'", a.positional().front());
      fkv::log::init(a.get("log-level", ""));
      return c.run(a);
    } catch (const std::exception& e) {
      FKV_LOG_CRITICAL("fkv-model {}: {}", sub, e.what());
      return 1;
    }
  }
  std::cerr << "fkv-model: unknown subcommand '" << sub << "'\n";
  usage_all();
  return 2;
}
