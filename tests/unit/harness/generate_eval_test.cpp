// fkv-eval generate (harness/generate_eval.h): strict config keys and round trips, the configs/eval presets,
// the bootstrap CI on hand cases, and, on the tiny GGUF model with a 3-problem data set written to a temp
// directory, the per-sample JSONL contract: a killed run (one complete line + a torn half line) resumes to
// exactly the lines of an uninterrupted run, batching does not change a sample, a different config is refused,
// and the paired difference of a run against itself is 0 with CI [0, 0].
#include "support/catch.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/json.h"
#include "foresightkv/harness/generate_eval.h"
#include "support/paths.h"

using namespace fkv;
using harness::GenerateEvalConfig;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("fkv_generate_eval_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

std::vector<json> lines_of(const std::string& path) {
  std::ifstream f(path);
  std::vector<json> out;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

// Per-sample fields that depend on wall time or on how the samples were batched.
json without_timing(json j) {
  for (const char* k : {"tokens_per_s", "prefill_seconds", "decode_seconds", "eviction_seconds", "batch_first_sample",
                        "batch_size", "batch_first_problem"})
    j.erase(k);
  return j;
}

std::map<std::pair<int64_t, int64_t>, json> by_key(const std::vector<json>& rows) {
  std::map<std::pair<int64_t, int64_t>, json> m;
  for (const auto& r : rows) {
    const auto key = std::make_pair(r["problem_index"].get<int64_t>(), r["sample_index"].get<int64_t>());
    REQUIRE(m.emplace(key, without_timing(r)).second);  // no duplicates
  }
  return m;
}

// GPT-2's byte -> printable code point map (bytes_to_unicode), as UTF-8.
std::string byte_token(int b) {
  int cp = b;
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

// A tiny golden bundle (vocabulary >= 128) as an HF directory with a byte-level tokenizer.json whose ids are
// the byte values 0..vocab-1 (no merges), so ASCII prompts encode inside the model's vocabulary.
std::string tiny_model_dir(const std::string& dir, const std::string& bundle) {
  const std::string src = test::test_data("tiny_models/" + bundle);
  fs::create_directories(dir);
  fs::copy_file(src + "/config.json", dir + "/config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(src + "/model.safetensors", dir + "/model.safetensors", fs::copy_options::overwrite_existing);
  json vocab = json::object();
  const int n_vocab = std::min(256, read_json_file(src + "/config.json")["vocab_size"].get<int>());
  for (int b = 0; b < n_vocab; ++b) vocab[byte_token(b)] = b;
  const json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  const json tok = {{"version", "1.0"},
                    {"truncation", nullptr},
                    {"padding", nullptr},
                    {"added_tokens", json::array()},
                    {"normalizer", nullptr},
                    {"pre_tokenizer", bl},
                    {"post_processor", nullptr},
                    {"decoder", bl},
                    {"model",
                     {{"type", "BPE"},
                      {"dropout", nullptr},
                      {"unk_token", nullptr},
                      {"continuing_subword_prefix", nullptr},
                      {"end_of_word_suffix", nullptr},
                      {"fuse_unk", false},
                      {"byte_fallback", false},
                      {"ignore_merges", false},
                      {"vocab", vocab},
                      {"merges", json::array()}}}};
  write_file_atomic(dir + "/tokenizer.json", tok.dump());
  return dir;
}

}  // namespace

TEST_CASE("generate config: strict keys, defaults and round trip", "[unit][harness]") {
  const GenerateEvalConfig d;
  CHECK(d.sampling.is_greedy());
  CHECK(d.prompt.prefix ==
        "Please solve the following problem step by step and put the final answer within \\boxed{}.\n");
  CHECK(GenerateEvalConfig::from_json(d.to_json()).to_json() == d.to_json());
  CHECK(GenerateEvalConfig::from_json(json::object()).to_json() == d.to_json());

  const json j = json::parse(R"({
    "dataset": "aime24", "data_dir": "/data", "limit": 5, "offset": 2, "samples": 4, "seed": 99,
    "max_new_tokens": 100, "max_length": 300, "batch": 2, "scheduling": "static", "prefill_chunk": 64, "kv_dtype": "f16",
    "sampling": {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.05},
    "prompt": {"prefix": "P:", "suffix": "!", "chat_template": "chatml", "enable_thinking": false,
               "add_special_tokens": true},
    "eviction": {"policy": "h2o", "budget": 64, "window": 16, "variant": "parity"}})");
  const GenerateEvalConfig c = GenerateEvalConfig::from_json(j);
  CHECK(c.dataset == "aime24");
  CHECK(c.limit == 5);
  CHECK(c.offset == 2);
  CHECK(c.samples == 4);
  CHECK(c.seed == 99);
  CHECK(c.max_length == 300);
  CHECK(c.scheduling == "static");
  CHECK(d.scheduling == "continuous");
  CHECK(c.sampling.temperature == 0.6f);
  CHECK(c.sampling.top_k == 20);
  CHECK(c.sampling.top_p == 0.95f);
  CHECK(c.sampling.min_p == 0.05f);
  CHECK(c.prompt.enable_thinking == std::optional<bool>(false));
  CHECK(c.prompt.add_special_tokens);
  CHECK(c.eviction.policy == "h2o");
  CHECK(c.eviction.variant == evict::Variant::Parity);
  const json back = c.to_json();
  CHECK(back["sampling"]["temperature"] == json(0.6));  // printed as written, not 0.60000002384
  CHECK(back["sampling"]["greedy"] == false);
  CHECK(GenerateEvalConfig::from_json(back).to_json() == back);
  // resolved: canonical dataset name, batch default/clamp, absolute data_dir, resolved eviction
  GenerateEvalConfig r = c;
  r.dataset = "gsm8k_test";
  r.batch = 0;
  r.data_dir = "rel/dir";
  const GenerateEvalConfig rr = r.resolved();
  CHECK(rr.dataset == "gsm8k");
  CHECK(rr.batch == 4);
  CHECK(fs::path(rr.data_dir).is_absolute());
  CHECK(rr.eviction.protect >= 0);
  CHECK(rr.eviction.query_window >= 0);
  r.batch = 9;  // more than the samples: batches span problems
  CHECK(r.resolved().batch == 9);
  CHECK(GenerateEvalConfig::from_json(rr.to_json()).resolved().to_json() == rr.to_json());

  auto throws_with = [](const std::string& text, const std::string& needle) {
    INFO(text);
    CHECK_THROWS_WITH(GenerateEvalConfig::from_json(json::parse(text)), Catch::Contains(needle));
  };
  throws_with(R"({"dataset": "gsm8k", "sample": 4})", "unknown key 'sample'");
  throws_with(R"({"sampling": {"temprature": 0.6}})", "unknown key 'temprature'");
  throws_with(R"({"prompt": {"system": "x"}})", "unknown key 'system'");
  throws_with(R"({"eviction": {"policy": "h2o", "budgte": 3}})", "unknown key 'budgte'");
  throws_with(R"({"samples": "four"})", "samples");
  throws_with(R"({"sampling": {"greedy": true, "temperature": 0.6}})", "greedy");
  auto resolve_throws = [](GenerateEvalConfig x, const std::string& needle) {
    CHECK_THROWS_WITH(x.resolved(), Catch::Contains(needle));
  };
  GenerateEvalConfig bad;
  bad.kv_dtype = "bf16";
  resolve_throws(bad, "kv_dtype");
  bad = {};
  bad.samples = 0;
  resolve_throws(bad, "samples");
  bad = {};
  bad.scheduling = "dynamic";
  resolve_throws(bad, "scheduling");
  bad = {};
  bad.dataset = "aime2024";
  resolve_throws(bad, "aime24");
  bad = {};
  bad.eviction.policy = "h2o";  // no budget
  resolve_throws(bad, "budget");
  bad = {};
  bad.sampling.temperature = -1;
  CHECK_THROWS_AS(bad.resolved(), InvalidArgument);
}

TEST_CASE("configs/eval presets load with strict keys", "[unit][harness]") {
  const std::string dir = test::source_dir() + "/configs/eval";
  REQUIRE(is_directory(dir));
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".json") continue;
    INFO(e.path().string());
    GenerateEvalConfig c;
    REQUIRE_NOTHROW(c = GenerateEvalConfig::load(e.path().string()));
    CHECK_NOTHROW(c.resolved());
    // every key of the file is one the loader knows: an unknown one must fail
    json j = read_json_file(e.path().string());
    j["unknown_key_for_test"] = 1;
    const std::string tmp = temp_dir("preset") + "/x.json";
    write_file_atomic(tmp, j.dump());
    CHECK_THROWS_WITH(GenerateEvalConfig::load(tmp), Catch::Contains("unknown_key_for_test"));
    ++n;
  }
  CHECK(n >= 3);
  const auto aime = GenerateEvalConfig::load(dir + "/aime_protocol.json");
  CHECK(aime.samples == 32);
  CHECK(aime.sampling.temperature == 0.6f);
  CHECK(aime.sampling.top_p == 0.95f);
  CHECK(aime.sampling.top_k == 20);
  CHECK(aime.max_length == 16384);
  CHECK(aime.eviction.budget == 1024);
  CHECK(aime.eviction.window == 256);
  CHECK(aime.prompt.prefix == harness::kProtocolPromptPrefix);
  const auto greedy = GenerateEvalConfig::load(dir + "/gsm8k_qwen_greedy.json");
  CHECK(greedy.sampling.is_greedy());
  CHECK(greedy.max_new_tokens == 512);
  CHECK(greedy.eviction.is_full());
  const auto sampled = GenerateEvalConfig::load(dir + "/gsm8k_qwen_sampled.json");
  CHECK(sampled.samples == 4);
  CHECK(sampled.sampling.top_k == 20);
}

