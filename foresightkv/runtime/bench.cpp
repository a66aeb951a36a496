#include "foresightkv/runtime/bench.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>

#include <cmath>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <tuple>

#include "foresightkv/core/error.h"
#include "foresightkv/core/timer.h"
#include "foresightkv/io/quant.h"
#include "foresightkv/ops/attention.h"
#include "foresightkv/ops/qmatmul.h"

namespace fkv::runtime {
int64_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

int64_t current_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, rss = 0;
  f >> size >> rss;
  return rss * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

at::ScalarType parse_kv_dtype(const std::string& s) {
  if (s == "f32") return at::kFloat;
  if (s == "f16") return at::kHalf;
  if (s == "bf16") return at::kBFloat16;  // the aten backend only (make_cache refuses it for native)
  FKV_THROW_KIND(1, "unknown KV cache dtype '{}'; expected f32, f16 or bf16", s);
}

json run_bench(const model::Transformer& m, const BenchOptions& opt) {
  FKV_CHECK_ARG(opt.threads > 0, "bench: --threads must be positive");
  FKV_CHECK_ARG(opt.decode_tokens > 0 && opt.prefill_chunk > 0, "bench: decode tokens and chunk must be positive");
  at::set_num_threads(static_cast<int>(opt.threads));
  const auto& c = m.config();
  std::mt19937_64 rng(opt.seed);
  json results = json::array();
  for (int64_t ctx : opt.contexts) {
    FKV_CHECK_ARG(ctx > 0, "bench: context {} must be positive", ctx);
    // Random ids from the lower vocabulary (ordinary tokens); the content does not change the cost.
    std::uniform_int_distribution<int64_t> dist(100, std::min<int64_t>(c.n_vocab - 1, 20000));
    std::vector<int64_t> ids(static_cast<size_t>(ctx));
    for (auto& t : ids) t = dist(rng);
    double best_prefill = 0, best_decode = 0;
    for (int64_t rep = 0; rep < std::max<int64_t>(1, opt.repeats); ++rep) {
      cache::KvCache kv = m.make_cache(1, ctx + opt.decode_tokens, parse_kv_dtype(opt.kv_dtype));
      double t0 = now_seconds();
      at::Tensor last;
      for (int64_t s = 0; s < ctx; s += opt.prefill_chunk) {
        const int64_t n = std::min(opt.prefill_chunk, ctx - s);
        at::Tensor idt = at::from_blob(ids.data() + s, {1, n}, at::kLong).clone();
        at::Tensor pos = at::arange(s, s + n, at::kLong).view({1, n});
        last = m.forward(idt, pos, kv, model::Logits::Last);
      }
      const double prefill_s = now_seconds() - t0;
      int64_t next = last.argmax(-1).item<int64_t>();
      t0 = now_seconds();
      for (int64_t i = 0; i < opt.decode_tokens; ++i) {
        at::Tensor idt = at::full({1, 1}, next, at::kLong);
        at::Tensor pos = at::full({1, 1}, ctx + i, at::kLong);
        at::Tensor lg = m.forward(idt, pos, kv, model::Logits::Last);
        next = lg.argmax(-1).item<int64_t>();
      }
      const double decode_s = now_seconds() - t0;
      best_prefill = std::max(best_prefill, ctx / prefill_s);
      best_decode = std::max(best_decode, opt.decode_tokens / decode_s);
    }
    results.push_back({{"context", ctx},
                       {"prefill_tokens_per_s", best_prefill},
                       {"decode_tokens_per_s", best_decode},
                       {"decode_tokens", opt.decode_tokens},
                       {"peak_rss_bytes", peak_rss_bytes()}});
  }
  json types = json::object();
  for (const auto& [name, count] : m.weights().type_summary()) types[name] = count;
  return {{"results", results},
          {"model", m.weights().source_path},
          {"dtype_path", {{"activations", m.weights().act_q8 ? "q8 (decode products), f32 (prefill)" : "f32"}, {"kv_cache", opt.kv_dtype}, {"weights", types}}},
          {"threads", opt.threads},
          {"prefill_chunk", opt.prefill_chunk},
          {"repeats", opt.repeats},
          {"note", "peak_rss_bytes is the process peak so far (monotonic over contexts)"}};
}


namespace {

// Best-of-`repeats` seconds per call of fn, each timing looping for at least min_seconds (one warm-up call).
double time_call(const std::function<void()>& fn, double min_seconds, int64_t repeats) {
  fn();
  double best = 0;
  for (int64_t r = 0; r < std::max<int64_t>(1, repeats); ++r) {
    int64_t n = 0;
    const double t0 = now_seconds();
    double el = 0;
    do {
      fn();
      ++n;
      el = now_seconds() - t0;
    } while (el < min_seconds);
    const double per = el / static_cast<double>(n);
    best = r == 0 ? per : std::min(best, per);
  }
  return best;
}

}  // namespace

json run_kernel_bench(const model::Transformer& m, const KernelBenchOptions& opt) {
  FKV_CHECK_ARG(opt.threads > 0, "bench-kernels: --threads must be positive");
  FKV_CHECK_ARG(opt.min_seconds > 0, "bench-kernels: the minimum timing must be positive");
  for (int64_t n : opt.n_tok) FKV_CHECK_ARG(n > 0, "bench-kernels: --n-tok entries must be positive, got {}", n);
  for (int64_t n : opt.contexts) FKV_CHECK_ARG(n > 0, "bench-kernels: --contexts entries must be positive, got {}", n);
  at::set_num_threads(static_cast<int>(opt.threads));
  const auto& W = m.weights();
  const auto& c = m.config();
  // distinct (kind, type, rows, cols): the first layer where each occurs
  struct Item {
    std::string kind;
    int64_t layer;
    const ops::WeightView* view;
  };
  std::vector<Item> items;
  std::set<std::tuple<std::string, int, int64_t, int64_t>> seen;
  auto add = [&](const std::string& kind, int64_t layer, const model::Matrix& mat) {
    const auto key = std::make_tuple(kind, static_cast<int>(mat.view.type), mat.view.rows, mat.view.cols);
    if (seen.insert(key).second) items.push_back({kind, layer, &mat.view});
  };
  for (int64_t l = 0; l < static_cast<int64_t>(W.layers.size()); ++l) {
    const auto& L = W.layers[static_cast<size_t>(l)];
    add("attn_q", l, L.wq), add("attn_k", l, L.wk), add("attn_v", l, L.wv), add("attn_output", l, L.wo);
    add("ffn_gate", l, L.w_gate), add("ffn_up", l, L.w_up), add("ffn_down", l, L.w_down);
  }
  add("output", -1, W.output);
  std::mt19937_64 rng(0);
  std::normal_distribution<float> nd(0.f, 1.f);
  json mm = json::array();
  for (const Item& it : items) {
    const ops::WeightView& v = *it.view;
    const double bytes = static_cast<double>(io::row_bytes(v.type, v.cols)) * static_cast<double>(v.rows);
    for (int64_t n : opt.n_tok) {
      std::vector<float> x(static_cast<size_t>(n * v.cols)), y(static_cast<size_t>(n * v.rows));
      for (auto& e : x) e = nd(rng);
      json row = {{"kind", it.kind}, {"layer", it.layer}, {"type", io::type_name(v.type)}, {"rows", v.rows},
                  {"cols", v.cols}, {"n_tok", n}, {"weight_bytes", bytes}};
      for (const char* act : {"f32", "q8"}) {
        const bool q8 = std::string(act) == "q8";
        const double s = time_call([&] { q8 ? ops::matmul_q8(v, x.data(), n, y.data()) : ops::matmul(v, x.data(), n, y.data()); },
                                   opt.min_seconds, opt.repeats);
        row[act] = {{"ms", s * 1e3}, {"weight_gb_per_s", bytes / s / 1e9},
                    {"gmac_per_s", static_cast<double>(v.rows) * static_cast<double>(v.cols) * static_cast<double>(n) / s / 1e9}};
      }
      row["q8_applies"] = ops::matmul_q8_applies(v, n);
      mm.push_back(row);
    }
  }
  // decode attention: one sequence, one query token, every key visible
  json att = json::array();
  const int64_t Hq = c.n_head_q, Hkv = c.n_head_kv, D = c.head_dim;
  for (int64_t ctx : opt.contexts) {
    std::vector<float> q(static_cast<size_t>(Hq * D)), k(static_cast<size_t>(Hkv * ctx * D)), vv(k.size()),
        out(q.size());
    for (auto& e : q) e = nd(rng);
    for (auto& e : k) e = nd(rng);
    for (auto& e : vv) e = nd(rng);
    std::vector<uint16_t> k16(k.size()), v16(vv.size());
    for (size_t i = 0; i < k.size(); ++i) k16[i] = io::fp32_to_fp16(k[i]), v16[i] = io::fp32_to_fp16(vv[i]);
    std::vector<int64_t> pos(static_cast<size_t>(Hkv * ctx)), len(static_cast<size_t>(Hkv), ctx), qpos(1, ctx);
    for (int64_t i = 0; i < Hkv * ctx; ++i) pos[static_cast<size_t>(i)] = i % ctx;
    json row = {{"context", ctx}, {"n_head_q", Hq}, {"n_head_kv", Hkv}, {"head_dim", D}};
    for (const bool f16 : {false, true}) {
      ops::AttentionArgs a;
      a.n_seq = 1, a.n_tok = 1, a.n_head_q = Hq, a.n_head_kv = Hkv, a.head_dim = D, a.capacity = ctx;
      a.scale = 1.f / std::sqrt(static_cast<float>(D));
      a.q = q.data(), a.kv_f16 = f16, a.pos = pos.data(), a.len = len.data(), a.qpos = qpos.data(), a.out = out.data();
      a.k = f16 ? static_cast<const void*>(k16.data()) : k.data();
      a.v = f16 ? static_cast<const void*>(v16.data()) : vv.data();
      const double s = time_call([&] { ops::attention_decode_f32(a); }, opt.min_seconds, opt.repeats);
      row[f16 ? "f16_kv" : "f32_kv"] = {{"us", s * 1e6}, {"ms_per_token_all_layers", s * 1e3 * static_cast<double>(c.n_layer)}};
    }
    att.push_back(row);
  }
  return {{"matmul", mm},
          {"attention", att},
          {"model", W.source_path},
          {"threads", opt.threads},
          {"kernel", ops::matmul_kernel_name()},
          {"min_seconds", opt.min_seconds},
          {"repeats", opt.repeats},
          {"note", "best of repeats; each timing loops one call for min_seconds after a warm-up call; weights are "
                   "the model's, inputs seeded random; weight_gb_per_s = matrix bytes / time (cache-resident "
                   "matrices can exceed memory bandwidth)"}};
}

}  // namespace fkv::runtime
