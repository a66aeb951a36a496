#include "foresightkv/train/sft.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/core/timer.h"
#include "foresightkv/evict/policy.h"
#include "foresightkv/harness/generate_eval.h"
#include "foresightkv/model/transformer.h"
#include "foresightkv/train/feature_store.h"

namespace fkv::train {
namespace fs = std::filesystem;

// ---- config -----------------------------------------------------------------------------------------------------

const std::vector<std::string>& SftConfig::keys() {
  static const std::vector<std::string> k = {
      "model", "traces", "eval_traces", "store", "eval_store", "budget", "window", "variant", "steps", "batch",
      "warmup", "lr", "beta1", "beta2", "eps", "clip", "margin", "hidden", "init_std", "seed", "checkpoint_every",
      "eval_every", "log_every", "limit", "eval_limit", "threads", "device", "extract_batch", "trajectory", "rounds",
      "round_steps", "round_limit", "round_policy"};
  return k;
}

json SftConfig::to_json() const {
  return json{{"model", model}, {"traces", traces}, {"eval_traces", eval_traces}, {"store", store},
              {"eval_store", eval_store}, {"budget", budget}, {"window", window}, {"variant", variant},
              {"steps", steps}, {"batch", batch}, {"warmup", warmup}, {"lr", lr}, {"beta1", beta1}, {"beta2", beta2},
              {"eps", eps}, {"clip", clip}, {"margin", margin}, {"hidden", hidden}, {"init_std", init_std},
              {"seed", seed}, {"checkpoint_every", checkpoint_every}, {"eval_every", eval_every},
              {"log_every", log_every}, {"limit", limit}, {"eval_limit", eval_limit}, {"threads", threads},
              {"device", device},
              {"extract_batch", extract_batch}, {"trajectory", trajectory}, {"rounds", rounds},
              {"round_steps", round_steps}, {"round_limit", round_limit}, {"round_policy", round_policy}};
}

SftConfig SftConfig::from_json(const json& j) {
  check_config_keys(j, keys(), "sft config");
  SftConfig c;
  try {
    auto s = [&](const char* k, std::string& v) { if (j.contains(k)) v = j.at(k).get<std::string>(); };
    auto i = [&](const char* k, int64_t& v) { if (j.contains(k)) v = j.at(k).get<int64_t>(); };
    auto d = [&](const char* k, double& v) { if (j.contains(k)) v = j.at(k).get<double>(); };
    s("model", c.model); s("traces", c.traces); s("eval_traces", c.eval_traces); s("store", c.store);
    s("eval_store", c.eval_store); i("budget", c.budget); i("window", c.window); s("variant", c.variant);
    i("steps", c.steps); i("batch", c.batch); i("warmup", c.warmup); d("lr", c.lr); d("beta1", c.beta1);
    d("beta2", c.beta2); d("eps", c.eps); d("clip", c.clip); d("margin", c.margin); i("hidden", c.hidden);
    d("init_std", c.init_std);
    if (j.contains("seed")) c.seed = j.at("seed").get<uint64_t>();
    i("checkpoint_every", c.checkpoint_every); i("eval_every", c.eval_every); i("log_every", c.log_every);
    i("limit", c.limit); i("eval_limit", c.eval_limit); i("threads", c.threads); s("device", c.device);
    i("extract_batch", c.extract_batch);
    s("trajectory", c.trajectory); i("rounds", c.rounds); i("round_steps", c.round_steps);
    i("round_limit", c.round_limit); s("round_policy", c.round_policy);
  } catch (const json::exception& e) {
    throw InvalidArgument(fmt::format("sft config: wrong value type ({})", e.what()));
  }
  FKV_CHECK_ARG(c.variant == "intended" || c.variant == "parity", "sft config: variant must be intended or parity, got '{}'",
                c.variant);
  FKV_CHECK_ARG(c.steps > 0 && c.batch > 0 && c.warmup >= 0 && c.warmup < c.steps,
                "sft config: need steps > 0, batch > 0, 0 <= warmup < steps (got {}, {}, {})", c.steps, c.batch,
                c.warmup);
  FKV_CHECK_ARG(c.lr >= 0 && std::isfinite(c.lr) && c.clip > 0 && c.margin >= 0 && c.hidden > 0 && c.init_std > 0,
                "sft config: need lr >= 0, clip > 0, margin >= 0, hidden > 0, init_std > 0");
  FKV_CHECK_ARG(c.budget > 0 && c.window > 0 && c.budget % c.window == 0,
                "sft config: budget {} must be a positive multiple of window {}", c.budget, c.window);
  FKV_CHECK_ARG(c.checkpoint_every > 0 && c.log_every > 0 && c.eval_every >= 0 && c.threads > 0 && c.extract_batch > 0,
                "sft config: checkpoint_every, log_every, threads, extract_batch must be > 0 and eval_every >= 0");
  FKV_CHECK_ARG(c.trajectory == "golden" || c.trajectory == "judge" || c.trajectory == "mixed",
                "sft config: trajectory must be golden, judge or mixed, got '{}'", c.trajectory);
  FKV_CHECK_ARG(c.round_policy == "sampled" || c.round_policy == "topk",
                "sft config: round_policy must be sampled or topk, got '{}'", c.round_policy);
  FKV_CHECK_ARG(c.rounds >= 0 && c.round_limit >= 0 && (c.rounds == 0 || c.warmup < c.round_steps),
                "sft config: need rounds >= 0, round_limit >= 0 and warmup < round_steps when rounds > 0 (got {}, {}, "
                "{}, {})",
                c.rounds, c.round_limit, c.warmup, c.round_steps);
  FKV_CHECK_ARG(c.trajectory == "golden" || c.rounds > 0,
                "sft config: trajectory '{}' needs rounds >= 1 (on-policy data comes from rolling out a judge)",
                c.trajectory);
  return c;
}

// ---- loss, metrics, optimiser -------------------------------------------------------------------------------------

at::Tensor pairwise_hinge(const at::Tensor& phi, const at::Tensor& target, double margin) {
  FKV_CHECK_ARG(phi.dim() == 2 && phi.sizes() == target.sizes(), "pairwise_hinge: phi and target must be [R, n]");
  at::Tensor diff = phi.unsqueeze(2) - phi.unsqueeze(1);                     // [R, n, n]: phi_i - phi_k
  at::Tensor pairs = (target.unsqueeze(2) > target.unsqueeze(1)).to(phi.scalar_type());  // o_i > o_k
  at::Tensor h = at::relu(margin - diff) * pairs;
  at::Tensor cnt = pairs.sum({1, 2});
  at::Tensor valid = cnt > 0;
  const int64_t nv = valid.sum().item<int64_t>();
  if (nv == 0) return (phi * 0).sum();
  at::Tensor per_row = h.sum({1, 2}) / cnt.clamp_min(1);
  return per_row.masked_select(valid).sum() / static_cast<double>(nv);
}

double pairwise_hinge_reference(const at::Tensor& phi_in, const at::Tensor& tgt_in, double m) {
  at::Tensor phi = phi_in.detach().to(at::kDouble).contiguous(), tgt = tgt_in.detach().to(at::kDouble).contiguous();
  const int64_t R = phi.size(0), n = phi.size(1);
  double total = 0;
  int64_t rows = 0;
  for (int64_t r = 0; r < R; ++r) {
    const double* p = phi[r].data_ptr<double>();
    const double* o = tgt[r].data_ptr<double>();
    double s = 0;
    int64_t c = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < n; ++k)
        if (o[i] > o[k]) {
          s += std::max(0.0, m - (p[i] - p[k]));
          ++c;
        }
    if (c > 0) {
      total += s / c;
      ++rows;
    }
  }
  return rows ? total / rows : 0.0;
}

