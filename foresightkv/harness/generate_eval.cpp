// fkv-eval generate: sampled generation on an evaluation set under a KV policy, graded per spec §G.4, with a
// resumable per-sample JSONL and a bootstrap summary (see generate_eval.h).
#include "foresightkv/harness/generate_eval.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "foresightkv/core/error.h"
#include "foresightkv/judge/policy.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/core/timer.h"
#include "foresightkv/grading/grader.h"
#include "foresightkv/model/transformer.h"
#include "foresightkv/model/weights.h"
#include "foresightkv/runtime/generator.h"
#include "foresightkv/text/chat_template.h"
#include "foresightkv/text/tokenizer.h"

namespace fs = std::filesystem;

namespace fkv::harness {
namespace {

using ojson = nlohmann::ordered_json;

// Philox stream of the bootstrap's resampling indices (distinct from any sampler stream i * 1'000'003 + j in
// practice, and in any case a different use of the same key).
constexpr uint64_t kBootstrapStream = 0xB0075747A9ULL;

// A float as its shortest decimal (0.6f -> 0.6), so configs read back and print cleanly.
double clean_float(float f) { return std::stod(fmt::format("{}", f)); }

template <class T>
T get_as(const json& j, const char* key, const std::string& what) {
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    FKV_THROW_KIND(1, "{}: \"{}\" has the wrong type ({}): {}", what, key, j.at(key).type_name(), e.what());
  }
}

bool has_marker(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p / "configs" / "prompts.json", ec);
}

std::string find_up(fs::path p) {
  while (!p.empty()) {
    if (has_marker(p)) return p.string();
    if (p == p.root_path() || p == p.parent_path()) break;
    p = p.parent_path();
  }
  return "";
}

std::string normalized(const std::string& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? fs::absolute(p).lexically_normal().string() : r.string();
}

// The answer as Python's str() prints what json.loads gives (AMC answers are numbers: 27.0), exactly as
// `fkv-eval grade` (grading/grade_jsonl.cpp) turns it into text.
std::string answer_text(const json& a, const std::string& where) {
  if (a.is_string()) return a.get<std::string>();
  if (a.is_number_integer() || a.is_number_unsigned() || a.is_number_float()) return a.dump();
  FKV_THROW_KIND(2, "{}: the answer must be a string or a number, got {}", where, a.type_name());
}

std::vector<std::string> dataset_stems(const std::string& ds) {
  if (ds == "gsm8k") return {"gsm8k_test", "gsm8k"};
  return {ds};
}

// Defaults (weights "native", activations "f32") leave the payload as it always was, so existing outputs keep
// their hash; any other in-memory format changes the numerics and joins it.
json hash_payload(const GenerateEvalConfig& c, const std::string& model_sha, const std::string& dataset_sha,
                  const model::LoadOptions& lo) {
  json cfg = c.to_json();
  for (const char* k : {"data_dir", "limit", "offset", "samples", "batch", "scheduling"}) cfg.erase(k);
  // the learned policies: the judge's content, not where the file lies, decides the samples
  if (cfg.contains("eviction") && cfg["eviction"].contains("judge")) {
    cfg["eviction"]["judge"] = model_sha256(c.eviction.judge);  // a file or an HF checkpoint directory
  }
  json j{{"config", cfg}, {"model_sha256", model_sha}, {"dataset_sha256", dataset_sha}};
  if (lo.weight_format != "native") j["weights"] = lo.weight_format;
  if (lo.activations != "f32") j["activations"] = lo.activations;
  if (lo.backend != "native") j["backend"] = lo.backend;
  if (lo.device != "cpu") j["device"] = model::device_kind(lo.device);  // not the index
  if (lo.dtype != "f32") j["dtype"] = lo.dtype;
  return j;
}

std::string config_hash(const GenerateEvalConfig& c, const std::string& model_sha, const std::string& dataset_sha,
                        const model::LoadOptions& lo) {
  const std::string s = hash_payload(c, model_sha, dataset_sha, lo).dump();
  return sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string resolve_model(const std::string& name) {
  if (file_exists(name)) return name;
  // Registry names resolve against $FKV_ROOT (else the working directory); default FKV_ROOT to the repository
  // this executable belongs to, so `--model smollm2-135m-instruct` works from any directory.
  const char* env = std::getenv("FKV_ROOT");
  if (!(env && *env)) {
    const std::string root = repo_root();
    if (!root.empty()) ::setenv("FKV_ROOT", root.c_str(), 0);
  }
  return model::resolve_model_path(name);
}

int64_t row_int(const json& r, const char* key) { return r.contains(key) && r[key].is_number() ? r[key].get<int64_t>() : 0; }
double row_double(const json& r, const char* key) {
  return r.contains(key) && r[key].is_number() ? r[key].get<double>() : 0.0;
}
bool row_bool(const json& r, const char* key) { return r.contains(key) && r[key].is_boolean() && r[key].get<bool>(); }

json frac_or_null(double num, int64_t den) { return den > 0 ? json(num / static_cast<double>(den)) : json(nullptr); }

// An append-only JSONL whose writer was killed mid-line: cut the torn last line (rewritten atomically).
void truncate_torn_line(const std::string& path) {
  if (!fs::exists(path)) return;
  const std::string b = read_file(path);
  if (b.empty() || b.back() == '\n') return;
  const size_t cut = b.rfind('\n');
  write_file_atomic(path, cut == std::string::npos ? std::string_view() : std::string_view(b).substr(0, cut + 1));
}

}  // namespace

