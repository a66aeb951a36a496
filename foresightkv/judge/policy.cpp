#include "foresightkv/judge/policy.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/core/timer.h"
#include "foresightkv/io/safetensors.h"

#ifndef FKV_SOURCE_DIR
#define FKV_SOURCE_DIR "."
#endif

namespace fkv::judge {
namespace {

// uniform in (0, 1): 53 random bits, never exactly 0 (log is finite)
double uniform01(std::mt19937_64& rng) { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; }

float round_bf16(float x) { return c10::BFloat16(x); }

}  // namespace

std::vector<int64_t> sample_without_replacement(const float* s, int64_t n, int64_t d, std::mt19937_64& rng) {
  FKV_CHECK_ARG(d >= 0 && d <= n, "sample_without_replacement: {} draws from {} entries", d, n);
  // Gumbel-top-k: argsort of s_i + G_i (G_i = -log(-log U_i)) in descending order gives the sequence of draws of
  // sampling without replacement with probabilities softmax(s) over the remaining entries (Plackett-Luce).
  std::vector<double> key(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) key[i] = static_cast<double>(s[i]) - std::log(-std::log(uniform01(rng)));
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + d, idx.end(), [&](int64_t a, int64_t b) {
    return key[a] > key[b] || (key[a] == key[b] && a < b);
  });
  idx.resize(static_cast<size_t>(d));
  return idx;
}

at::Tensor choose_drops(const at::Tensor& phi_in, int64_t d, bool sampled, bool parity, uint64_t seed, uint64_t stream,
                        int64_t layer, int64_t event, at::Tensor* pool_slots) {
  at::Tensor phi = phi_in.detach().to(at::kFloat).contiguous();
  const int64_t H = phi.size(0), C = phi.size(1);
  FKV_CHECK(d >= 0 && d <= C, "foresightkv: {} entries to drop from {} candidates", d, C);
  at::Tensor out = at::empty({H, d}, at::kLong);
  if (pool_slots) *pool_slots = at::empty({H, sampled ? std::min<int64_t>(2 * d, C) : 0}, at::kLong);
  std::vector<int64_t> order(static_cast<size_t>(C));
  std::vector<float> pool_s;
  for (int64_t h = 0; h < H; ++h) {
    const float* p = phi[h].data_ptr<float>();
    FKV_CHECK(std::all_of(p, p + C, [](float x) { return std::isfinite(x); }),
              "foresightkv: the judge produced a non-finite score (layer {}, head {})", layer, h);
    std::iota(order.begin(), order.end(), 0);
    // descending phi; ties: the lower slot first (deterministic)
    auto desc = [&](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); };
    int64_t* o = out[h].data_ptr<int64_t>();
    if (!sampled) {
      std::partial_sort(order.begin(), order.begin() + d, order.end(), desc);
      std::copy(order.begin(), order.begin() + d, o);
      continue;
    }
    const int64_t pool = std::min<int64_t>(2 * d, C);  // spec §I.2 row 22: clamp the pool to the candidates
    std::partial_sort(order.begin(), order.begin() + pool, order.end(), desc);
    if (pool_slots) std::copy(order.begin(), order.begin() + pool, (*pool_slots)[h].data_ptr<int64_t>());
    pool_s.resize(static_cast<size_t>(pool));
    for (int64_t i = 0; i < pool; ++i) pool_s[i] = parity ? round_bf16(p[order[i]]) : p[order[i]];
    std::mt19937_64 rng(evict::choice_key(seed, stream, layer, event, h));
    const std::vector<int64_t> pick = sample_without_replacement(pool_s.data(), pool, d, rng);
    for (int64_t i = 0; i < d; ++i) o[i] = order[pick[i]];
  }
  return out;
}

at::Tensor keep_from_drops(const at::Tensor& drops, int64_t n) {
  const int64_t H = drops.size(0), d = drops.size(1);
  at::Tensor mask = at::ones({H, n}, at::kBool);
  mask.scatter_(1, drops.to(at::kLong), false);
  at::Tensor idx = at::arange(n, at::kLong).unsqueeze(0).expand({H, n});
  return idx.masked_select(mask).view({H, n - d}).contiguous();
}

JudgePolicy::JudgePolicy(std::shared_ptr<const Judge> judge, bool sampled, const evict::EvictionConfig& c)
    : judge_(std::move(judge)), sampled_(sampled), parity_(c.variant == evict::Variant::Parity), seed_(c.seed) {
  feat_.parity = parity_;
  feat_.segment = c.window;
  const std::string jv = judge_->meta().value("variant", std::string(""));
  FKV_CHECK_ARG(jv.empty() || jv == evict::to_string(c.variant),
                "judge {} was trained on '{}' features but the run uses variant '{}': pass --variant {} (or train a "
                "judge for this variant)",
                c.judge, jv, evict::to_string(c.variant), jv);
}