double ranking_accuracy(const at::Tensor& phi, const at::Tensor& drops) {
  const int64_t R = phi.size(0), n = phi.size(1), W = drops.size(1);
  if (R == 0 || W == 0) return 0.0;
  at::Tensor top = std::get<1>(phi.detach().topk(W, 1));  // [R, W]
  at::Tensor mark = at::zeros({R, n}, at::kBool);
  mark.scatter_(1, drops.to(at::kLong), true);
  return mark.gather(1, top).to(at::kDouble).sum().item<double>() / static_cast<double>(R * W);
}

double lr_factor(int64_t k, int64_t warmup, int64_t steps) {
  if (k < warmup) return static_cast<double>(k) / static_cast<double>(warmup);
  const double span = static_cast<double>(std::max<int64_t>(1, steps - warmup));
  return 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(k - warmup) / span));
}

void Adam::init(const std::vector<at::Tensor>& params) {
  m.clear();
  v.clear();
  for (const auto& p : params) {
    m.push_back(at::zeros_like(p.detach()));
    v.push_back(at::zeros_like(p.detach()));
  }
  t = 0;
}

void Adam::step(const std::vector<at::Tensor>& params, double lr) {
  c10::AutoGradMode no_grad(false);
  ++t;
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(t));
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor p = params[i];
    at::Tensor g = p.grad().defined() ? p.grad() : at::zeros_like(p);
    m[i].mul_(beta1).add_(g, 1.0 - beta1);
    v[i].mul_(beta2).addcmul_(g, g, 1.0 - beta2);
    at::Tensor denom = (v[i].sqrt() / std::sqrt(bc2)).add_(eps);
    p.detach().addcdiv_(m[i], denom, -lr / bc1);
  }
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double clip) {
  c10::AutoGradMode no_grad(false);
  double sq = 0;
  for (const auto& p : params)
    if (p.grad().defined()) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
  const double norm = std::sqrt(sq);
  const double coef = clip / (norm + 1e-6);
  if (coef < 1.0)
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(coef);
  return norm;
}