// ---- config ---------------------------------------------------------------------------------------------

json PromptOptions::to_json() const {
  return json{{"prefix", prefix},
              {"suffix", suffix},
              {"chat_template", chat_template},
              {"enable_thinking", enable_thinking ? json(*enable_thinking) : json(nullptr)},
              {"add_special_tokens", add_special_tokens}};
}

PromptOptions PromptOptions::from_json(const json& j) {
  const std::string what = "generate config \"prompt\"";
  check_keys(j, {"prefix", "suffix", "chat_template", "enable_thinking", "add_special_tokens"}, what);
  PromptOptions p;
  if (j.contains("prefix")) p.prefix = get_as<std::string>(j, "prefix", what);
  if (j.contains("suffix")) p.suffix = get_as<std::string>(j, "suffix", what);
  if (j.contains("chat_template")) p.chat_template = get_as<std::string>(j, "chat_template", what);
  if (j.contains("enable_thinking") && !j["enable_thinking"].is_null())
    p.enable_thinking = get_as<bool>(j, "enable_thinking", what);
  if (j.contains("add_special_tokens")) p.add_special_tokens = get_as<bool>(j, "add_special_tokens", what);
  return p;
}

json GenerateEvalConfig::to_json() const {
  json s{{"greedy", sampling.is_greedy()},
         {"temperature", clean_float(sampling.temperature)},
         {"top_p", clean_float(sampling.top_p)},
         {"top_k", sampling.top_k},
         {"min_p", clean_float(sampling.min_p)}};
  return json{{"dataset", dataset},
              {"problems_file", problems_file},
              {"data_dir", data_dir},
              {"limit", limit},
              {"offset", offset},
              {"samples", samples},
              {"seed", seed},
              {"max_new_tokens", max_new_tokens},
              {"max_length", max_length},
              {"sampling", s},
              {"batch", batch},
              {"scheduling", scheduling},
              {"prefill_chunk", prefill_chunk},
              {"kv_dtype", kv_dtype},
              {"prompt", prompt.to_json()},
              {"eviction", eviction.to_json()}};
}

GenerateEvalConfig GenerateEvalConfig::from_json(const json& j) {
  const std::string what = "generate config";
  check_keys(j,
             {"comment", "dataset", "problems_file", "data_dir", "limit", "offset", "samples", "seed", "max_new_tokens", "max_length",
              "sampling", "batch", "scheduling", "prefill_chunk", "kv_dtype", "prompt", "eviction"},
             what);
  GenerateEvalConfig c;
  if (j.contains("dataset")) c.dataset = get_as<std::string>(j, "dataset", what);
  if (j.contains("data_dir")) c.data_dir = get_as<std::string>(j, "data_dir", what);
  if (j.contains("problems_file")) c.problems_file = get_as<std::string>(j, "problems_file", what);
  if (j.contains("limit")) c.limit = get_as<int64_t>(j, "limit", what);
  if (j.contains("offset")) c.offset = get_as<int64_t>(j, "offset", what);
  if (j.contains("samples")) c.samples = get_as<int64_t>(j, "samples", what);
  if (j.contains("seed")) c.seed = get_as<uint64_t>(j, "seed", what);
  if (j.contains("max_new_tokens")) c.max_new_tokens = get_as<int64_t>(j, "max_new_tokens", what);
  if (j.contains("max_length")) c.max_length = get_as<int64_t>(j, "max_length", what);
  if (j.contains("batch")) c.batch = get_as<int64_t>(j, "batch", what);
  if (j.contains("scheduling")) c.scheduling = get_as<std::string>(j, "scheduling", what);
  if (j.contains("prefill_chunk")) c.prefill_chunk = get_as<int64_t>(j, "prefill_chunk", what);
  if (j.contains("kv_dtype")) c.kv_dtype = get_as<std::string>(j, "kv_dtype", what);
  if (j.contains("sampling")) {
    const json& s = j["sampling"];
    const std::string sw = "generate config \"sampling\"";
    check_keys(s, {"greedy", "temperature", "top_p", "top_k", "min_p"}, sw);
    const bool greedy = s.contains("greedy") && get_as<bool>(s, "greedy", sw);
    if (greedy) {
      FKV_CHECK_ARG(!s.contains("temperature") || get_as<double>(s, "temperature", sw) == 0.0,
                    "{}: \"greedy\": true with temperature {}; drop one of them", sw, s["temperature"].dump());
      c.sampling = runtime::SamplingParams::greedy();
    } else {
      runtime::SamplingParams p;  // temperature 1, top_k 0, top_p 1, min_p 0
      if (s.contains("temperature")) p.temperature = static_cast<float>(get_as<double>(s, "temperature", sw));
      if (s.contains("top_p")) p.top_p = static_cast<float>(get_as<double>(s, "top_p", sw));
      if (s.contains("top_k")) p.top_k = static_cast<int32_t>(get_as<int64_t>(s, "top_k", sw));
      if (s.contains("min_p")) p.min_p = static_cast<float>(get_as<double>(s, "min_p", sw));
      c.sampling = p;
    }
  }
  if (j.contains("prompt")) c.prompt = PromptOptions::from_json(j["prompt"]);
  if (j.contains("eviction")) c.eviction = evict::EvictionConfig::from_json(j["eviction"]);
  return c;
}