TEST_CASE("bootstrap CI and percentiles on hand cases", "[unit][harness]") {
  using harness::bootstrap_ci;
  // all correct: [1, 1]; none correct: [0, 0]
  auto all = bootstrap_ci({4, 4, 4, 4, 4}, {4, 4, 4, 4, 4}, 0);
  CHECK(all.estimate == 1.0);
  CHECK(all.low == 1.0);
  CHECK(all.high == 1.0);
  auto none = bootstrap_ci({0, 0, 0}, {2, 2, 2}, 0);
  CHECK(none.low == 0.0);
  CHECK(none.high == 0.0);
  // a mixed case: the mean lies inside a non-degenerate interval within [0, 1]; deterministic per seed
  std::vector<double> s = {0, 1, 2, 3, 4, 4, 1, 0, 2, 3, 4, 1};
  std::vector<int64_t> k(s.size(), 4);
  auto a = bootstrap_ci(s, k, 7), b = bootstrap_ci(s, k, 7), c = bootstrap_ci(s, k, 8);
  CHECK(a.estimate == Approx(25.0 / 48.0));
  CHECK(a.low < a.estimate);
  CHECK(a.high > a.estimate);
  CHECK(a.low > 0.2);
  CHECK(a.high < 0.8);
  CHECK(a.low == b.low);
  CHECK(a.high == b.high);
  CHECK(c.low == Approx(a.low).margin(0.05));  // another seed: another resampling, about the same interval
  CHECK(c.high == Approx(a.high).margin(0.05));
  // normal approximation: se of the mean of the per-problem rates ~ 0.105 -> half width ~ 0.2
  CHECK(a.high - a.low == Approx(0.39).margin(0.12));
  // unequal counts: the statistic is the pooled fraction
  auto u = bootstrap_ci({1, 3}, {1, 3}, 0);
  CHECK(u.estimate == 1.0);
  CHECK(harness::bootstrap_ci({}, {}, 0).estimate == 0.0);
  // numpy.percentile (linear)
  CHECK(harness::percentile({1, 2, 3, 4}, 90) == Approx(3.7));
  CHECK(harness::percentile({5}, 90) == 5.0);
  CHECK(harness::percentile({3, 1, 2}, 50) == 2.0);
  CHECK(harness::percentile({}, 50) == 0.0);
  CHECK(harness::sample_stream(0, 3) == 3u);
  CHECK(harness::sample_stream(2, 5) == 2'000'011u);
}

