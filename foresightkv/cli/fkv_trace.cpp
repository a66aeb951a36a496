// fkv-trace: golden traces (foresightkv-spec.md §C, §D.1; docs/trace_format.md).
//   generate  problems -> reasoning traces (full cache) -> filters -> per-token NLL/entropy + Golden Eviction labels
//   label     add NLL/entropy and labels to existing token sequences (JSONL or trace file)
//   inspect   summary of a trace file and a retention heat map (data for scripts/plot_results.py)
// Thin: parsing and printing only; the work lives in foresightkv/trace/ and foresightkv/harness/.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "foresightkv/cli/model_options.h"
#include "foresightkv/cli/args.h"
#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/core/timer.h"
#include "foresightkv/harness/generate_eval.h"
#include "foresightkv/model/weights.h"
#include "foresightkv/runtime/bench.h"
#include "foresightkv/trace/labeler.h"
#include "foresightkv/trace/trace_file.h"

using fkv::json;
using fkv::cli::Args;
using fkv::cli::Command;
using fkv::cli::OptionSpec;
namespace fs = std::filesystem;

namespace {

bool exists(const std::string& p) { return fs::exists(p); }

fkv::json model_header(const std::string& path, const fkv::model::Transformer& m) {
  const auto& c = m.config();
  return {{"path", path}, {"sha256", fkv::harness::model_sha256(path)}, {"n_layer", c.n_layer},
          {"n_head_q", c.n_head_q}, {"n_head_kv", c.n_head_kv}, {"head_dim", c.head_dim}, {"n_vocab", c.n_vocab}};
}

// Label every trace of `in` into `out_path` (resumable: traces already labelled in an existing output are kept).
int label_into(const fkv::model::Transformer& m, const std::string& model_path, fkv::trace::TraceSet in,
               const std::string& out_path, const fkv::trace::LabelOptions& lo, int64_t checkpoint_every,
               json extra_header) {
  fkv::trace::TraceSet out;
  const json mh = model_header(model_path, m);
  if (exists(out_path)) {
    out = fkv::trace::read_trace_set(out_path);
    const std::string have = out.header.value("model", json::object()).value("sha256", "");
    FKV_CHECK_ARG(have == mh["sha256"].get<std::string>(),
                  "{} holds traces labelled with another model (sha256 {}); use another --output or delete it", out_path,
                  have);
  }
  out.header = extra_header;
  out.header["model"] = mh;
  out.header["label"] = {{"budgets", lo.budgets}, {"window", lo.window}, {"bf16_probs", lo.bf16_probs},
                         {"chunk", lo.chunk}};
  std::map<std::string, size_t> done;
  for (size_t i = 0; i < out.traces.size(); ++i) done[out.traces[i].id] = i;
  int64_t since = 0, labelled = 0, tokens = 0;
  const double t0 = fkv::now_seconds();
  for (auto& t : in.traces) {
    auto it = done.find(t.id);
    fkv::trace::Trace* dst;
    if (it != done.end()) {
      FKV_CHECK_ARG(out.traces[it->second].tokens == t.tokens,
                    "{}: trace '{}' exists with different tokens; use another --output", out_path, t.id);
      dst = &out.traces[it->second];
    } else {
      out.traces.push_back(std::move(t));
      dst = &out.traces.back();
      done[dst->id] = out.traces.size() - 1;
    }
    bool missing = !dst->nll.defined();
    for (int64_t b : lo.budgets) missing = missing || !dst->find_labels(b, lo.window);
    if (!missing) continue;
    fkv::trace::label_trace(m, *dst, lo);
    ++labelled;
    tokens += dst->length();
    if (++since >= checkpoint_every) {
      fkv::trace::write_trace_set(out_path, out);
      since = 0;
    }
    FKV_LOG_INFO("labelled trace '{}' ({} tokens); {:.1f} tokens/s", dst->id, dst->length(),
                 tokens / std::max(1e-9, fkv::now_seconds() - t0));
  }
  fkv::trace::write_trace_set(out_path, out);
  const double secs = fkv::now_seconds() - t0;
  std::cout << json{{"output", out_path},
                    {"traces", out.traces.size()},
                    {"labelled_now", labelled},
                    {"tokens_labelled_now", tokens},
                    {"seconds", secs},
                    {"tokens_per_s", secs > 0 ? tokens / secs : 0.0},
                    {"peak_rss_bytes", fkv::runtime::peak_rss_bytes()}}
                   .dump()
            << "\n";
  return 0;
}

fkv::trace::LabelOptions label_options(const Args& a) {
  fkv::trace::LabelOptions lo;
  lo.budgets = fkv::cli::parse_int_list(a.require("budgets"), "--budgets");
  lo.window = a.get_int("window", 0);
  lo.chunk = a.get_int("chunk", 512);
  lo.bf16_probs = !a.flag("fp32-probs");
  FKV_CHECK_ARG(lo.window > 0, "--window W must be > 0");
  return lo;
}

std::unique_ptr<fkv::model::Transformer> load_model(const Args& a, std::string* path) {
  at::set_num_threads(static_cast<int>(a.get_int("threads", 2)));
  *path = fkv::model::resolve_model_path(a.require("model"));
  return fkv::model::Transformer::load(*path, fkv::cli::load_options(a));
}

int cmd_label(const Args& a) {
  std::string mp;
  auto m = load_model(a, &mp);
  fkv::trace::TraceSet in = fkv::trace::read_trace_set(a.require("input"));
  return label_into(*m, mp, std::move(in), a.require("output"), label_options(a), a.get_int("checkpoint-every", 8),
                    json{{"source", a.get("input")}});
}

int cmd_generate(const Args& a) {
  const std::string out = a.require("output");
  FKV_CHECK_ARG(out.size() > 12 && out.substr(out.size() - 12) == ".safetensors", "--output must end in .safetensors");
  fkv::harness::GenerateEvalConfig c;
  if (a.has("config")) c = fkv::harness::GenerateEvalConfig::load(a.get("config"));
  else {
    // protocol sampling (spec §G.3) unless --greedy
    c.sampling.temperature = 0.6f;
    c.sampling.top_p = 0.95f;
    c.sampling.top_k = 20;
    c.max_new_tokens = 640;
  }
  c.dataset = a.get("dataset", "gsm8k");
  c.data_dir = a.get("data-dir", c.data_dir);
  c.problems_file = a.get("problems", "");
  if (c.problems_file.empty()) {
    const std::string dd = c.data_dir.empty() ? fkv::harness::default_data_dir() : c.data_dir;
    c.problems_file = dd + "/train/gsm8k_train.jsonl";
  }
  c.limit = a.get_int("limit", c.limit);
  c.offset = a.get_int("offset", c.offset);
  c.samples = a.get_int("samples", c.samples);
  c.seed = static_cast<uint64_t>(a.get_int("seed", static_cast<int64_t>(c.seed)));
  c.max_new_tokens = a.get_int("max-new-tokens", c.max_new_tokens);
  c.batch = a.get_int("batch", c.batch);
  if (a.flag("greedy")) c.sampling = fkv::runtime::SamplingParams::greedy();
  if (a.has("temperature")) c.sampling.temperature = static_cast<float>(a.get_double("temperature", 0.6));
  if (a.has("top-p")) c.sampling.top_p = static_cast<float>(a.get_double("top-p", 0.95));
  if (a.has("top-k")) c.sampling.top_k = static_cast<int32_t>(a.get_int("top-k", 20));
  c.eviction = fkv::evict::EvictionConfig{};  // traces are generated with the full cache
  const std::string gen_path = a.get("generations", out.substr(0, out.size() - 12) + ".gen.jsonl");
  fkv::harness::GenerateEvalRun run;
  run.model = a.require("model");
  run.output = gen_path;
  run.load = fkv::cli::load_options(a);
  at::set_num_threads(static_cast<int>(a.get_int("threads", 2)));
  // step 1: generation (resumable per sample)
  const json gen_summary = fkv::harness::run_generate_eval(c, run);
  // step 2: filters
  fkv::trace::TraceSet gen = fkv::trace::read_trace_set(gen_path);
  const int64_t min_len = a.get_int("min-length", 0);
  const bool need_correct = a.flag("require-correct");
  fkv::trace::TraceSet sel;
  for (auto& t : gen.traces) {
    if (t.length() < min_len) continue;
    if (need_correct && !t.meta.value("correct", false)) continue;
    t.id = fmt::format("p{}s{}", t.meta.value("problem_index", int64_t{-1}), t.meta.value("sample_index", int64_t{-1}));
    for (const char* drop : {"tokens_per_s", "prefill_seconds", "decode_seconds", "eviction_seconds",
                             "batch_first_sample", "batch_size", "eviction_events", "peak_kv_bytes"})
      t.meta.erase(drop);
    sel.traces.push_back(std::move(t));
  }
  FKV_LOG_INFO("trace generate: {} of {} generations pass the filters (min length {}, correct only {})",
               sel.traces.size(), gen.traces.size(), min_len, need_correct);
  FKV_CHECK_ARG(!sel.traces.empty(), "no generation passes the filters (min length {}, require correct {}); "
                "relax them or generate more (--limit)", min_len, need_correct);
  std::string mp;
  auto m = load_model(a, &mp);
  // steps 2-3: NLL/entropy + labels (resumable per trace)
  return label_into(*m, mp, std::move(sel), out, label_options(a), a.get_int("checkpoint-every", 8),
                    json{{"generation", {{"config", c.to_json()}, {"file", gen_path},
                                         {"accuracy", gen_summary.value("accuracy", 0.0)}}},
                         {"filters", {{"min_length", min_len}, {"require_correct", need_correct}}},
                         {"seed", c.seed}});
}

int cmd_inspect(const Args& a) {
  const std::string in = a.require("input");
  const fkv::trace::TraceSet set = fkv::trace::read_trace_set(in);
  int64_t tmin = INT64_MAX, tmax = 0, total = 0, resp = 0;
  double nll = 0, ent = 0;
  int64_t scored = 0;
  std::map<std::string, int64_t> labels;
  for (const auto& t : set.traces) {
    tmin = std::min(tmin, t.length());
    tmax = std::max(tmax, t.length());
    total += t.length();
    resp += t.length() - t.prompt_len;
    if (t.nll.defined()) {
      at::Tensor r = t.nll.narrow(0, t.prompt_len - 1, t.length() - t.prompt_len);
      nll += r.sum().item<double>();
      ent += t.entropy.narrow(0, t.prompt_len - 1, t.length() - t.prompt_len).sum().item<double>();
      scored += r.numel();
    }
    for (const auto& g : t.labels) labels[fmt::format("{}x{}", g.budget, g.window)]++;
  }
  json lab = json::object();
  for (const auto& [k, v] : labels) lab[k] = v;
  json s = {{"file", in},
            {"traces", set.traces.size()},
            {"tokens", total},
            {"response_tokens", resp},
            {"min_length", set.traces.empty() ? 0 : tmin},
            {"max_length", tmax},
            {"mean_length", set.traces.empty() ? 0.0 : double(total) / set.traces.size()},
            {"mean_response_nll", scored ? nll / scored : 0.0},
            {"mean_response_entropy", scored ? ent / scored : 0.0},
            {"labels", lab},
            {"header", set.header}};
  if (a.has("heatmap")) {
    const int64_t B = a.get_int("budget", 0), W = a.get_int("window", 0);
    const int64_t bins = a.get_int("bins", 128);
    FKV_CHECK_ARG(B > 0 && W > 0 && bins > 0, "--heatmap needs --budget B --window W (and --bins > 0)");
    int64_t n_layer = -1;
    at::Tensor hit, cnt;
    for (const auto& t : set.traces) {
      const fkv::trace::GoldenLabels* g = t.find_labels(B, W);
      if (!g || g->drops.size(1) == 0) continue;
      const int64_t S = g->drops.size(1), L = g->drops.size(0), H = g->drops.size(2);
      if (n_layer < 0) {
        n_layer = L;
        hit = at::zeros({L, bins}, at::kDouble);
        cnt = at::zeros({L, bins}, at::kDouble);
      }
      FKV_CHECK_FORMAT(L == n_layer, "{}: traces with different layer counts", in);
      // survivors after the last step, among the positions that were ever candidates: [0, B + S*W)
      at::Tensor surv = fkv::trace::replay_survivors(*g, t.length(), S - 1);  // [L, H, B]
      const int64_t seen = B + S * W;
      for (int64_t l = 0; l < L; ++l) {
        std::vector<char> alive(static_cast<size_t>(seen), 0);
        for (int64_t h = 0; h < H; ++h) {
          at::Tensor row = surv[l][h].contiguous();
          for (int64_t i = 0; i < B; ++i) {
            const int64_t p = row.data_ptr<int64_t>()[i];
            if (p < seen) hit[l][p * bins / seen] += 1.0 / H;
          }
        }
        for (int64_t p = 0; p < seen; ++p) cnt[l][p * bins / seen] += 1.0;
      }
    }
    FKV_CHECK_ARG(n_layer > 0, "{}: no trace has labels for budget {} window {} with at least one step", in, B, W);
    at::Tensor frac = (hit / cnt.clamp_min(1.0)).contiguous();
    json rows = json::array();
    for (int64_t l = 0; l < n_layer; ++l) {
      json r = json::array();
      for (int64_t b = 0; b < bins; ++b) r.push_back(frac[l][b].item<double>());
      rows.push_back(r);
    }
    json hm = {{"kind", "retention"}, {"layers", n_layer}, {"positions", bins}, {"retained", rows},
               {"title", fmt::format("golden retention after the last step (B={}, W={}), position relative to the "
                                     "evicted span, {} bins", B, W, bins)}};
    fkv::write_file_atomic(a.get("heatmap"), hm.dump() + "\n");
    s["heatmap"] = a.get("heatmap");
  }
  std::cout << s.dump(2) << "\n";
  return 0;
}

std::vector<OptionSpec> label_spec() {
  return fkv::cli::with_model_load({{"budgets", true, "comma list of budgets B (multiples of W)", ""},
          {"window", true, "W: eviction length = query block size", ""},
          {"chunk", true, "forward chunk length of the labelling pass", "512"},
          {"fp32-probs", false, "pool fp32 probabilities (default: bf16 like the official code)", ""},
          {"checkpoint-every", true, "rewrite the output after this many labelled traces", "8"},
          {"threads", true, "CPU threads", "2"},
          {"log-level", true, "log level", "info"},
          {"help", false, "show this help", ""}});
}

std::vector<Command> commands() {
  auto with = [](std::vector<OptionSpec> a, const std::vector<OptionSpec>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  return {
      {"generate",
       "fkv-trace generate --model PATH|NAME --output traces.safetensors --budgets 128 --window 32 [--limit N]\n"
       "       [--problems F.jsonl] [--dataset gsm8k] [--samples 1] [--max-new-tokens 640] [--greedy | --temperature\n"
       "       0.6 --top-p 0.95 --top-k 20] [--seed 0] [--batch N] [--min-length T] [--require-correct] [--config F]\n"
       "  (1) generates traces with the full cache (per-sample JSONL next to the output, resumable), (2) keeps those\n"
       "  passing the filters, (3) adds per-token NLL/entropy and Golden Eviction labels for every budget; the\n"
       "  output is rewritten atomically every --checkpoint-every traces and a rerun resumes. docs/trace_format.md.\n"
       "options:",
       "generate reasoning traces with NLL/entropy and golden labels",
       with({{"model", true, "GGUF file, HF directory or registry name", ""},
             {"output", true, "trace file (.safetensors)", ""},
             {"problems", true, "problem JSONL (default <data>/train/gsm8k_train.jsonl)", ""},
             {"dataset", true, "grading rules for --require-correct", "gsm8k"},
             {"data-dir", true, "data directory", ""},
             {"config", true, "generate config (configs/eval/*.json keys)", ""},
             {"limit", true, "problems to use", "0"},
             {"offset", true, "first problem", "0"},
             {"samples", true, "samples per problem", "1"},
             {"seed", true, "sampling seed", "0"},
             {"max-new-tokens", true, "generation length cap", "640"},
             {"greedy", false, "argmax decoding", ""},
             {"temperature", true, "sampling temperature", "0.6"},
             {"top-p", true, "nucleus", "0.95"},
             {"top-k", true, "top-k", "20"},
             {"batch", true, "samples per batch", ""},
             {"min-length", true, "keep traces with at least this many tokens (prompt + response)", "0"},
             {"require-correct", false, "keep only traces graded correct", ""},
             {"generations", true, "per-sample JSONL of step 1", "OUTPUT.gen.jsonl"}},
            label_spec()),
       cmd_generate},
      {"label",
       "fkv-trace label --model PATH|NAME --input traces.jsonl|traces.safetensors --budgets B[,B2] --window W\n"
       "       --output FILE.safetensors\n"
       "  Adds per-token NLL/entropy and Golden Eviction labels (spec §C) to existing token sequences: JSONL with one\n"
       "  {\"prompt_ids\": [...], \"response_ids\": [...]} per line (fkv-eval generate output qualifies) or a trace file.\n"
       "  Resumable: traces already labelled in --output are kept.\n"
       "options:",
       "label existing token sequences",
       with({{"model", true, "GGUF file, HF directory or registry name", ""},
             {"input", true, "JSONL or trace file", ""},
             {"output", true, "trace file (.safetensors)", ""}},
            label_spec()),
       cmd_label},
      {"inspect",
       "fkv-trace inspect --input FILE [--heatmap OUT.json --budget B --window W [--bins 128]]\n"
       "  Prints a JSON summary; --heatmap writes the per-layer retention of positions after the last golden step\n"
       "  ({\"kind\": \"retention\", ...}, drawn by scripts/plot_results.py).\n"
       "options:",
       "summarise a trace file; export a retention heat map",
       {{"input", true, "trace file or JSONL", ""},
        {"heatmap", true, "write retention heat-map data here", ""},
        {"budget", true, "labels to use for the heat map", ""},
        {"window", true, "labels to use for the heat map", ""},
        {"bins", true, "position bins", "128"},
        {"log-level", true, "log level", "info"},
        {"help", false, "show this help", ""}},
       cmd_inspect},
  };
}

}  // namespace

int main(int argc, char** argv) { return fkv::cli::run_subcommands("fkv-trace", argc, argv, commands()); }