GenerateEvalConfig GenerateEvalConfig::load(const std::string& path) {
  FKV_CHECK_ARG(file_exists(path), "generate config '{}' not found (presets: configs/eval/*.json)", path);
  const json j = read_json_file(path);
  try {
    return from_json(j);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("'{}': {}", path, e.what()));
  }
}

GenerateEvalConfig GenerateEvalConfig::resolved() const {
  GenerateEvalConfig c = *this;
  c.dataset = grading::dataset_name(grading::parse_dataset(c.dataset));
  FKV_CHECK_ARG(c.samples >= 1, "samples must be >= 1 (got {})", c.samples);
  FKV_CHECK_ARG(c.limit >= 0 && c.offset >= 0, "limit ({}) and offset ({}) must be >= 0", c.limit, c.offset);
  FKV_CHECK_ARG(c.max_new_tokens >= 0, "max_new_tokens must be >= 0 (got {})", c.max_new_tokens);
  FKV_CHECK_ARG(c.max_length >= 0, "max_length must be >= 0 (0 = no cap; got {})", c.max_length);
  FKV_CHECK_ARG(c.batch >= 0, "batch must be >= 0 (0 = samples; got {})", c.batch);
  FKV_CHECK_ARG(c.scheduling == "continuous" || c.scheduling == "static",
                "scheduling '{}': expected continuous (refill finished rows) or static (batch by batch)", c.scheduling);
  FKV_CHECK_ARG(c.prefill_chunk > 0, "prefill_chunk must be > 0 (got {})", c.prefill_chunk);
  FKV_CHECK_ARG(c.kv_dtype == "f32" || c.kv_dtype == "f16", "kv_dtype '{}': expected f32 or f16", c.kv_dtype);
  c.sampling.validate();
  if (c.sampling.is_greedy()) c.sampling = runtime::SamplingParams::greedy();
  c.batch = c.batch == 0 ? c.samples : c.batch;
  c.data_dir = normalized(c.data_dir.empty() ? default_data_dir() : c.data_dir);
  c.eviction = c.eviction.resolved();
  return c;
}

// ---- files ----------------------------------------------------------------------------------------------

std::string repo_root() {
  const char* env = std::getenv("FKV_ROOT");
  if (env && *env) return env;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const std::string r = find_up(exe.parent_path());
    if (!r.empty()) return r;
  }
  const fs::path cwd = fs::current_path(ec);
  return ec ? "" : find_up(cwd);
}

std::string default_data_dir() {
  const char* env = std::getenv("FKV_DATA_DIR");
  if (env && *env) return env;
  const std::string root = repo_root();
  return root.empty() ? "../shared/data" : root + "/../shared/data";
}

std::string dataset_file(const std::string& data_dir, const std::string& dataset) {
  const std::string ds = grading::dataset_name(grading::parse_dataset(dataset));
  std::vector<std::string> tried;
  for (const std::string& sub : {std::string("/eval/"), std::string("/")})
    for (const std::string& stem : dataset_stems(ds)) {
      const std::string p = data_dir + sub + stem + ".jsonl";
      if (file_exists(p)) return p;
      tried.push_back(p);
    }
  std::string list;
  for (const auto& t : tried) list += (list.empty() ? "" : ", ") + t;
  FKV_THROW_KIND(1, "no data file for dataset '{}' (tried {}); pass --data-dir DIR (holding eval/*.jsonl) or set "
                 "FKV_DATA_DIR",
                 ds, list);
}

std::vector<Problem> read_problems(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  FKV_CHECK_ARG(f.good(), "cannot open data file '{}'", path);
  std::vector<Problem> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(f, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      FKV_THROW_KIND(2, "'{}' line {}: invalid JSON ({})", path, line_no, e.what());
    }
    FKV_CHECK_FORMAT(j.is_object(), "'{}' line {}: expected a JSON object", path, line_no);
    Problem p;
    p.index = static_cast<int64_t>(out.size());
    p.id = j.contains("id") ? j["id"] : json(p.index);
    const char* qkey = j.contains("problem") ? "problem" : j.contains("question") ? "question" : "input";
    FKV_CHECK_FORMAT(j.contains(qkey) && j[qkey].is_string(),
                     "'{}' line {}: expected the question as a string field \"problem\", \"question\" or \"input\"",
                     path, line_no);
    p.question = j[qkey].get<std::string>();
    const char* akey = j.contains("answer") ? "answer" : "output";
    FKV_CHECK_FORMAT(j.contains(akey) && (j[akey].is_string() || j[akey].is_number()),
                     "'{}' line {}: expected the reference answer as \"answer\" (or \"output\"), a string or number",
                     path, line_no);
    p.answer = j[akey];
    out.push_back(std::move(p));
  }
  return out;
}

std::string model_sha256(const std::string& path) {
  if (!is_directory(path)) return sha256_file(path);
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& e : fs::recursive_directory_iterator(path))
    if (e.is_regular_file()) files.emplace_back(fs::relative(e.path(), path).generic_string(), e.path().string());
  std::sort(files.begin(), files.end());
  std::string listing;
  for (const auto& [rel, full] : files) listing += rel + " " + sha256_file(full) + "\n";
  return sha256_hex(reinterpret_cast<const uint8_t*>(listing.data()), listing.size());
}