TEST_CASE("evaluation data files: questions, answers and ids", "[unit][harness]") {
  const std::string dir = test::shared_data();
  const std::string gsm = dir + "/eval/gsm8k_test.jsonl";
  if (!file_exists(gsm)) {
    WARN("shared data missing: " << gsm);
    return;
  }
  CHECK(harness::dataset_file(dir, "gsm8k") == gsm);
  auto g = harness::read_problems(gsm);
  REQUIRE(g.size() > 100);
  CHECK(g[0].question.rfind("Janet", 0) == 0);
  CHECK(g[0].answer.get<std::string>().find("#### 18") != std::string::npos);
  CHECK(g[3].id == json(3));
  auto q = harness::read_problems(harness::dataset_file(dir, "gpqa"));
  CHECK(q.size() == 54);
  CHECK(q[0].answer == json("D"));
  CHECK(q[0].question.find("A) ") != std::string::npos);
  auto amc = harness::read_problems(harness::dataset_file(dir, "amc23"));
  CHECK(amc[0].answer.is_number());
  auto aime = harness::read_problems(harness::dataset_file(dir, "aime24"));
  CHECK(aime.size() == 30);
  CHECK(aime[0].id == json(60));
  CHECK_THROWS_WITH(harness::dataset_file(dir, "math"), Catch::Contains("FKV_DATA_DIR"));
}