at::Tensor JudgePolicy::select(const evict::LayerView& v) {
  const int64_t C = v.n - v.protect, d = v.n - v.budget;
  const double t0 = now_seconds();
  FKV_CHECK(v.group == judge_->shape().group || judge_->shape().group == 0,
            "foresightkv: judge built for group {} but the model has group {}", judge_->shape().group, v.group);
  at::Tensor x = build_features(v, C, feat_);
  at::Tensor phi = judge_->score(v.layer, x);
  judge_seconds_ += now_seconds() - t0;
  at::Tensor drops = choose_drops(phi, d, sampled_, parity_, seed_, v.stream, v.layer, v.event);
  return keep_from_drops(drops, v.n);
}

std::shared_ptr<const Judge> load_judge_cached(const std::string& path) {
  static std::mutex mu;
  static std::map<std::string, std::pair<std::string, std::shared_ptr<const Judge>>> cache;
  FKV_CHECK_ARG(!path.empty(),
                "policy foresightkv needs a judge: pass --judge PATH (a checkpoint from fkv-train sft) or use a model "
                "with a committed judge in judges/");
  FKV_CHECK_ARG(file_exists(path), "judge checkpoint '{}' not found", path);
  std::string stamp;
  {
    std::error_code ec;
    auto t = std::filesystem::last_write_time(path, ec);
    stamp = ec ? std::string() : std::to_string(t.time_since_epoch().count());
  }
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(path);
  if (it != cache.end() && it->second.first == stamp) return it->second.second;
  auto j = std::make_shared<const Judge>(Judge::load(path));
  cache[path] = {stamp, j};
  return j;
}

void register_policies() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (bool sampled : {true, false}) {
      evict::register_policy(sampled ? "foresightkv" : "foresightkv_topk",
                             [sampled](const evict::EvictionConfig& c) -> std::unique_ptr<evict::Policy> {
                               return std::make_unique<JudgePolicy>(load_judge_cached(c.judge), sampled, c);
                             });
    }
  });
}

std::string judges_dir() {
  if (const char* e = std::getenv("FKV_JUDGES")) return e;
  if (const char* r = std::getenv("FKV_ROOT")) return std::string(r) + "/judges";
  return std::string(FKV_SOURCE_DIR) + "/judges";
}

std::string find_committed_judge(const std::string& model_sha, int64_t budget, int64_t window,
                                 const std::string& dir_in) {
  const std::string dir = dir_in.empty() ? judges_dir() : dir_in;
  if (!is_directory(dir)) return "";
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::string best;
  double best_d = 1e300;
  int64_t best_b = -1;
  for (const auto& f : files) {
    json m;
    try {
      io::SafetensorsFile sf(f);
      auto it = sf.metadata().find("fkv_judge");
      if (it == sf.metadata().end()) continue;
      m = json::parse(it->second);
    } catch (const std::exception& e) {
      FKV_LOG_WARN("judges: skipping {} ({})", f, e.what());
      continue;
    }
    if (m.value("model_sha256", std::string()) != model_sha) continue;
    const int64_t b = m.value("budget", int64_t{0}), w = m.value("window", int64_t{0});
    if (b <= 0 || w <= 0) continue;
    const double dist = std::abs(std::log2(double(b) / budget)) + std::abs(std::log2(double(w) / window));
    if (dist < best_d - 1e-12 || (std::abs(dist - best_d) <= 1e-12 && b > best_b)) {
      best = f;
      best_d = dist;
      best_b = b;
    }
  }
  return best;
}

void resolve_judge(evict::EvictionConfig& cfg, const std::string& model_path, const std::string& model_sha,
                   const JudgeShape& model_shape) {
  if (!evict::is_learned_policy(cfg.policy)) return;
  if (cfg.judge.empty()) {
    cfg.judge = find_committed_judge(model_sha, cfg.budget, cfg.window);
    FKV_CHECK_ARG(!cfg.judge.empty(),
                  "policy {}: no judge given and none committed for model {} (sha256 {}) in {}; train one with "
                  "`fkv-trace generate` (labelled traces) then `fkv-train sft --model {} --traces T --output DIR`, and "
                  "pass --judge DIR/final.safetensors",
                  cfg.policy, model_path, model_sha.substr(0, 12), judges_dir(), model_path);
  }
  auto j = load_judge_cached(cfg.judge);
  if (model_shape.n_layer > 0) j->check_model(model_shape, cfg.judge);
  const std::string js = j->meta().value("model_sha256", std::string());
  FKV_CHECK_ARG(js.empty() || js == model_sha,
                "judge {} was trained on model sha256 {} but the run's model {} has sha256 {}: a judge is specific to "
                "its model; train one for this model",
                cfg.judge, js.substr(0, 12), model_path, model_sha.substr(0, 12));
  FKV_LOG_INFO("policy {}: judge {} (trained B={} L={}, variant {}, step {}); run B={} L={}", cfg.policy, cfg.judge,
               j->meta().value("budget", int64_t{0}), j->meta().value("window", int64_t{0}),
               j->meta().value("variant", std::string("?")), j->meta().value("step", int64_t{0}), cfg.budget,
               cfg.window);
}

}  // namespace fkv::judge