std::vector<json> read_sample_lines(const std::string& path, bool repair) {
  const std::string data = read_file(path);
  std::vector<std::string> raw;  // line text without '\n'
  size_t start = 0;
  while (start < data.size()) {
    const size_t nl = data.find('\n', start);
    raw.push_back(data.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  const bool missing_newline = !data.empty() && data.back() != '\n';
  int64_t last_nonblank = -1;
  for (size_t i = 0; i < raw.size(); ++i)
    if (raw[i].find_first_not_of(" \t\r") != std::string::npos) last_nonblank = static_cast<int64_t>(i);
  std::vector<json> rows;
  std::string kept;
  bool torn = false;
  for (size_t i = 0; i < raw.size(); ++i) {
    std::string line = raw[i];
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    json j;
    bool ok = true;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      ok = false;
    }
    if (!ok || !j.is_object()) {
      if (static_cast<int64_t>(i) == last_nonblank) {  // a write cut short by a crash or kill
        torn = true;
        FKV_LOG_WARN("'{}' line {}: incomplete last line dropped ({} bytes)", path, i + 1, line.size());
        continue;
      }
      FKV_THROW_KIND(2, "'{}' line {}: not a JSON object; only the last line of a sample file may be incomplete "
                     "(a killed run). Delete the file or repair it by hand",
                     path, i + 1);
    }
    FKV_CHECK_FORMAT(j.contains("problem_index") && j["problem_index"].is_number_integer() &&
                         j.contains("sample_index") && j["sample_index"].is_number_integer() &&
                         j.contains("config_hash") && j["config_hash"].is_string(),
                     "'{}' line {}: not a fkv-eval generate sample (needs problem_index, sample_index, config_hash)",
                     path, i + 1);
    rows.push_back(std::move(j));
    kept += line + "\n";
  }
  if (repair && (torn || missing_newline)) {
    write_file_atomic(path, kept);
    FKV_LOG_INFO("'{}': rewrote with {} complete lines", path, rows.size());
  }
  return rows;
}

// ---- statistics -----------------------------------------------------------------------------------------

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double f = pos - static_cast<double>(lo);
  return v[lo] + (v[hi] - v[lo]) * f;
}

Interval bootstrap_ci(const std::vector<double>& sum, const std::vector<int64_t>& count, uint64_t seed,
                      int64_t resamples, double level) {
  FKV_CHECK_ARG(sum.size() == count.size(), "bootstrap_ci: {} sums for {} counts", sum.size(), count.size());
  FKV_CHECK_ARG(resamples >= 1 && level > 0 && level < 1, "bootstrap_ci: resamples {} / level {}", resamples, level);
  Interval out;
  const size_t G = sum.size();
  if (G == 0) return out;
  double s = 0;
  int64_t n = 0;
  for (size_t g = 0; g < G; ++g) s += sum[g], n += count[g];
  out.estimate = n > 0 ? s / static_cast<double>(n) : 0.0;
  std::vector<double> stats;
  stats.reserve(static_cast<size_t>(resamples));
  for (int64_t r = 0; r < resamples; ++r) {
    double rs = 0;
    int64_t rn = 0;
    for (size_t i = 0; i < G; ++i) {
      const double u = runtime::philox_uniform(seed, kBootstrapStream, static_cast<uint64_t>(r) * G + i);
      const size_t g = std::min(G - 1, static_cast<size_t>(u * static_cast<double>(G)));
      rs += sum[g];
      rn += count[g];
    }
    stats.push_back(rn > 0 ? rs / static_cast<double>(rn) : 0.0);
  }
  const double tail = (1.0 - level) / 2.0 * 100.0;
  out.low = percentile(stats, tail);
  out.high = percentile(stats, 100.0 - tail);
  // Floating-point sums of equal values can land a hair off the estimate; keep the estimate inside.
  out.low = std::min(out.low, out.estimate);
  out.high = std::max(out.high, out.estimate);
  return out;
}

// ---- summary --------------------------------------------------------------------------------------------