TEST_CASE("generate on a tiny model: JSONL contract, resume after a kill, batching, config guard, pairing",
          "[integration][harness]") {
  const std::string dir = temp_dir("tiny");
  // llama_g1 (untied, vocabulary 128): its samples differ by stream (the tied bundles collapse onto "\n")
  const std::string model = tiny_model_dir(dir + "/model", "llama_g1");
  fs::create_directories(dir + "/eval");
  {
    std::ofstream f(dir + "/eval/gsm8k_test.jsonl");
    f << R"({"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"})" "\n"
      << R"({"question": "Tom has 4 apples and eats one. How many are left?", "answer": "#### 3"})" "\n"
      << "\n"
      << R"({"question": "Compute 6 * 7.", "answer": "#### 42"})" "\n";
  }
  GenerateEvalConfig c;
  c.dataset = "gsm8k";
  c.data_dir = dir;
  c.samples = 2;
  c.seed = 7;
  c.max_new_tokens = 12;
  c.sampling.temperature = 1.0f;
  c.sampling.top_k = 0;
  c.prompt.chat_template = "chatml";  // the tiny bundle has no chat template
  c.eviction.policy = "streamingllm";
  c.eviction.budget = 24;
  c.eviction.window = 4;
  harness::GenerateEvalRun run;
  run.model = model;

  // ---- uninterrupted run
  run.output = dir + "/a.jsonl";
  const json sa = harness::run_generate_eval(c, run);
  const auto a = lines_of(run.output);
  REQUIRE(a.size() == 6);
  const auto ka = by_key(a);
  for (int64_t p = 0; p < 3; ++p)
    for (int64_t s = 0; s < 2; ++s) CHECK(ka.count({p, s}) == 1);
  for (const char* f : {"problem_id", "problem_index", "sample_index", "seed", "stream", "dataset", "policy", "budget",
                        "window", "variant", "prompt_tokens", "response", "length", "finish_reason", "extracted",
                        "correct", "strict_extracted", "strict_correct", "answer", "tokens_per_s", "decode_seconds",
                        "eviction_seconds", "eviction_events", "peak_kv_bytes", "config_hash"})
    CHECK(a[0].contains(f));
  CHECK(a[0]["policy"] == "streamingllm");
  CHECK(a[0]["budget"] == 24);
  CHECK(a[3]["stream"] == harness::sample_stream(1, a[3]["sample_index"].get<int64_t>()));
  CHECK(a[5]["answer"] == "#### 42");
  CHECK(a[5]["problem_id"] == 2);  // the blank line is not a problem
  CHECK(a[0]["prompt_tokens"].get<int64_t>() > 24);  // prompts are longer than the budget: prefill evicts
  CHECK(a[0]["response"] != a[1]["response"]);  // different streams
  CHECK(a[0]["eviction_events"].get<int64_t>() > 0);
  // summary file and fields
  const std::string summary_path = dir + "/a.summary.json";
  REQUIRE(file_exists(summary_path));
  const json sf = read_json_file(summary_path);
  CHECK(sf == sa);
  for (const char* f : {"config", "model", "seed", "dataset", "n_problems", "samples", "accuracy", "ci_low", "ci_high",
                        "strict_accuracy", "mean_length", "p90_length", "tokens_per_s", "peak_kv_bytes",
                        "eviction_time_share", "rows", "config_hash", "dataset_sha256"})
    CHECK(sa.contains(f));
  CHECK(sa["n_problems"] == 3);
  CHECK(sa["n_samples"] == 6);
  CHECK(sa["generated_now"] == 6);
  CHECK(sa["model"]["sha256"] == harness::model_sha256(model));
  CHECK(sa["model"]["sha256"].get<std::string>().size() == 64);
  CHECK(sa["config"]["eviction"]["policy"] == "streamingllm");
  CHECK(sa["config"]["data_dir"] == fs::weakly_canonical(dir).string());
  CHECK(sa["rows"].size() == 1);
  CHECK(sa["rows"][0]["policy"] == "streamingllm");
  CHECK(sa["ci_low"].get<double>() <= sa["accuracy"].get<double>());
  CHECK(sa["accuracy"].get<double>() <= sa["ci_high"].get<double>());
  CHECK(sa["tokens_per_s"].get<double>() > 0);
  CHECK(sa["peak_kv_bytes"].get<int64_t>() > 0);
  CHECK(sa["eviction_time_share"].get<double>() >= 0);
  double mean_len = 0;
  for (const auto& r : a) mean_len += r["length"].get<double>() / 6.0;
  CHECK(sa["mean_length"].get<double>() == Approx(mean_len));

  // ---- a rerun on the complete file adds nothing and leaves it byte-identical
  const std::string bytes_a = read_file(run.output);
  const json again = harness::run_generate_eval(c, run);
  CHECK(again["generated_now"] == 0);
  CHECK(read_file(run.output) == bytes_a);
  CHECK(again["accuracy"] == sa["accuracy"]);

  // ---- kill simulation: one complete line + half of the next
  run.output = dir + "/b.jsonl";
  {
    const size_t first_nl = bytes_a.find('\n');
    const size_t second_nl = bytes_a.find('\n', first_nl + 1);
    std::ofstream f(run.output, std::ios::binary);
    f << bytes_a.substr(0, first_nl + 1) << bytes_a.substr(first_nl + 1, (second_nl - first_nl) / 2);
  }
  const json sb = harness::run_generate_eval(c, run);
  CHECK(sb["generated_now"] == 5);
  const auto b = lines_of(run.output);
  REQUIRE(b.size() == 6);
  CHECK(by_key(b) == ka);
  CHECK(sb["accuracy"] == sa["accuracy"]);

  // ---- batching does not change a sample (one sample per forward batch)
  run.output = dir + "/c.jsonl";
  GenerateEvalConfig c1 = c;
  c1.batch = 1;
  harness::run_generate_eval(c1, run);
  CHECK(by_key(lines_of(run.output)) == ka);

  // ---- static batches that span problems (prompts of different lengths in one forward batch)
  run.output = dir + "/mixed.jsonl";
  GenerateEvalConfig c5 = c;
  c5.batch = 5;
  c5.scheduling = "static";
  const json s5 = harness::run_generate_eval(c5, run);
  const auto d = lines_of(run.output);
  REQUIRE(d.size() == 6);
  CHECK(by_key(d) == ka);
  CHECK(d[0]["batch_size"] == 5);
  CHECK(d[4]["batch_first_problem"] == 0);
  CHECK(d[4]["problem_index"] == 2);
  CHECK(d[5]["batch_size"] == 1);
  CHECK(d[5]["batch_first_problem"] == 2);
  CHECK(d[5]["batch_first_sample"] == 1);
  CHECK(d[0]["prompt_tokens"] != d[2]["prompt_tokens"]);  // the batch really mixes prompt lengths
  CHECK(s5["accuracy"] == sa["accuracy"]);

  // ---- continuous batching: 2 rows in flight, a finished row takes the next pair; rows land in finish order
  // and carry the call's cumulative times, whose maximum is the call's total
  for (int64_t width : {2, 4}) {
    run.output = dir + "/cont" + std::to_string(width) + ".jsonl";
    GenerateEvalConfig cc = c;
    cc.batch = width;
    cc.scheduling = "continuous";
    const json scc = harness::run_generate_eval(cc, run);
    const auto e = lines_of(run.output);
    REQUIRE(e.size() == 6);
    CHECK(by_key(e) == ka);
    double max_decode = 0, prev = 0;
    for (const auto& r : e) {
      CHECK(r["batch_size"] == width);
      CHECK(r["batch_first_problem"] == 0);
      CHECK(r["batch_first_sample"] == 0);
      CHECK(r["decode_seconds"].get<double>() >= prev);
      prev = r["decode_seconds"].get<double>();
      max_decode = std::max(max_decode, prev);
    }
    CHECK(scc["decode_seconds"].get<double>() == Approx(max_decode));
    CHECK(scc["accuracy"] == sa["accuracy"]);
    CHECK(scc["tokens_per_s"].get<double>() > 0);
    // the config hash ignores the schedule: a static run may resume a continuous one
    cc.scheduling = "static";
    CHECK(harness::run_generate_eval(cc, run)["generated_now"] == 0);
  }

  // ---- extending the run in place: more samples only adds the missing ones
  GenerateEvalConfig c3 = c;
  c3.samples = 3;
  run.output = dir + "/b.jsonl";
  const json s3 = harness::run_generate_eval(c3, run);
  CHECK(s3["generated_now"] == 3);
  CHECK(lines_of(run.output).size() == 9);

  // ---- a different config on the same output is refused, and the file is untouched
  run.output = dir + "/a.jsonl";
  GenerateEvalConfig other = c;
  other.seed = 8;
  CHECK_THROWS_WITH(harness::run_generate_eval(other, run), Catch::Contains("different config/model"));
  other = c;
  other.eviction.budget = 32;
  CHECK_THROWS_AS(harness::run_generate_eval(other, run), InvalidArgument);
  CHECK(read_file(run.output) == bytes_a);
  // q8 activations change the tokens a run may produce: they join the hash, so they are refused too
  {
    harness::GenerateEvalRun q8 = run;
    q8.load.activations = "q8";
    CHECK_THROWS_WITH(harness::run_generate_eval(c, q8), Catch::Contains("different config/model"));
    CHECK(read_file(run.output) == bytes_a);
  }
  // so do weights converted at load (another rounding and another product kernel)
  {
    harness::GenerateEvalRun bf = run;
    bf.load.weight_format = "bf16";
    CHECK_THROWS_WITH(harness::run_generate_eval(c, bf), Catch::Contains("different config/model"));
    CHECK(read_file(run.output) == bytes_a);
  }

  // ---- paired with itself: diff 0, CI [0, 0]
  run.paired_with = dir + "/a.jsonl";
  run.summary = dir + "/paired.summary.json";
  const json sp = harness::run_generate_eval(c, run);
  REQUIRE(sp.contains("paired"));
  CHECK(sp["paired"]["diff"] == 0.0);
  CHECK(sp["paired"]["ci_low"] == 0.0);
  CHECK(sp["paired"]["ci_high"] == 0.0);
  CHECK(sp["paired"]["n_problems"] == 3);
  CHECK(sp["paired"]["n_pairs"] == 6);
  CHECK(file_exists(dir + "/paired.summary.json"));
  // a full-cache run with the same seed pairs with it sample by sample
  GenerateEvalConfig full = c;
  full.eviction = evict::EvictionConfig{};
  run.output = dir + "/full.jsonl";
  run.paired_with.clear();
  run.summary.clear();
  harness::run_generate_eval(full, run);
  run.output = dir + "/a.jsonl";
  run.paired_with = dir + "/full.jsonl";
  const json sf2 = harness::run_generate_eval(c, run);
  CHECK(sf2["paired"]["n_pairs"] == 6);
  CHECK(sf2["paired"]["against_policy"] == "full");
  CHECK(sf2["paired"]["ci_low"].get<double>() <= sf2["paired"]["diff"].get<double>());
  // a paired run of another seed is refused
  run.paired_with = dir + "/a.jsonl";
  run.output = dir + "/d.jsonl";
  CHECK_THROWS_WITH(harness::run_generate_eval([&] { auto x = c; x.seed = 9; return x; }(), run),
                    Catch::Contains("seed"));

  // ---- a corrupt line in the middle is an error, not a silent drop
  run.paired_with.clear();
  run.output = dir + "/e.jsonl";
  {
    std::ofstream f(run.output, std::ios::binary);
    f << bytes_a.substr(0, bytes_a.find('\n') + 1) << "garbage\n" << bytes_a.substr(bytes_a.find('\n') + 1);
  }
  CHECK_THROWS_AS(harness::run_generate_eval(c, run), FormatError);
  if (!std::getenv("FKV_KEEP_TEST_FILES")) fs::remove_all(dir);
}
