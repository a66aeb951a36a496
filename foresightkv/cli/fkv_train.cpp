// fkv-train: training the judge (foresightkv-spec.md §D, §E).
//   sft     supervised distillation of Golden Eviction (feature store + pairwise ranking loss)
//   grpo    reinforcement learning of the judge over the eviction MDP (rollouts, group advantages, clipped surrogate)
//   import  a judge from an official ForesightKV HF checkpoint (only the judge_model keys are read)
// Thin: parsing and printing only; the work lives in foresightkv/train/ and foresightkv/judge/.
#include <ATen/Parallel.h>

#include <iostream>
#include <string>
#include <vector>

#include "foresightkv/cli/args.h"
#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/harness/generate_eval.h"
#include "foresightkv/judge/judge.h"
#include "foresightkv/model/transformer.h"
#include "foresightkv/runtime/bench.h"
#include "foresightkv/train/grpo.h"
#include "foresightkv/train/sft.h"

using fkv::json;
using fkv::cli::Args;
using fkv::cli::Command;
using fkv::cli::OptionSpec;

namespace {

std::string dashed(std::string k) {
  for (auto& c : k)
    if (c == '_') c = '-';
  return k;
}

// Config keys overridable as --KEY (dashes): values parsed as the type the default config has.
json apply_overrides(json cfg, const Args& a, const std::vector<std::string>& keys, const json& defaults) {
  for (const auto& k : keys) {
    const std::string opt = dashed(k);
    if (!a.has(opt)) continue;
    const json& d = defaults.at(k);
    const std::string v = a.get(opt);
    if (d.is_string()) cfg[k] = v;
    else if (d.is_number_integer() || d.is_number_unsigned()) cfg[k] = a.get_int(opt, 0);
    else cfg[k] = a.get_double(opt, 0);
  }
  return cfg;
}

// --config FILE (optional) with --KEY overrides, validated by the config type's strict from_json.
template <class Config>
Config load_config(const Args& a) {
  json cfg = a.has("config") ? fkv::read_json_file(a.get("config")) : json::object();
  FKV_CHECK_ARG(cfg.is_object(), "--config: expected a JSON object");
  return Config::from_json(apply_overrides(cfg, a, Config::keys(), Config{}.to_json()));
}

int cmd_sft(const Args& a) {
  const auto c = load_config<fkv::train::SftConfig>(a);
  const fkv::train::SftResult r = fkv::train::run_sft(c, a.require("output"), a.flag("resume"));
  std::cout << json{{"final", r.final_path},
                    {"steps_run", r.steps_run},
                    {"seconds", r.seconds},
                    {"extract_seconds", r.extract_seconds},
                    {"train_seconds", r.train_seconds},
                    {"peak_rss_bytes", fkv::runtime::peak_rss_bytes()},
                    {"last", r.last_log}}
                   .dump()
            << "\n";
  return 0;
}

int cmd_grpo(const Args& a) {
  const auto c = load_config<fkv::train::GrpoConfig>(a);
  const fkv::train::GrpoResult r = fkv::train::run_grpo(c, a.require("output"), a.flag("resume"));
  if (!r.final_path.empty())
    std::cout << json{{"final", r.final_path},
                      {"steps_run", r.steps_run},
                      {"seconds", r.seconds},
                      {"peak_rss_bytes", fkv::runtime::peak_rss_bytes()},
                      {"last", r.last_log}}
                     .dump()
              << "\n";
  return 0;
}

int cmd_scale(const Args& a) {
  const std::string in = a.require("judge"), out = a.require("output");
  FKV_CHECK_ARG(a.has("scale"), "--scale S is required (S > 0; the sampler's temperature is 1/S)");
  const double s = a.get_double("scale", 1.0);
  fkv::judge::Judge j = fkv::judge::Judge::load(in);
  FKV_CHECK_ARG(j.meta().value("kind", std::string("judge")) == "judge",
                "{} is a training checkpoint, not a judge file: pass its final.safetensors or step_NNNNNN.safetensors",
                in);
  j.scale_output(s);
  j.meta()["scaled_from"] = in;
  j.save(out);
  std::cout << json{{"output", out}, {"score_scale", j.meta()["score_scale"]}, {"layers", j.shape().n_layer}}.dump()
            << "\n";
  return 0;
}

int cmd_import(const Args& a) {
  fkv::judge::Judge j = fkv::judge::Judge::load(a.require("hf"));
  const std::string mp = fkv::model::resolve_model_path(a.require("model"));
  auto m = fkv::model::Transformer::load(mp);
  const auto& c = m->config();
  j.adopt_model_shape({c.n_layer, c.n_head_kv, c.head_dim, c.n_head_q / c.n_head_kv, j.shape().hidden}, a.get("hf"));
  json& meta = j.meta();
  meta["kind"] = "judge";
  meta["model_sha256"] = fkv::harness::model_sha256(mp);
  meta["model"] = mp;
  meta["variant"] = a.get("variant", "parity");
  meta["budget"] = a.get_int("budget", 1024);
  meta["window"] = a.get_int("window", 128);
  meta["imported_from"] = a.get("hf");
  j.save(a.require("output"));
  std::cout << json{{"output", a.get("output")}, {"layers", j.shape().n_layer}, {"kv_heads", j.shape().n_head_kv},
                    {"features", j.shape().n_feature()}, {"hidden", j.shape().hidden}}
                   .dump()
            << "\n";
  return 0;
}

// --config, --output, --resume, then every config key as --KEY (defaults from the config type).
template <class Config>
std::vector<OptionSpec> config_spec(const char* which) {
  std::vector<OptionSpec> s = {
      {"config", true, fmt::format("JSON config (configs/train/{}_*.json); every key below overrides it", which), ""},
      {"output", true, "output directory (log.jsonl, checkpoints, final.safetensors)", ""},
      {"resume", false, "continue the run in --output from its checkpoint", ""}};
  const json d = Config{}.to_json();
  for (const auto& k : Config::keys())
    s.push_back({dashed(k), true, "config key " + k, d.at(k).is_string() ? d.at(k).template get<std::string>() : d.at(k).dump()});
  s.push_back({"log-level", true, "log level", "info"});
  s.push_back({"help", false, "show this help", ""});
  return s;
}

std::vector<Command> commands() {
  return {
      {"sft",
       "fkv-train sft --config configs/train/sft_<model>.json [--KEY VALUE ...] --output DIR [--resume]\n"
       "  Extracts the judge's inputs along every trace's golden trajectory into a feature store (resumable), then\n"
       "  trains the judge with the pairwise ranking hinge (spec §D): Adam, warm-up + cosine, batch of traces,\n"
       "  global-norm clip. Writes DIR/log.jsonl (one line per step: loss, ranking accuracy, lr, grad norm, rows/s),\n"
       "  DIR/checkpoint.safetensors (judge + optimizer state, for --resume), DIR/step_NNNNNN.safetensors and\n"
       "  DIR/final.safetensors (the judge; fkv-eval/fkv-model --judge).\n"
       "  On-policy rounds (--rounds R --round-steps N --trajectory mixed|judge|golden): after `steps` updates, R times\n"
       "  roll the current judge out on the training traces, label the states it reaches with the oracle\n"
       "  (DIR/round_r/), and train N more updates on them (docs/training.md).\n"
       "options:",
       "supervised training of the judge on Golden Eviction labels", config_spec<fkv::train::SftConfig>("sft"), cmd_sft},
      {"grpo",
       "fkv-train grpo --config configs/train/grpo_<model>.json --init SFT_JUDGE [--KEY VALUE ...] --output DIR [--resume]\n"
       "  GRPO over the eviction MDP (spec §E): per step, sequences_per_step labelled traces x group_size sampled\n"
       "  rollouts with the current judge (teacher-forced; features recorded, the first B tokens computed once),\n"
       "  reward from the per-token NLL under eviction vs the trace's full-cache NLL/entropy, group-normalised\n"
       "  advantages, clipped surrogate + k3 KL to the SFT judge, one Adam step. Under torchrun\n"
       "  (`torchrun --nproc_per_node=N --no-python fkv-train grpo ...`) the group is split over the ranks (c10d\n"
       "  store collectives) and the update is the same as one process's. Writes DIR/log.jsonl,\n"
       "  DIR/checkpoint.safetensors, DIR/step_NNNNNN.safetensors and DIR/final.safetensors (docs/training.md).\n"
       "options:",
       "reinforcement learning of the judge (GRPO)", config_spec<fkv::train::GrpoConfig>("grpo"), cmd_grpo},
      {"scale",
       "fkv-train scale --judge JUDGE --scale S --output judge.safetensors\n"
       "  Multiplies the judge's output layer (fc2 weight and bias of every layer) by S: the same orderings\n"
       "  (foresightkv_topk unchanged), with the foresightkv sampler's softmax over the top-2D pool at temperature\n"
       "  1/S (docs/training.md, `score_scale`). The metadata records the cumulative score_scale.\n"
       "options:",
       "scale a judge's scores (the sampler's temperature)",
       {{"judge", true, "judge file (.safetensors from fkv-train sft/grpo/import)", ""},
        {"scale", true, "factor S > 0", ""},
        {"output", true, "judge file to write (.safetensors, atomically)", ""},
        {"log-level", true, "log level", "info"},
        {"help", false, "show this help", ""}},
       cmd_scale},
      {"import",
       "fkv-train import --hf CHECKPOINT --model M --output judge.safetensors [--variant parity] [--budget 1024]\n"
       "       [--window 128]\n"
       "  Reads only the judge_model tensors of an official ForesightKV checkpoint (file or HF directory, bf16) and\n"
       "  writes an fkv judge file for model M (shapes checked against it).\n"
       "options:",
       "import a judge from an official HF checkpoint",
       {{"hf", true, "official checkpoint (file or directory)", ""},
        {"model", true, "the model the judge belongs to (GGUF, HF dir or registry name)", ""},
        {"output", true, "judge file (.safetensors)", ""},
        {"variant", true, "feature variant the judge expects", "parity"},
        {"budget", true, "budget B it was trained for", "1024"},
        {"window", true, "eviction length L it was trained for", "128"},
        {"log-level", true, "log level", "info"},
        {"help", false, "show this help", ""}},
       cmd_import},
  };
}

}  // namespace

int main(int argc, char** argv) { return fkv::cli::run_subcommands("fkv-train", argc, argv, commands()); }
