#include "foresightkv/train/sft.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

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
      "eval_every", "log_every", "limit", "eval_limit", "threads", "extract_batch"};
  return k;
}

json SftConfig::to_json() const {
  return json{{"model", model}, {"traces", traces}, {"eval_traces", eval_traces}, {"store", store},
              {"eval_store", eval_store}, {"budget", budget}, {"window", window}, {"variant", variant},
              {"steps", steps}, {"batch", batch}, {"warmup", warmup}, {"lr", lr}, {"beta1", beta1}, {"beta2", beta2},
              {"eps", eps}, {"clip", clip}, {"margin", margin}, {"hidden", hidden}, {"init_std", init_std},
              {"seed", seed}, {"checkpoint_every", checkpoint_every}, {"eval_every", eval_every},
              {"log_every", log_every}, {"limit", limit}, {"eval_limit", eval_limit}, {"threads", threads},
              {"extract_batch", extract_batch}};
}

SftConfig SftConfig::from_json(const json& j) {
  FKV_CHECK_ARG(j.is_object(), "sft config must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const auto& k : keys()) known = known || k == it.key();
    if (!known) {
      std::string list;
      for (const auto& k : keys()) list += (list.empty() ? "" : ", ") + k;
      throw InvalidArgument(fmt::format("sft config: unknown key '{}' (valid: {})", it.key(), list));
    }
  }
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
    i("limit", c.limit); i("eval_limit", c.eval_limit); i("threads", c.threads); i("extract_batch", c.extract_batch);
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

// ---- training loop ----------------------------------------------------------------------------------------------
namespace {

// Data order: epoch e is a Fisher-Yates permutation seeded by (seed, e); step k takes items k*batch .. k*batch+batch-1
// of the concatenated epochs. A pure function of (seed, k): resuming needs no RNG state.
class DataOrder {
 public:
  DataOrder(uint64_t seed, int64_t n) : seed_(seed), n_(n) {}
  int64_t item(int64_t g) {
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

 private:
  uint64_t seed_;
  int64_t n_, epoch_ = -1;
  std::vector<int64_t> perm_;
};

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

std::string param_key(const char* which, const std::string& name) { return fmt::format("adam.{}.{}", which, name); }

void save_checkpoint(const judge::Judge& j, const Adam& opt, const std::string& path, json meta) {
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

// Keep the log's lines of steps <= `step` (resume: the killed run may have logged past its checkpoint).
void truncate_log(const std::string& path, int64_t step) {
  if (!file_exists(path)) return;
  std::istringstream in(read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      if (json::parse(line).value("step", int64_t{0}) > step) continue;
    } catch (const json::exception&) {
      continue;  // a torn last line
    }
    kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

}  // namespace

SftResult run_sft(const SftConfig& cfg, const std::string& out, bool resume, int64_t stop_after) {
  at::set_num_threads(static_cast<int>(cfg.threads));
  const double t_start = now_seconds();
  SftResult res;
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
  auto extract = [&](const std::string& traces, const std::string& dir, int64_t limit) {
    trace::TraceSet set = trace::read_trace_set(traces);
    const std::string have = set.header.value("model", json::object()).value("sha256", std::string());
    FKV_CHECK_ARG(have.empty() || have == model_sha,
                  "{} was labelled with another model (sha256 {}); the run's model {} has {}", traces,
                  have.substr(0, 12), model_path, model_sha.substr(0, 12));
    if (!model) model = model::Transformer::load(model_path);
    ExtractOptions eo;
    eo.budget = cfg.budget;
    eo.window = cfg.window;
    eo.variant = variant;
    eo.batch = cfg.extract_batch;
    eo.limit = limit;
    eo.model_path = model_path;
    eo.model_sha256 = model_sha;
    eo.traces_path = traces;
    ExtractReport r = extract_features(*model, set, eo, dir);
    FKV_LOG_INFO("feature store {}: {} traces ({} extracted now, {} tokens, {:.1f} s), {} golden steps, {:.1f} MiB", dir,
                 r.traces, r.extracted_now, r.tokens_now, r.seconds, r.steps, r.bytes / 1048576.0);
    res.extract_seconds += r.seconds;
    return r;
  };
  extract(cfg.traces, store_dir, cfg.limit);
  if (!cfg.eval_traces.empty()) extract(cfg.eval_traces, eval_dir, cfg.eval_limit);
  model.reset();
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
    for (const char* k : {"checkpoint_every", "eval_every", "log_every", "threads", "extract_batch", "store", "eval_store"}) {
      a.erase(k);
      b.erase(k);
    }
    FKV_CHECK_ARG(a == b, "--resume: {} was trained with another config ({}); this run: {}", ckpt, a.dump(), b.dump());
    FKV_CHECK_ARG(cm.value("data_hash", "") == store.data_hash(), "--resume: {} was trained on other data", ckpt);
    start = cm.value("step", int64_t{0});
    opt.init(j.parameters());
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
    opt.t = cm.value("adam_t", int64_t{0});
    truncate_log(log_path, start);
    FKV_LOG_INFO("sft: resuming {} at step {}", out, start);
  } else {
    j = judge::Judge::init(shape, cfg.init_std, cfg.seed);
    opt.init(j.parameters());
    write_file_atomic(log_path, "");
  }
  j.set_requires_grad(true);
  const std::vector<at::Tensor> params = j.parameters();
  DataOrder order(cfg.seed, store.size());
  std::ofstream log(log_path, std::ios::app);
  FKV_CHECK(log.good(), "cannot append to {}", log_path);
  auto write_log = [&](const json& line) {
    log << line.dump() << "\n";
    log.flush();
  };
  auto save_all = [&](int64_t step, bool final_too) {
    json m = meta;
    m["step"] = step;
    save_checkpoint(j, opt, ckpt, m);
    if (step % cfg.checkpoint_every == 0 || final_too) {
      judge::Judge c = j.clone();
      c.meta() = m;
      c.meta()["kind"] = "judge";
      c.save(fmt::format("{}/step_{:06d}.safetensors", out, step));
      if (final_too) c.save(out + "/final.safetensors");
    }
  };
  const double t_train = now_seconds();
  for (int64_t k = start; k < cfg.steps; ++k) {
    const double t0 = now_seconds();
    for (const auto& p : params) p.mutable_grad() = at::Tensor();
    double loss = 0;
    int64_t rows = 0;
    std::vector<double> acc(static_cast<size_t>(store.n_layer()), 0.0);
    for (int64_t b = 0; b < cfg.batch; ++b) {
      const int64_t item = order.item(k * cfg.batch + b);
      SampleOut o = sample_loss(j, store.load(item), cfg.margin);
      FKV_CHECK(std::isfinite(o.loss.item<double>()), "sft: non-finite loss at step {} (trace {})", k + 1, item);
      o.loss.backward();
      loss += o.loss.item<double>();
      rows += o.rows;
      for (size_t l = 0; l < acc.size(); ++l) acc[l] += o.acc[l] / cfg.batch;
    }
    const double gnorm = clip_grad_norm(params, cfg.clip);
    const double lr = cfg.lr * lr_factor(k, cfg.warmup, cfg.steps);
    opt.step(params, lr);
    const double dt = now_seconds() - t0;
    double acc_mean = 0;
    for (double a : acc) acc_mean += a / acc.size();
    const int64_t step = k + 1;
    if (step % cfg.log_every == 0 || step == cfg.steps) {
      json line = {{"step", step}, {"split", "train"}, {"loss", loss / cfg.batch}, {"acc", acc_mean},
                   {"acc_layers", acc}, {"lr", lr}, {"grad_norm", gnorm}, {"rows", rows},
                   {"rows_per_s", rows / std::max(1e-9, dt)}, {"seconds", dt}};
      write_log(line);
      res.last_log = line;
      std::cerr << fmt::format("\rsft step {}/{}  loss {:.5f}  acc {:.3f}  lr {:.2e}  |g| {:.3f}  {:.0f} rows/s   ", step,
                               cfg.steps, loss / cfg.batch, acc_mean, lr, gnorm, rows / std::max(1e-9, dt))
                << std::flush;
    }
    if (eval_store && cfg.eval_every > 0 && step % cfg.eval_every == 0 && step != cfg.steps) {
      json e = evaluate(j, *eval_store, cfg.margin);
      e["step"] = step;
      e["split"] = "eval";
      write_log(e);
    }
    if (step % cfg.checkpoint_every == 0 && step != cfg.steps) save_all(step, false);
    ++res.steps_run;
    if (stop_after > 0 && step == stop_after && step != cfg.steps) {  // a kill: only what was saved survives
      res.seconds = now_seconds() - t_start;
      return res;
    }
  }
  std::cerr << "\n";
  res.train_seconds = now_seconds() - t_train;
  if (eval_store) {
    json e = evaluate(j, *eval_store, cfg.margin);
    e["step"] = cfg.steps;
    e["split"] = "eval";
    write_log(e);
    res.last_log["eval"] = e;
  }
  save_all(cfg.steps, true);
  res.final_path = out + "/final.safetensors";
  res.seconds = now_seconds() - t_start;
  return res;
}

}  // namespace fkv::train