// ---- shared training utilities ------------------------------------------------------------------------------------

model::LoadOptions load_options(const std::string& device) {
  model::LoadOptions lo;
  lo.backend = "auto";
  lo.device = device;
  return model::resolve_load_options(lo);
}

void check_config_keys(const json& j, const std::vector<std::string>& keys, const char* what) {
  FKV_CHECK_ARG(j.is_object(), "{} must be a JSON object", what);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(keys.begin(), keys.end(), it.key()) != keys.end()) continue;
    std::string list;
    for (const auto& k : keys) list += (list.empty() ? "" : ", ") + k;
    throw InvalidArgument(fmt::format("{}: unknown key '{}' (valid: {})", what, it.key(), list));
  }
}

int64_t DataOrder::item(int64_t g) {
  const int64_t e = g / n_;
  if (e != epoch_) {
    perm_.resize(static_cast<size_t>(n_));
    for (int64_t i = 0; i < n_; ++i) perm_[i] = i;
    std::mt19937_64 rng(evict::splitmix64(seed_ ^ evict::splitmix64(static_cast<uint64_t>(e) + 1)));
    for (int64_t i = n_ - 1; i > 0; --i) std::swap(perm_[i], perm_[rng() % static_cast<uint64_t>(i + 1)]);
    epoch_ = e;
  }
  return perm_[g % n_];
}

namespace {
std::string param_key(const char* which, const std::string& name) { return fmt::format("adam.{}.{}", which, name); }
}  // namespace

void save_training_checkpoint(const judge::Judge& j, const Adam& opt, const std::string& path, json meta) {
  judge::Judge c = j.clone();
  meta["adam_t"] = opt.t;
  c.meta() = meta;
  std::map<std::string, at::Tensor> extra;
  const auto names = j.parameter_names();
  for (size_t i = 0; i < names.size(); ++i) {
    extra[param_key("m", names[i])] = opt.m[i];
    extra[param_key("v", names[i])] = opt.v[i];
  }
  c.save(path, extra);
}

void save_run_state(const judge::Judge& j, const Adam& opt, const std::string& out, json meta, int64_t step,
                    bool snapshot, bool final_too) {
  meta["step"] = step;
  save_training_checkpoint(j, opt, out + "/checkpoint.safetensors", meta);
  if (snapshot || final_too) {
    judge::Judge c = j.clone();
    c.meta() = meta;
    c.meta()["kind"] = "judge";
    c.save(fmt::format("{}/step_{:06d}.safetensors", out, step));
    if (final_too) c.save(out + "/final.safetensors");
  }
}