json summarize(const GenerateEvalConfig& c, const std::vector<json>& rows, const std::vector<int64_t>& problems,
               const std::vector<json>* paired_rows, const std::string& paired_path) {
  const std::set<int64_t> sel(problems.begin(), problems.end());
  auto selected = [&](const json& r) {
    return sel.count(r["problem_index"].get<int64_t>()) && r["sample_index"].get<int64_t>() >= 0 &&
           r["sample_index"].get<int64_t>() < c.samples;
  };
  std::map<int64_t, std::pair<double, int64_t>> acc, strict;  // problem -> (correct, n)
  struct BatchTimes {
    double prefill = 0, decode = 0, eviction = 0;
  };
  std::map<std::pair<int64_t, int64_t>, BatchTimes> batches;
  std::map<std::string, int64_t> finish;
  std::vector<double> lengths;
  double prompt_tokens = 0;
  int64_t n = 0, peak_kv = 0, correct = 0, strict_correct = 0;
  for (const json& r : rows) {
    if (!selected(r)) continue;
    const int64_t p = r["problem_index"].get<int64_t>();
    const bool ok = row_bool(r, "correct"), sok = row_bool(r, "strict_correct");
    acc[p].first += ok;
    acc[p].second += 1;
    strict[p].first += sok;
    strict[p].second += 1;
    correct += ok;
    strict_correct += sok;
    ++n;
    lengths.push_back(row_double(r, "length"));
    prompt_tokens += row_double(r, "prompt_tokens");
    finish[r.value("finish_reason", std::string("?"))] += 1;
    peak_kv = std::max(peak_kv, row_int(r, "peak_kv_bytes"));
    // a batch's times are shared by its rows: count once (rows before cross-problem batching lack
    // batch_first_problem; their batches never left their problem)
    const int64_t bp = r.contains("batch_first_problem") ? row_int(r, "batch_first_problem") : p;
    auto& b = batches[{bp, row_int(r, "batch_first_sample")}];
    b.prefill = std::max(b.prefill, row_double(r, "prefill_seconds"));
    b.decode = std::max(b.decode, row_double(r, "decode_seconds"));
    b.eviction = std::max(b.eviction, row_double(r, "eviction_seconds"));
  }
  auto split = [](const std::map<int64_t, std::pair<double, int64_t>>& m, std::vector<double>& s,
                  std::vector<int64_t>& k) {
    for (const auto& [p, v] : m) s.push_back(v.first), k.push_back(v.second);
  };
  std::vector<double> s1, s2;
  std::vector<int64_t> k1, k2;
  split(acc, s1, k1);
  split(strict, s2, k2);
  const Interval ci = bootstrap_ci(s1, k1, c.seed), sci = bootstrap_ci(s2, k2, c.seed);
  double prefill_s = 0, decode_s = 0, evict_s = 0, tokens = 0;
  for (const auto& [k, v] : batches) prefill_s += v.prefill, decode_s += v.decode, evict_s += v.eviction;
  for (double l : lengths) tokens += l;
  double mean_len = n > 0 ? tokens / static_cast<double>(n) : 0.0;
  json fr = json::object();
  for (const auto& [k, v] : finish) fr[k] = v;
  json s{{"dataset", c.dataset},
         {"seed", c.seed},
         {"samples", c.samples},
         {"n_problems", static_cast<int64_t>(acc.size())},
         {"n_samples", n},
         {"accuracy", frac_or_null(static_cast<double>(correct), n)},
         {"ci_low", n > 0 ? json(ci.low) : json(nullptr)},
         {"ci_high", n > 0 ? json(ci.high) : json(nullptr)},
         {"strict_accuracy", frac_or_null(static_cast<double>(strict_correct), n)},
         {"strict_ci_low", n > 0 ? json(sci.low) : json(nullptr)},
         {"strict_ci_high", n > 0 ? json(sci.high) : json(nullptr)},
         {"mean_length", mean_len},
         {"p90_length", percentile(lengths, 90.0)},
         {"mean_prompt_tokens", n > 0 ? prompt_tokens / static_cast<double>(n) : 0.0},
         {"finish_reasons", fr},
         {"tokens_per_s", decode_s > 0 ? tokens / decode_s : 0.0},
         {"prefill_seconds", prefill_s},
         {"decode_seconds", decode_s},
         {"eviction_seconds", evict_s},
         {"peak_kv_bytes", peak_kv},
         // eviction runs after prefill chunks as well as decode steps: its share of the whole generation time
         {"eviction_time_share", prefill_s + decode_s > 0 ? evict_s / (prefill_s + decode_s) : 0.0}};
  s["rows"] = json::array({json{{"policy", c.eviction.policy},
                                {"budget", c.eviction.budget},
                                {"window", c.eviction.window},
                                {"variant", evict::to_string(c.eviction.variant)},
                                {"dataset", c.dataset},
                                {"samples", c.samples},
                                {"n_problems", static_cast<int64_t>(acc.size())},
                                {"accuracy", s["accuracy"]},
                                {"ci_low", s["ci_low"]},
                                {"ci_high", s["ci_high"]},
                                {"strict_accuracy", s["strict_accuracy"]}}});
  if (paired_rows) {
    std::map<std::pair<int64_t, int64_t>, bool> full;
    std::set<std::string> other_policies;
    for (const json& r : *paired_rows) {
      if (!selected(r)) continue;
      FKV_CHECK_ARG(r.contains("seed") && r["seed"].is_number_unsigned() && r["seed"].get<uint64_t>() == c.seed,
                    "paired run '{}' used seed {}, this run {}: the pairs would not share sampler streams; rerun the "
                    "full-cache run with --seed {}",
                    paired_path, r.value("seed", json()).dump(), c.seed, c.seed);
      FKV_CHECK_ARG(r.value("dataset", std::string()) == c.dataset, "paired run '{}' is on dataset '{}', this run on '{}'",
                    paired_path, r.value("dataset", std::string()), c.dataset);
      other_policies.insert(r.value("policy", std::string("?")));
      full[{r["problem_index"].get<int64_t>(), r["sample_index"].get<int64_t>()}] = row_bool(r, "correct");
    }
    std::map<int64_t, std::pair<double, int64_t>> diff;
    int64_t pairs = 0;
    double this_sum = 0, full_sum = 0;
    for (const json& r : rows) {
      if (!selected(r)) continue;
      const int64_t p = r["problem_index"].get<int64_t>();
      auto it = full.find({p, r["sample_index"].get<int64_t>()});
      if (it == full.end()) continue;
      const double a = row_bool(r, "correct"), b = it->second;
      diff[p].first += a - b;
      diff[p].second += 1;
      this_sum += a;
      full_sum += b;
      ++pairs;
    }
    FKV_CHECK_ARG(pairs > 0, "paired run '{}' has no (problem, sample) pair in common with this run's selection",
                  paired_path);
    std::string against_policy;
    for (const auto& p : other_policies) against_policy += (against_policy.empty() ? "" : ",") + p;
    if (against_policy != "full")
      FKV_LOG_WARN("paired run '{}' is not a full-cache run (policies: {})", paired_path, against_policy);
    std::vector<double> ds;
    std::vector<int64_t> dk;
    split(diff, ds, dk);
    const Interval d = bootstrap_ci(ds, dk, c.seed);
    s["paired"] = json{{"against", paired_path},
                       {"against_policy", against_policy},
                       {"n_problems", static_cast<int64_t>(diff.size())},
                       {"n_pairs", pairs},
                       {"accuracy", this_sum / static_cast<double>(pairs)},
                       {"accuracy_against", full_sum / static_cast<double>(pairs)},
                       {"diff", d.estimate},
                       {"ci_low", d.low},
                       {"ci_high", d.high}};
  }
  return s;
}

