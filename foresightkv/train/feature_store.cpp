#include "foresightkv/train/feature_store.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cstring>
#include <filesystem>

#include <fmt/ostream.h>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/logging.h"
#include "foresightkv/core/timer.h"
#include "foresightkv/harness/fidelity.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/golden/schedule.h"
#include "foresightkv/judge/policy.h"
#include "foresightkv/trace/labeler.h"
#include "foresightkv/judge/features.h"
#include "foresightkv/judge/judge.h"

namespace fkv::train {
namespace fs = std::filesystem;
namespace {

constexpr int kStoreVersion = 1;

struct Buffers {
  at::Tensor kv, pos, stats;  // see feature_store.h
  at::Tensor fut;             // on-policy: the oracle's future scores [layers, Hkv, T, S] (undefined: golden)
  at::Tensor target, drops;   // on-policy: filled at every event from fut
  std::vector<char> seen;     // [layers * S]
};

// Records the judge's inputs at every eviction event s < S before delegating the decision to `inner` (the golden
// policy replaying the labels, or the judge being trained). On-policy buffers also get the oracle's targets for
// the candidates actually held: -alpha_s(pos) and the W slots the oracle would drop from this state.
class Recorder final : public evict::Policy {
 public:
  Recorder(std::unique_ptr<evict::Policy> inner, std::vector<int64_t> steps, int64_t budget, int64_t window,
           std::vector<Buffers>* buf, judge::FeatureOptions fo)
      : inner_(std::move(inner)), steps_(std::move(steps)), budget_(budget), window_(window), buf_(buf), fo_(fo) {}
  std::string name() const override { return inner_->name(); }
  bool needs_attention() const override { return true; }
  bool needs_accumulators() const override { return true; }
  bool first_event_sees_history(evict::Variant) const override { return true; }
  at::Tensor select(const evict::LayerView& v) override {
    const int64_t S = steps_.at(v.seq), B = budget_;
    if (v.event < S) {
      const int64_t C = v.n - v.protect;
      FKV_CHECK(C == B && v.n - v.budget == window_,
                "feature store: event {} of layer {} has {} candidates and {} drops, the labels {} and {} (schedule "
                "mismatch)",
                v.event, v.layer, C, v.n - v.budget, B, window_);
      Buffers& b = (*buf_)[v.seq];
      at::Tensor st = judge::attention_features(v, C, fo_);  // [H, C, 8G]
      b.stats[v.layer][v.event].copy_(st);
      at::Tensor pos = v.pos.narrow(1, 0, C);  // [H, C]
      b.pos[v.layer][v.event].copy_(pos);
      at::Tensor kv = at::cat({v.k.narrow(1, 0, C), v.v.narrow(1, 0, C)}, 2);  // [H, C, 2d]
      at::Tensor table = b.kv[v.layer];                                       // [H, T, 2d]
      for (int64_t h = 0; h < kv.size(0); ++h) table[h].index_copy_(0, pos[h], kv[h].to(table.scalar_type()));
      if (b.fut.defined()) {
        at::Tensor p = pos.to(at::kLong).contiguous();
        for (int64_t h = 0; h < p.size(0); ++h) {
          // alpha_s of the held candidates: fut[l, h, pos, s]
          at::Tensor alpha = b.fut[v.layer][h].index_select(0, p[h]).select(1, v.event).contiguous();
          b.target[v.layer][v.event][h].copy_(-alpha);
          const std::vector<int64_t> d = golden::oracle_drops(alpha.data_ptr<float>(), C, window_);
          std::copy(d.begin(), d.end(), b.drops[v.layer][v.event][h].data_ptr<int32_t>());  // int64 -> int32
        }
      }
      b.seen[v.layer * S + v.event] = 1;
    }
    return inner_->select(v);
  }