void load_adam_state(Adam& opt, const judge::Judge& j, const std::string& ckpt) {
  const auto names = j.parameter_names();
  io::SafetensorsFile f(ckpt);
  auto state = [&](const std::string& key) {
    auto it = f.tensors().find(key);
    FKV_CHECK_FORMAT(it != f.tensors().end(), "{}: no optimizer tensor '{}' (not an fkv-train checkpoint?)", ckpt, key);
    return judge::tensor_from_st(it->second, ckpt).to(at::kFloat);
  };
  for (size_t i = 0; i < names.size(); ++i) {
    opt.m[i] = state(param_key("m", names[i]));
    opt.v[i] = state(param_key("v", names[i]));
  }
  opt.t = j.meta().value("adam_t", int64_t{0});
}

void truncate_log(const std::string& path, int64_t step, const std::string& drop_split_at_step) {
  if (!file_exists(path)) return;
  std::istringstream in(read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      const json j = json::parse(line);
      const int64_t ls = j.value("step", int64_t{0});
      if (ls > step || (ls == step && !drop_split_at_step.empty() && j.value("split", "") == drop_split_at_step))
        continue;
    } catch (const json::exception&) {
      continue;  // a torn last line
    }
    kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

// ---- training loop ----------------------------------------------------------------------------------------------
namespace {

struct SampleOut {
  at::Tensor loss;              // sum over layers (graph attached when training)
  std::vector<double> acc;      // per layer
  int64_t rows = 0;
};

SampleOut sample_loss(const judge::Judge& j, const StoredTrace& t, double margin) {
  SampleOut o;
  const int64_t L = t.pos.size(0), S = t.pos.size(1), H = t.pos.size(2), B = t.pos.size(3), W = t.drops.size(3);
  for (int64_t l = 0; l < L; ++l) {
    at::Tensor x = assemble_features(t, l);                               // [H, S*B, F]
    at::Tensor phi = j.score(l, x).view({H, S, B}).transpose(0, 1).reshape({S * H, B});  // rows (s, h)
    at::Tensor tgt = t.target[l].reshape({S * H, B});
    at::Tensor ll = pairwise_hinge(phi, tgt, margin);
    o.loss = o.loss.defined() ? o.loss + ll : ll;
    o.acc.push_back(ranking_accuracy(phi, t.drops[l].reshape({S * H, W})));
    o.rows += S * H;
  }
  return o;
}

json evaluate(const judge::Judge& j, const FeatureStore& st, double margin) {
  c10::AutoGradMode no_grad(false);
  double loss = 0, acc = 0;
  std::vector<double> acc_l(static_cast<size_t>(st.n_layer()), 0.0);
  for (int64_t i = 0; i < st.size(); ++i) {
    SampleOut o = sample_loss(j, st.load(i), margin);
    loss += o.loss.item<double>();
    for (size_t l = 0; l < o.acc.size(); ++l) acc_l[l] += o.acc[l] / st.size();
  }
  for (double a : acc_l) acc += a / acc_l.size();
  return json{{"loss", loss / std::max<int64_t>(1, st.size())}, {"acc", acc}, {"acc_layers", acc_l},
              {"traces", st.size()}};
}

}  // namespace

SftResult run_sft(const SftConfig& cfg, const std::string& out, bool resume, int64_t stop_after) {
  at::set_num_threads(static_cast<int>(cfg.threads));
  const double t_start = now_seconds();
  SftResult res;
  load_options(cfg.device);  // an unusable --device fails here, before anything is written
  fs::create_directories(out);
  const std::string ckpt = out + "/checkpoint.safetensors", log_path = out + "/log.jsonl";
  FKV_CHECK_ARG(resume || !file_exists(ckpt),
                "{} already holds a training run (checkpoint.safetensors); pass --resume to continue it or use another "
                "--output",
                out);
  FKV_CHECK_ARG(!cfg.model.empty() && !cfg.traces.empty(), "sft: config needs 'model' and 'traces' (or --model, --traces)");
  const std::string model_path = model::resolve_model_path(cfg.model);
  const std::string model_sha = harness::model_sha256(model_path);
  const evict::Variant variant = evict::parse_variant(cfg.variant);
  // 1. feature stores (resumable; the model is loaded only when something is missing)
  const std::string store_dir = cfg.store.empty() ? out + "/store" : cfg.store;
  const std::string eval_dir = cfg.eval_store.empty() ? out + "/eval_store" : cfg.eval_store;
  std::unique_ptr<model::Transformer> model;
  // the store options of this run for a trace file (golden stores and on-policy rounds alike)
  auto extract_options = [&](const std::string& traces, int64_t limit) {
    ExtractOptions eo;
    eo.budget = cfg.budget;
    eo.window = cfg.window;
    eo.variant = variant;
    eo.batch = cfg.extract_batch;
    eo.limit = limit;
    eo.model_path = model_path;
    eo.model_sha256 = model_sha;
    eo.traces_path = traces;
    return eo;
  };
  auto extract = [&](const std::string& traces, const std::string& dir, int64_t limit) {
    trace::TraceSet set = trace::read_trace_set(traces);
    const std::string have = set.header.value("model", json::object()).value("sha256", std::string());
    FKV_CHECK_ARG(have.empty() || have == model_sha,
                  "{} was labelled with another model (sha256 {}); the run's model {} has {}", traces,
                  have.substr(0, 12), model_path, model_sha.substr(0, 12));
    if (!model) model = model::Transformer::load(model_path, load_options(cfg.device));
    ExtractReport r = extract_features(*model, set, extract_options(traces, limit), dir);
    FKV_LOG_INFO("feature store {}: {} traces ({} extracted now, {} tokens, {:.1f} s), {} golden steps, {:.1f} MiB", dir,
                 r.traces, r.extracted_now, r.tokens_now, r.seconds, r.steps, r.bytes / 1048576.0);
    res.extract_seconds += r.seconds;
    return r;
  };
  extract(cfg.traces, store_dir, cfg.limit);
  if (!cfg.eval_traces.empty()) extract(cfg.eval_traces, eval_dir, cfg.eval_limit);
  if (cfg.trajectory == "golden") model.reset();
  FeatureStore store(store_dir);
  std::unique_ptr<FeatureStore> eval_store;
  if (!cfg.eval_traces.empty()) eval_store = std::make_unique<FeatureStore>(eval_dir);

  // 2. judge + optimiser (fresh or from the checkpoint)
  judge::JudgeShape shape{store.n_layer(), store.n_head_kv(), store.head_dim(), store.group(), cfg.hidden};
  json train_cfg = cfg.to_json();
  json meta = {{"kind", "sft"},
               {"model_sha256", model_sha},
               {"model", model_path},
               {"variant", cfg.variant},
               {"budget", cfg.budget},
               {"window", cfg.window},
               {"training", train_cfg},
               {"data_hash", store.data_hash()},
               {"train_traces", store.size()}};
  judge::Judge j;
  Adam opt;
  opt.beta1 = cfg.beta1;
  opt.beta2 = cfg.beta2;
  opt.eps = cfg.eps;
  int64_t start = 0;
  if (resume && file_exists(ckpt)) {
    j = judge::Judge::load(ckpt);
    const json& cm = j.meta();
    json a = cm.value("training", json::object()), b = train_cfg;
    for (const char* k : {"checkpoint_every", "eval_every", "log_every", "threads", "device", "extract_batch", "store",
                          "eval_store"}) {
      a.erase(k);
      b.erase(k);
    }
    FKV_CHECK_ARG(a == b, "--resume: {} was trained with another config ({}); this run: {}", ckpt, a.dump(), b.dump());
    FKV_CHECK_ARG(cm.value("data_hash", "") == store.data_hash(), "--resume: {} was trained on other data", ckpt);
    start = cm.value("step", int64_t{0});
    opt.init(j.parameters());
    load_adam_state(opt, j, ckpt);
    truncate_log(log_path, start, "rollout");
    FKV_LOG_INFO("sft: resuming {} at step {}", out, start);
  } else {
    j = judge::Judge::init(shape, cfg.init_std, cfg.seed);
    opt.init(j.parameters());
    write_file_atomic(log_path, "");
  }
  j.set_requires_grad(true);
  const std::vector<at::Tensor> params = j.parameters();
  std::ofstream log(log_path, std::ios::app);
  FKV_CHECK(log.good(), "cannot append to {}", log_path);
  auto write_log = [&](const json& line) {
    log << line.dump() << "\n";
    log.flush();
  };
  const int64_t total = cfg.total_steps();
  auto phase_of = [&](int64_t k) { return k < cfg.steps ? int64_t{0} : 1 + (k - cfg.steps) / cfg.round_steps; };
  auto phase_start = [&](int64_t r) { return r == 0 ? int64_t{0} : cfg.steps + (r - 1) * cfg.round_steps; };
  auto phase_len = [&](int64_t r) { return r == 0 ? cfg.steps : cfg.round_steps; };

  // On-policy rounds: round r's states come from the judge as it was when round r began (saved in
  // OUTPUT/round_r/judge.safetensors before the rollouts, so a resumed run rolls out the same judge).
  std::vector<std::unique_ptr<FeatureStore>> round_stores;  // [r - 1]
  std::unique_ptr<trace::TraceSet> train_set;
  auto ensure_round = [&](int64_t r, int64_t k) {
    if (cfg.trajectory == "golden" || static_cast<int64_t>(round_stores.size()) >= r) return;
    const std::string dir = fmt::format("{}/round_{}", out, r), jpath = dir + "/judge.safetensors";
    fs::create_directories(dir);
    if (!file_exists(jpath)) {
      FKV_CHECK_ARG(k == phase_start(r),
                    "--resume: {} is missing (round {} began at step {}, the checkpoint is at step {}); restart the run",
                    jpath, r, phase_start(r), k);
      judge::Judge c = j.clone();
      c.meta() = meta;
      c.meta()["kind"] = "judge";
      c.meta()["step"] = k;
      c.meta()["round"] = r;
      c.save(jpath);
    }
    auto rj = std::make_shared<const judge::Judge>(judge::Judge::load(jpath));
    if (!train_set) train_set = std::make_unique<trace::TraceSet>(trace::read_trace_set(cfg.traces));
    if (!model) model = model::Transformer::load(model_path, load_options(cfg.device));
    RolloutOptions ro;
    ro.judge = rj;
    ro.judge_sha256 = harness::model_sha256(jpath);
    ro.sampled = cfg.round_policy == "sampled";
    ro.seed = evict::splitmix64(cfg.seed + static_cast<uint64_t>(r));
    ro.bf16_probs = train_set->header.value("label", json::object()).value("bf16_probs", true);
    const int64_t limit = cfg.round_limit > 0 ? cfg.round_limit : cfg.limit;
    const ExtractReport rep = extract_features(*model, *train_set, extract_options(cfg.traces, limit), dir, &ro);
    res.extract_seconds += rep.seconds;
    round_stores.push_back(std::make_unique<FeatureStore>(dir));
    FKV_LOG_INFO("round {}: {} on-policy traces ({} rolled out now, {:.1f} s), {} states, {:.1f} MiB", r, rep.traces,
                 rep.extracted_now, rep.seconds, rep.steps, rep.bytes / 1048576.0);
    if (k == phase_start(r)) {
      // how the judge ranks the states it reaches itself, before training on them (the drift SFT cannot see)
      json e = evaluate(j, *round_stores.back(), cfg.margin);
      e["step"] = k;
      e["split"] = "rollout";
      e["round"] = r;
      e["policy"] = cfg.round_policy;
      e["rollout_seconds"] = rep.seconds;
      e["tokens"] = round_stores.back()->tokens();
      write_log(e);
    }
  };
  // The data of phase r: (store, trace) items; phase 0 is the golden store (the paper's SFT).
  std::vector<std::pair<const FeatureStore*, int64_t>> items;
  auto phase_items = [&](int64_t r) {
    items.clear();
    if (r == 0 || cfg.trajectory != "judge")
      for (int64_t i = 0; i < store.size(); ++i) items.emplace_back(&store, i);
    if (r > 0 && cfg.trajectory != "golden")
      for (int64_t q = 0; q < r; ++q)
        for (int64_t i = 0; i < round_stores[q]->size(); ++i) items.emplace_back(round_stores[q].get(), i);
  };
  int64_t cur_phase = -1;
  std::unique_ptr<DataOrder> order;
  auto save_all = [&](int64_t step, bool final_too) {
    save_run_state(j, opt, out, meta, step, step % cfg.checkpoint_every == 0, final_too);
  };
  const double t_train = now_seconds();
  for (int64_t k = start; k < total; ++k) {
    const int64_t r = phase_of(k);
    if (r != cur_phase) {
      for (int64_t q = 1; q <= r; ++q) ensure_round(q, k);
      phase_items(r);
      // phase 0 keeps the plain (seed) order, so golden-only runs are unchanged by the rounds' existence
      order = std::make_unique<DataOrder>(r == 0 ? cfg.seed : evict::splitmix64(cfg.seed ^ static_cast<uint64_t>(r)),
                                          static_cast<int64_t>(items.size()));
      cur_phase = r;
    }
    const int64_t kr = k - phase_start(r);
    const double t0 = now_seconds();
    for (const auto& p : params) p.mutable_grad() = at::Tensor();
    double loss = 0;
    int64_t rows = 0;
    std::vector<double> acc(static_cast<size_t>(store.n_layer()), 0.0);
    for (int64_t b = 0; b < cfg.batch; ++b) {
      const auto& [src, item] = items[static_cast<size_t>(order->item(kr * cfg.batch + b))];
      SampleOut o = sample_loss(j, src->load(item), cfg.margin);
      FKV_CHECK(std::isfinite(o.loss.item<double>()), "sft: non-finite loss at step {} (trace {})", k + 1, item);
      o.loss.backward();
      loss += o.loss.item<double>();
      rows += o.rows;
      for (size_t l = 0; l < acc.size(); ++l) acc[l] += o.acc[l] / cfg.batch;
    }
    const double gnorm = clip_grad_norm(params, cfg.clip);
    const double lr = cfg.lr * lr_factor(kr, cfg.warmup, phase_len(r));
    opt.step(params, lr);
    const double dt = now_seconds() - t0;
    double acc_mean = 0;
    for (double a : acc) acc_mean += a / acc.size();
    const int64_t step = k + 1;
    if (step % cfg.log_every == 0 || step == total) {
      json line = {{"step", step}, {"split", "train"}, {"loss", loss / cfg.batch}, {"acc", acc_mean},
                   {"acc_layers", acc}, {"lr", lr}, {"grad_norm", gnorm}, {"rows", rows},
                   {"rows_per_s", rows / std::max(1e-9, dt)}, {"seconds", dt}};
      if (cfg.rounds > 0) line["round"] = r;
      write_log(line);
      res.last_log = line;
      std::cerr << fmt::format("\rsft step {}/{}  loss {:.5f}  acc {:.3f}  lr {:.2e}  |g| {:.3f}  {:.0f} rows/s   ", step,
                               total, loss / cfg.batch, acc_mean, lr, gnorm, rows / std::max(1e-9, dt))
                << std::flush;
    }
    if (eval_store && cfg.eval_every > 0 && step % cfg.eval_every == 0 && step != total) {
      json e = evaluate(j, *eval_store, cfg.margin);
      e["step"] = step;
      e["split"] = "eval";
      write_log(e);
    }
    const bool boundary = cfg.rounds > 0 && step >= cfg.steps && (step - cfg.steps) % cfg.round_steps == 0;
    if ((step % cfg.checkpoint_every == 0 || boundary) && step != total) save_all(step, false);
    ++res.steps_run;
    if (stop_after > 0 && step == stop_after && step != total) {  // a kill: only what was saved survives
      res.seconds = now_seconds() - t_start;
      return res;
    }
  }
  std::cerr << "\n";
  res.train_seconds = now_seconds() - t_train;
  if (eval_store) {
    json e = evaluate(j, *eval_store, cfg.margin);
    e["step"] = total;
    e["split"] = "eval";
    write_log(e);
    res.last_log["eval"] = e;
  }
  save_all(total, true);
  res.final_path = out + "/final.safetensors";
  res.seconds = now_seconds() - t_start;
  return res;
}

}  // namespace fkv::train