// ---- run ------------------------------------------------------------------------------------------------

json run_generate_eval(const GenerateEvalConfig& config, const GenerateEvalRun& run) {
  FKV_CHECK_ARG(!run.output.empty(), "generate: an output JSONL path is needed (--output F.jsonl)");
  judge::register_policies();
  GenerateEvalConfig c = config.resolved();
  const model::LoadOptions lo = model::resolve_load_options(run.load);  // a GPU that is not there fails here
  const std::string model_path = resolve_model(run.model);
  const double t_hash = now_seconds();
  const std::string model_sha = model_sha256(model_path);
  judge::resolve_judge(c.eviction, model_path, model_sha, judge::JudgeShape{});  // shape checked once loaded
  const std::string ds_path = c.problems_file.empty() ? dataset_file(c.data_dir, c.dataset) : c.problems_file;
  const std::string ds_sha = sha256_file(ds_path);
  FKV_LOG_DEBUG("hashed model and data in {:.1f} s", now_seconds() - t_hash);
  const std::vector<Problem> all = read_problems(ds_path);
  FKV_CHECK_ARG(c.offset < static_cast<int64_t>(all.size()), "offset {} is past the {} problems of '{}'", c.offset,
                all.size(), ds_path);
  const int64_t end = c.limit > 0 ? std::min<int64_t>(static_cast<int64_t>(all.size()), c.offset + c.limit)
                                   : static_cast<int64_t>(all.size());
  std::vector<int64_t> selection;
  for (int64_t i = c.offset; i < end; ++i) selection.push_back(i);
  const std::string hash = config_hash(c, model_sha, ds_sha, lo);
  if (c.sampling.is_greedy() && c.samples > 1)
    FKV_LOG_WARN("greedy decoding with {} samples per problem: every sample of a problem is the same; pass "
                 "--temperature (the protocol: 0.6, --top-p 0.95, --top-k 20) for avg@k",
                 c.samples);

  // ---- resume
  std::vector<json> rows;
  std::set<std::pair<int64_t, int64_t>> have;
  if (file_exists(run.output)) {
    rows = read_sample_lines(run.output, /*repair=*/true);
    for (const json& r : rows) {
      FKV_CHECK_ARG(r["config_hash"].get<std::string>() == hash,
                    "output '{}' was produced with a different config/model (config_hash {} != {}); use another "
                    "--output or delete it",
                    run.output, r["config_hash"].get<std::string>().substr(0, 12), hash.substr(0, 12));
      const auto key = std::make_pair(r["problem_index"].get<int64_t>(), r["sample_index"].get<int64_t>());
      FKV_CHECK_FORMAT(have.insert(key).second, "output '{}' holds problem {} sample {} twice; delete the file",
                       run.output, key.first, key.second);
    }
    FKV_LOG_INFO("resuming '{}': {} samples already there", run.output, rows.size());
  }
  std::vector<std::pair<int64_t, std::vector<int64_t>>> work;  // problem -> missing samples
  int64_t n_missing = 0;
  for (int64_t p : selection) {
    std::vector<int64_t> miss;
    for (int64_t j = 0; j < c.samples; ++j)
      if (!have.count({p, j})) miss.push_back(j);
    n_missing += static_cast<int64_t>(miss.size());
    if (!miss.empty()) work.emplace_back(p, std::move(miss));
  }

  // ---- generate
  if (!work.empty()) {
    auto model = model::Transformer::load(model_path, lo);
    if (!c.eviction.judge.empty()) {
      const auto& mc = model->config();
      judge::load_judge_cached(c.eviction.judge)
          ->check_model({mc.n_layer, mc.n_head_kv, mc.head_dim, mc.n_head_q / mc.n_head_kv, 0}, c.eviction.judge);
    }
    const text::Tokenizer tok = text::Tokenizer::from_file(model_path);
    std::optional<text::ChatTemplate> tpl;
    if (c.prompt.chat_template != "none") tpl = text::ChatTemplate::for_tokenizer(tok, c.prompt.chat_template);
    const grading::Dataset ds = grading::parse_dataset(c.dataset);
    runtime::Generator gen(*model, tok);
    const fs::path out_dir = fs::path(run.output).parent_path();
    if (!out_dir.empty()) fs::create_directories(out_dir);
    std::ofstream out(run.output, std::ios::binary | std::ios::app);
    FKV_CHECK_ARG(out.good(), "cannot open '{}' for appending", run.output);
    // --eviction-log: decisions buffered per sample stream, written with the sample (a torn last line of a killed
    // run is cut before appending).
    std::ofstream elog;
    std::map<uint64_t, ojson> elog_events;
    if (!run.eviction_log.empty()) {
      const fs::path d = fs::path(run.eviction_log).parent_path();
      if (!d.empty()) fs::create_directories(d);
      truncate_torn_line(run.eviction_log);
      elog.open(run.eviction_log, std::ios::binary | std::ios::app);
      FKV_CHECK_ARG(elog.good(), "cannot open --eviction-log '{}' for appending", run.eviction_log);
    }
    FKV_LOG_INFO("generate: {} samples to go ({} problems x {} samples, policy {} budget {}), output '{}'", n_missing,
                 selection.size(), c.samples, c.eviction.policy, c.eviction.budget, run.output);
    // Per-problem prompt data, built once per problem.
    struct Prepared {
      std::vector<int32_t> ids;
      int64_t max_new = 0;
      std::string answer;
    };
    std::map<int64_t, Prepared> prepared;
    auto prepare = [&](int64_t pi) -> const Prepared& {
      auto it = prepared.find(pi);
      if (it != prepared.end()) return it->second;
      const Problem& prob = all[static_cast<size_t>(pi)];
      const std::string user = c.prompt.prefix + prob.question + c.prompt.suffix;
      std::string text = user;
      if (tpl) {
        text::ChatOptions co;
        co.enable_thinking = c.prompt.enable_thinking;
        const std::vector<text::ChatMessage> msgs = {{"user", user, std::nullopt}};
        text = tpl->render(msgs, co);
      }
      Prepared pr;
      pr.ids = tok.encode(text, c.prompt.add_special_tokens);
      pr.max_new = c.max_new_tokens;
      if (c.max_length > 0)
        pr.max_new = std::max<int64_t>(0, std::min(pr.max_new, c.max_length - static_cast<int64_t>(pr.ids.size())));
      pr.answer = answer_text(prob.answer, fmt::format("'{}' problem {}", ds_path, pi));
      return prepared.emplace(pi, std::move(pr)).first->second;
    };
    // The missing (problem, sample) pairs in order.
    std::vector<std::pair<int64_t, int64_t>> items;
    for (const auto& [pi, missing] : work)
      for (int64_t j : missing) items.emplace_back(pi, j);
    int64_t done = 0, done_correct = 0;
    // One output row per finished sample: built, appended and flushed right away (a kill loses only the
    // samples in flight).
    auto emit = [&](const std::pair<int64_t, int64_t>& item, const runtime::GenerationResult& r,
                    const std::pair<int64_t, int64_t>& batch_first, int64_t batch_size) {
      const auto [pi, sj] = item;
      const Problem& prob = all[static_cast<size_t>(pi)];
      const Prepared& pr = prepare(pi);
      const grading::GradeResult g = grading::grade(r.text, pr.answer, ds);
      ojson j;
      j["problem_id"] = prob.id;
      j["problem_index"] = pi;
      j["sample_index"] = sj;
      j["seed"] = c.seed;
      j["stream"] = sample_stream(pi, sj);
      j["dataset"] = c.dataset;
      j["policy"] = c.eviction.policy;
      j["budget"] = c.eviction.budget;
      j["window"] = c.eviction.window;
      j["variant"] = evict::to_string(c.eviction.variant);
      j["prompt_tokens"] = static_cast<int64_t>(pr.ids.size());
      j["response"] = r.text;
      j["prompt_ids"] = pr.ids;  // with response_ids: the line is also a fidelity/label trace
      j["response_ids"] = r.ids;
      j["length"] = static_cast<int64_t>(r.ids.size());
      j["finish_reason"] = r.finish_reason;
      j["extracted"] = g.extracted;
      j["correct"] = g.correct;
      j["strict_extracted"] = g.strict_extracted;
      j["strict_correct"] = g.strict_correct;
      j["answer"] = prob.answer;
      j["eviction_events"] = r.eviction_events;
      j["peak_kv_bytes"] = r.peak_kv_bytes;
      j["tokens_per_s"] = r.tokens_per_s;
      j["prefill_seconds"] = r.prefill_seconds;
      j["decode_seconds"] = r.decode_seconds;
      j["eviction_seconds"] = r.eviction_seconds;
      j["batch_first_sample"] = batch_first.second;
      j["batch_size"] = batch_size;
      j["config_hash"] = hash;
      j["batch_first_problem"] = batch_first.first;
      const std::string line = j.dump(-1, ' ', false, ojson::error_handler_t::replace) + "\n";
      out.write(line.data(), static_cast<std::streamsize>(line.size()));
      out.flush();
      FKV_CHECK(out.good(), "writing '{}' failed (disk full?)", run.output);
      rows.push_back(json::parse(line));
      if (elog.is_open()) {
        ojson e;
        e["problem_index"] = pi;
        e["sample_index"] = sj;
        e["stream"] = sample_stream(pi, sj);
        e["policy"] = c.eviction.policy;
        e["budget"] = c.eviction.budget;
        e["window"] = c.eviction.window;
        e["config_hash"] = hash;
        e["prompt_tokens"] = static_cast<int64_t>(pr.ids.size());
        auto node = elog_events.extract(sample_stream(pi, sj));  // empty: the sample was never evicted
        e["events"] = node ? std::move(node.mapped()) : ojson::array();
        const std::string el = e.dump(-1) + "\n";
        elog.write(el.data(), static_cast<std::streamsize>(el.size()));
        elog.flush();
        FKV_CHECK(elog.good(), "writing '{}' failed (disk full?)", run.eviction_log);
      }
      done_correct += g.correct;
      ++done;
    };
    auto options = [&](size_t b0, size_t b1) {
      runtime::GenerateOptions o;
      o.max_new_tokens = c.max_new_tokens;
      o.sampling = c.sampling;
      o.seed = c.seed;
      o.prefill_chunk = c.prefill_chunk;
      o.kv_f16 = c.kv_dtype == "f16";
      o.eviction = c.eviction;
      if (elog.is_open())
        o.eviction_observer = [&elog_events](const evict::EvictionRecord& r) {
          const int64_t H = r.pos.size(0), n = r.pos.size(1);
          ojson dropped = ojson::array();
          for (int64_t h = 0; h < H; ++h) {
            std::vector<char> kept(static_cast<size_t>(n), 0);
            const int64_t* kp = r.keep[h].data_ptr<int64_t>();
            for (int64_t i = 0; i < r.keep.size(1); ++i) kept[static_cast<size_t>(kp[i])] = 1;
            const int64_t* pp = r.pos[h].data_ptr<int64_t>();
            std::vector<int64_t> d;
            for (int64_t i = 0; i < n; ++i)
              if (!kept[static_cast<size_t>(i)]) d.push_back(pp[i]);
            dropped.push_back(std::move(d));
          }
          ojson ev;
          ev["event"] = r.event;
          ev["layer"] = r.layer;
          ev["at"] = r.pos.max().item<int64_t>();
          ev["n"] = n;
          ev["dropped"] = std::move(dropped);
          elog_events[r.stream].push_back(std::move(ev));  // a new (null) entry becomes an array
        };
      for (size_t k = b0; k < b1; ++k) {
        o.stream_ids.push_back(sample_stream(items[k].first, items[k].second));
        o.max_new_tokens_each.push_back(prepare(items[k].first).max_new);
      }
      return o;
    };
    auto prompts_of = [&](size_t b0, size_t b1) {
      std::vector<std::vector<int32_t>> prompts;
      for (size_t k = b0; k < b1; ++k) prompts.push_back(prepare(items[k].first).ids);
      return prompts;
    };
    if (c.scheduling == "continuous") {
      // One generate() call over every missing pair with `batch` rows in flight; a finished row takes the next
      // pair. Rows carry the call's cumulative wall times at their finish (the summary keeps the maximum).
      runtime::GenerateOptions o = options(0, items.size());
      o.max_batch = c.batch;
      const int64_t width = std::min<int64_t>(c.batch, static_cast<int64_t>(items.size()));
      gen.generate(prompts_of(0, items.size()), o, {}, [&](int64_t k, const runtime::GenerationResult& r) {
        emit(items[static_cast<size_t>(k)], r, items.front(), width);
        if (done % std::max<int64_t>(c.batch, 1) == 0 || done == n_missing)
          FKV_LOG_INFO("{}/{} samples done, accuracy so far {:.3f}", done, n_missing,
                       static_cast<double>(done_correct) / static_cast<double>(std::max<int64_t>(done, 1)));
      });
    } else {
      // Static batches of up to `batch` pairs that may span problems; a batch ends where max_new_tokens would
      // change and runs until its longest sample finishes.
      for (size_t b0 = 0; b0 < items.size();) {
        size_t b1 = b0 + 1;
        const int64_t max_new = prepare(items[b0].first).max_new;
        while (b1 < items.size() && b1 - b0 < static_cast<size_t>(c.batch) && prepare(items[b1].first).max_new == max_new)
          ++b1;
        gen.generate(prompts_of(b0, b1), options(b0, b1), {}, [&](int64_t k, const runtime::GenerationResult& r) {
          emit(items[b0 + static_cast<size_t>(k)], r, items[b0], static_cast<int64_t>(b1 - b0));
        });
        FKV_LOG_INFO("problems {}..{}: {}/{} samples done, accuracy so far {:.3f}", items[b0].first, items[b1 - 1].first,
                     done, n_missing, static_cast<double>(done_correct) / static_cast<double>(std::max<int64_t>(done, 1)));
        b0 = b1;
      }
    }
  }

  // ---- summary
  std::vector<json> paired;
  if (!run.paired_with.empty()) {
    FKV_CHECK_ARG(file_exists(run.paired_with), "--paired-with '{}' not found", run.paired_with);
    paired = read_sample_lines(run.paired_with, /*repair=*/false);
  }
  json s = summarize(c, rows, selection, run.paired_with.empty() ? nullptr : &paired, run.paired_with);
  s["config"] = c.to_json();
  s["config_hash"] = hash;
  s["model"] = json{{"path", model_path},       {"sha256", model_sha},   {"weights", lo.weight_format},
                    {"activations", lo.activations}, {"backend", lo.backend}, {"device", lo.device},
                    {"dtype", lo.dtype}};
  s["dataset_file"] = ds_path;
  s["dataset_sha256"] = ds_sha;
  s["output"] = run.output;
  s["generated_now"] = n_missing;
  std::string summary_path = run.summary;
  if (summary_path.empty()) {
    summary_path = run.output;
    if (summary_path.size() > 6 && summary_path.ends_with(".jsonl")) summary_path.resize(summary_path.size() - 6);
    summary_path += ".summary.json";
  }
  write_file_atomic(summary_path, s.dump(2) + "\n");
  return s;
}

}  // namespace fkv::harness
