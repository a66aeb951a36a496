#include "foresightkv/runtime/bench.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include "foresightkv/core/error.h"
#include "foresightkv/core/timer.h"

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
  FKV_THROW_KIND(1, "unknown KV cache dtype '{}'; expected f32 or f16", s);
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

}  // namespace fkv::runtime