 private:
  std::unique_ptr<evict::Policy> inner_;
  std::vector<int64_t> steps_;
  int64_t budget_, window_;
  std::vector<Buffers>* buf_;
  judge::FeatureOptions fo_;
};

std::string file_name(const std::string& dir, int64_t i) { return fmt::format("{}/{:06d}.safetensors", dir, i); }

json manifest_for(const ExtractOptions& o, const model::Transformer& m, const RolloutOptions* ro) {
  const auto& c = m.config();
  json j{{"format", "fkv-feature-store"},
         {"version", kStoreVersion},
         {"model", {{"path", o.model_path}, {"sha256", o.model_sha256}}},
         {"n_layer", c.n_layer},
         {"n_head_kv", c.n_head_kv},
         {"head_dim", c.head_dim},
         {"group", c.n_head_q / c.n_head_kv},
         {"budget", o.budget},
         {"window", o.window},
         {"variant", evict::to_string(o.variant)},
         {"trajectory", ro ? "judge" : "golden"},
         {"layout", "kv [layers,Hkv,T,2d] f16; pos [layers,S,Hkv,B] i32; stats [layers,S,Hkv,B,8G] bf16 "
                    "(MAX,MIN,SUM,SUM16,SUM8,SUM32,CUM,DEC feature-major); target [layers,S,Hkv,B] f32; "
                    "drops [layers,S,Hkv,W] i32"}};
  if (ro)
    j["rollout"] = {{"judge_sha256", ro->judge_sha256}, {"sampled", ro->sampled}, {"seed", ro->seed},
                    {"bf16_probs", ro->bf16_probs}};
  // features computed by another forward than the native CPU kernels (aten, a GPU, bf16) round differently: the
  // store says so, refuses to mix, and its data hash includes it (absent for the native CPU default)
  const auto& w = m.weights();
  if (w.backend != "native" || w.device != "cpu" || w.dtype != "f32")
    j["compute"] = {{"backend", w.backend}, {"device", model::device_kind(w.device)},
                    {"dtype", w.dtype}};
  return j;
}

}  // namespace

ExtractReport extract_features(const model::Transformer& m, const trace::TraceSet& set, const ExtractOptions& o,
                               const std::string& dir, const RolloutOptions* ro) {
  FKV_CHECK_ARG(o.budget > 0 && o.window > 0 && o.budget % o.window == 0,
                "feature store: budget {} must be a positive multiple of the window {}", o.budget, o.window);
  FKV_CHECK_ARG(!ro || ro->judge, "feature store: an on-policy rollout needs a judge");
  const auto& mc = m.config();
  fs::create_directories(dir);
  const std::string mpath = dir + "/store.json";
  json want = manifest_for(o, m, ro);
  const json have = file_exists(mpath) ? read_json_file(mpath) : json();
  if (!have.is_null()) {
    for (const char* k : {"version", "n_layer", "n_head_kv", "head_dim", "group", "budget", "window", "variant"})
      FKV_CHECK_ARG(have.value(k, json()) == want[k],
                    "feature store {} was extracted with {} = {} (this run: {}); use another store directory or "
                    "delete it",
                    dir, k, have.value(k, json()).dump(), want[k].dump());
    FKV_CHECK_ARG(have.value("trajectory", std::string("golden")) == want["trajectory"].get<std::string>() &&
                      have.value("rollout", json()) == want.value("rollout", json()),
                  "feature store {} holds other states (trajectory {}, rollout {}) than this run's ({}, {}); use "
                  "another store directory or delete it",
                  dir, have.value("trajectory", std::string("golden")), have.value("rollout", json()).dump(),
                  want["trajectory"].get<std::string>(), want.value("rollout", json()).dump());
    FKV_CHECK_ARG(have.value("compute", json()) == want.value("compute", json()),
                  "feature store {} was extracted with another forward ({}) than this run's ({}); use another store "
                  "directory or delete it",
                  dir, have.value("compute", json()).dump(), want.value("compute", json()).dump());
    const std::string have_sha = have.value("model", json::object()).value("sha256", "");
    FKV_CHECK_ARG(have_sha == o.model_sha256,
                  "feature store {} was extracted with another model (sha256 {}); use another store directory", dir,
                  have_sha.substr(0, 12));
  }
  // eligible traces: labels for (B, W) with at least one step
  struct Item {
    int64_t index;
    const trace::Trace* t;
    const trace::GoldenLabels* lb;
  };
  std::vector<Item> items;
  for (const auto& t : set.traces) {
    const trace::GoldenLabels* lb = t.find_labels(o.budget, o.window);
    if (!lb || lb->drops.size(1) == 0) continue;
    if (o.limit > 0 && static_cast<int64_t>(items.size()) >= o.limit) break;
    items.push_back({static_cast<int64_t>(items.size()), &t, lb});
  }
  FKV_CHECK_ARG(!items.empty(),
                "feature store: no trace of {} has golden labels for B={} W={} with at least one step; label them with "
                "`fkv-trace label --budgets {} --window {}`",
                o.traces_path, o.budget, o.window, o.budget, o.window);
  json files = json::array();
  for (const auto& it : items) files.push_back({{"id", it.t->id}, {"length", it.t->length()}, {"steps", it.lb->drops.size(1)}});
  want["source"] = o.traces_path;
  want["traces"] = files;
  if (!have.is_null()) {
    const json hf = have.value("traces", json::array());
    for (size_t i = 0; i < std::min(hf.size(), files.size()); ++i)
      FKV_CHECK_ARG(hf[i] == files[i],
                    "feature store {} holds trace {} = {} but the input's trace {} is {}; use another store directory",
                    dir, i, hf[i].dump(), i, files[i].dump());
    if (hf.size() > files.size()) want["traces"] = hf;  // a --limit rerun keeps the larger store listed
  }
  write_file_atomic(mpath, want.dump(2) + "\n");

  ExtractReport rep;
  rep.traces = static_cast<int64_t>(items.size());
  const double t0 = now_seconds();
  const int64_t G = mc.n_head_q / mc.n_head_kv, H = mc.n_head_kv, D = mc.head_dim, L = mc.n_layer;
  std::vector<Item> todo;
  for (const auto& it : items) {
    const std::string f = file_name(dir, it.index);
    if (file_exists(f)) {
      try {
        io::SafetensorsFile sf(f);
        auto md = sf.metadata().find("fkv_store_trace");
        if (md != sf.metadata().end() && json::parse(md->second).value("id", "") == it.t->id) continue;
      } catch (const std::exception&) {
      }
      FKV_LOG_WARN("feature store: {} is unreadable or for another trace; extracting it again", f);
    }
    todo.push_back(it);
  }
  evict::EvictionConfig cfg;
  cfg.policy = "golden";  // the Recorder replaces the policy (golden replay, or the judge for rollouts)
  cfg.budget = o.budget;
  cfg.window = o.window;
  cfg.variant = o.variant;
  cfg.query_window = o.window;
  cfg.trigger = evict::Trigger::Length;
  judge::FeatureOptions fo{o.variant == evict::Variant::Parity, o.window};
  for (size_t b0 = 0; b0 < todo.size(); b0 += static_cast<size_t>(std::max<int64_t>(1, o.batch))) {
    std::vector<Item> chunk(todo.begin() + b0, todo.begin() + std::min(todo.size(), b0 + std::max<int64_t>(1, o.batch)));
    std::vector<const trace::Trace*> batch;
    std::vector<int64_t> steps;
    std::vector<Buffers> buf(chunk.size());
    auto golden = std::make_unique<evict::GoldenPolicy>();
    for (size_t s = 0; s < chunk.size(); ++s) {
      const auto* t = chunk[s].t;
      const auto* lb = chunk[s].lb;
      FKV_CHECK_ARG(lb->drops.size(0) == L && lb->drops.size(2) == H,
                    "trace '{}': labels for {} layers x {} KV heads, the model has {} x {} (traces of another model?)",
                    t->id, lb->drops.size(0), lb->drops.size(2), L, H);
      batch.push_back(t);
      golden->set_labels(static_cast<int64_t>(s), lb->drops);
      const int64_t S = lb->drops.size(1);
      steps.push_back(S);
      buf[s].kv = at::zeros({L, H, t->length(), 2 * D}, at::kHalf);
      buf[s].pos = at::zeros({L, S, H, o.budget}, at::kInt);
      buf[s].stats = at::zeros({L, S, H, o.budget, 8 * G}, at::kBFloat16);
      buf[s].seen.assign(static_cast<size_t>(L * S), 0);
      if (ro) {
        buf[s].fut = trace::future_score_tables(m, *t, o.budget, o.window, ro->bf16_probs, ro->chunk);
        FKV_CHECK(buf[s].fut.size(3) == S, "feature store: trace '{}' has {} oracle steps, its labels {}", t->id,
                  buf[s].fut.size(3), S);
        buf[s].target = at::zeros({L, S, H, o.budget}, at::kFloat);
        buf[s].drops = at::zeros({L, S, H, o.window}, at::kInt);
      }
    }
    std::unique_ptr<evict::Policy> inner;
    if (ro) {
      evict::EvictionConfig jc = cfg;
      jc.policy = ro->sampled ? "foresightkv" : "foresightkv_topk";
      jc.seed = ro->seed;
      inner = std::make_unique<judge::JudgePolicy>(ro->judge, ro->sampled, jc);
    } else {
      inner = std::move(golden);
    }
    c10::AutoGradMode no_grad(false);
    harness::run_teacher_forced(m, batch, cfg, false, [&](evict::Evictor& ev) {
      for (size_t s = 0; s < chunk.size(); ++s)
        ev.set_stream(static_cast<int64_t>(s), static_cast<uint64_t>(chunk[s].index));
      ev.set_policy(std::make_unique<Recorder>(std::move(inner), steps, o.budget, o.window, &buf, fo));
    });
    for (size_t s = 0; s < chunk.size(); ++s) {
      const auto* t = chunk[s].t;
      const auto* lb = chunk[s].lb;
      const int64_t S = lb->drops.size(1);
      for (char c : buf[s].seen)
        FKV_CHECK(c, "feature store: trace '{}' did not reach all {} eviction steps in every layer", t->id, S);
      at::Tensor target = ro ? buf[s].target : lb->scores.to(at::kFloat).contiguous();
      at::Tensor drops = ro ? buf[s].drops : lb->drops.to(at::kInt).contiguous();
      at::Tensor kv = buf[s].kv.contiguous(), pos = buf[s].pos.contiguous(), st = buf[s].stats.contiguous();
      auto shape = [](const at::Tensor& x) { return std::vector<int64_t>(x.sizes().begin(), x.sizes().end()); };
      std::vector<io::StWriteTensor> out = {{"kv", io::StDtype::F16, shape(kv), kv.data_ptr()},
                                            {"pos", io::StDtype::I32, shape(pos), pos.data_ptr()},
                                            {"stats", io::StDtype::BF16, shape(st), st.data_ptr()},
                                            {"target", io::StDtype::F32, shape(target), target.data_ptr()},
                                            {"drops", io::StDtype::I32, shape(drops), drops.data_ptr()}};
      json md = {{"id", t->id}, {"length", t->length()}, {"steps", S}, {"prompt_len", t->prompt_len}};
      io::write_safetensors(file_name(dir, chunk[s].index), out, {{"fkv_store_trace", md.dump()}});
      ++rep.extracted_now;
      rep.tokens_now += t->length();
    }
    FKV_LOG_INFO("feature store{}: {}/{} traces extracted now ({:.1f} tokens/s)", ro ? " (judge rollouts)" : "",
                 rep.extracted_now, todo.size(), rep.tokens_now / std::max(1e-9, now_seconds() - t0));
  }
  rep.seconds = now_seconds() - t0;
  for (const auto& it : items) {
    rep.steps += it.lb->drops.size(1);
    rep.bytes += static_cast<int64_t>(fs::file_size(file_name(dir, it.index)));
  }
  return rep;
}

FeatureStore::FeatureStore(const std::string& dir) : dir_(dir) {
  const std::string mpath = dir + "/store.json";
  FKV_CHECK_ARG(file_exists(mpath), "feature store {}: no store.json (extract it first: fkv-train sft does)", dir);
  manifest_ = read_json_file(mpath);
  FKV_CHECK_FORMAT(manifest_.value("format", "") == "fkv-feature-store" && manifest_.value("version", 0) == kStoreVersion,
                   "{}: not a version-{} fkv feature store; delete it and extract again", mpath, kStoreVersion);
  n_layer_ = manifest_.at("n_layer").get<int64_t>();
  n_head_kv_ = manifest_.at("n_head_kv").get<int64_t>();
  head_dim_ = manifest_.at("head_dim").get<int64_t>();
  group_ = manifest_.at("group").get<int64_t>();
  budget_ = manifest_.at("budget").get<int64_t>();
  window_ = manifest_.at("window").get<int64_t>();
  const json& tr = manifest_.at("traces");
  for (size_t i = 0; i < tr.size(); ++i) {
    const std::string f = file_name(dir, static_cast<int64_t>(i));
    FKV_CHECK_ARG(file_exists(f), "feature store {}: {} is missing (extraction interrupted? rerun fkv-train sft)", dir, f);
    files_.push_back(f);
    ids_.push_back(tr[i].at("id").get<std::string>());
    lengths_.push_back(tr[i].at("length").get<int64_t>());
    steps_.push_back(tr[i].at("steps").get<int64_t>());
  }
}

StoredTrace FeatureStore::load(int64_t i) const {
  FKV_CHECK_ARG(i >= 0 && i < size(), "feature store: trace {} out of range [0, {})", i, size());
  const std::string& f = files_[i];
  io::SafetensorsFile sf(f);
  StoredTrace t;
  t.id = ids_[i];
  t.length = lengths_[i];
  t.steps = steps_[i];
  auto get = [&](const char* name, std::vector<int64_t> shape) {
    auto it = sf.tensors().find(name);
    FKV_CHECK_FORMAT(it != sf.tensors().end(), "{}: missing tensor '{}'", f, name);
    at::Tensor x = judge::tensor_from_st(it->second, f);
    FKV_CHECK_FORMAT(x.sizes() == at::IntArrayRef(shape), "{}: tensor {} has shape {}, expected {}", f, name,
                     fmt::streamed(x.sizes()), fmt::streamed(at::IntArrayRef(shape)));
    return x;
  };
  const int64_t L = n_layer_, H = n_head_kv_, S = t.steps, B = budget_;
  t.kv = get("kv", {L, H, t.length, 2 * head_dim_});
  t.pos = get("pos", {L, S, H, B});
  t.stats = get("stats", {L, S, H, B, 8 * group_});
  t.target = get("target", {L, S, H, B});
  t.drops = get("drops", {L, S, H, window_});
  FKV_CHECK_FORMAT(t.pos.min().item<int32_t>() >= 0 && t.pos.max().item<int32_t>() < t.length,
                   "{}: candidate positions outside [0, {})", f, t.length);
  return t;
}

std::string FeatureStore::data_hash() const {
  json j = {{"model", manifest_.at("model").value("sha256", "")}, {"budget", budget_}, {"window", window_},
            {"variant", manifest_.value("variant", "")}, {"traces", manifest_.at("traces")}};
  if (manifest_.contains("compute")) j["compute"] = manifest_["compute"];
  const std::string s = j.dump();
  return sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

at::Tensor assemble_features(const StoredTrace& t, int64_t l) {
  const int64_t H = t.kv.size(1), S = t.pos.size(1), B = t.pos.size(3), D2 = t.kv.size(3);
  at::Tensor idx = t.pos[l].permute({1, 0, 2}).reshape({H, S * B}).to(at::kLong);       // [H, S*B]
  at::Tensor kv = t.kv[l].gather(1, idx.unsqueeze(-1).expand({H, S * B, D2}));          // [H, S*B, 2d]
  at::Tensor st = t.stats[l].permute({1, 0, 2, 3}).reshape({H, S * B, t.stats.size(4)});  // [H, S*B, 8G]
  return at::cat({kv.to(at::kFloat), st.to(at::kFloat)}, 2);
}

}  // namespace fkv::train
