// fkv_cuda::attention (split-K attention over the evictable cache + per-key statistics) against the naive fp64 ATen
// reference of references.h. The reference itself is checked on the CPU ([cpu] cases, no GPU needed) against
// ops::attention_decode_f32 (the output) and the Evictor's probabilities and cum/dec accumulators (the statistics).
// GPU cases skip (exit 4) without a device.
//
// Tolerances: the reference computes in fp64 on the stored (already rounded) fp32/fp16/bf16 K/V values, the kernel in
// fp32. Scores are O(1) (random q, k, scale 1/sqrt(D)); fp32 dot products over D <= 128 terms err by ~1e-6, so
// outputs (weighted means of O(1) values) are compared with atol 1e-5 + rtol 1e-5, probabilities and their sums
// (<= T = 20, each p <= 1) with atol 1e-6 + rtol 1e-5 (p err ~1e-6 relative).
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include "support/catch.h"

#include <cmath>
#include <vector>

#include "cuda_test_util.h"
#include "foresightkv/cache/kv_cache.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/ops/attention.h"
#include "fkv_cuda/attention.h"
#include "references.h"

using namespace fkv;

namespace {

constexpr double kOutAtol = 1e-5, kOutRtol = 1e-5;
constexpr double kProbAtol = 1e-6, kProbRtol = 1e-5;
constexpr float kSentinel = 7.f;  // initial value of the overwritten statistics: must survive past the live length

struct Inputs {
  at::Tensor q;              // [n_seq, T, Hq, D] fp32 (token-major)
  at::Tensor k, v;           // [n_seq, Hkv, S, D] storage dtype
  at::Tensor pos, len, qpos; // [n_seq, Hkv, S], [n_seq, Hkv], [n_seq, T] int64
  double scale = 0;
};

/// Random cache rows with the given lengths; positions strictly increasing with gaps (as after evictions), -1 past
/// the length. Queries of sequence s sit at the newest key position of the sequence - T + 1 ... (a chunk whose
/// earlier queries do not see the newest keys); `blind_seq` (if >= 0) gets query positions below every key.
Inputs random_inputs(const std::vector<int64_t>& lengths, int64_t n_seq, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                     int64_t S, at::ScalarType dt, at::Generator& gen, int64_t blind_seq = -1) {
  Inputs in;
  in.q = at::randn({n_seq, T, Hq, D}, gen);
  in.k = at::randn({n_seq, Hkv, S, D}, gen).to(dt);
  in.v = at::randn({n_seq, Hkv, S, D}, gen).to(dt);
  in.len = at::tensor(lengths, at::kLong).view({n_seq, Hkv});
  at::Tensor live = at::arange(S, at::kLong).view({1, 1, S}) < in.len.unsqueeze(-1);
  in.pos = at::where(live, at::randint(1, 3, {n_seq, Hkv, S}, gen, at::kLong).cumsum(-1), at::full({}, -1, at::kLong));
  in.qpos = at::empty({n_seq, T}, at::kLong);
  for (int64_t s = 0; s < n_seq; ++s) {
    const int64_t newest = in.pos[s].max().item<int64_t>();
    for (int64_t t = 0; t < T; ++t) in.qpos[s][t] = s == blind_seq ? -5 + t : std::max<int64_t>(newest, 0) - T + 1 + t;
  }
  in.scale = 1.0 / std::sqrt(static_cast<double>(D));
  return in;
}

fkv_cuda::KvDtype kv_dtype(at::ScalarType t) {
  return t == at::kFloat ? fkv_cuda::KvDtype::F32 : t == at::kHalf ? fkv_cuda::KvDtype::F16 : fkv_cuda::KvDtype::BF16;
}

struct RunOptions {
  bool with_out = true, stats = true, stats_bf16 = false, head_major = false;
  int64_t len_bound = 0;
  float decay = 0.9f;
};

struct GpuResult {
  at::Tensor out;  // [n_seq, T, Hq, D] (token-major whatever the layout used)
  at::Tensor acc_sum, acc_dec, stat_sum, stat_max, stat_min;  // [n_seq, Hkv, G, S]
  size_t workspace_bytes = 0;
};

GpuResult run_gpu(const Inputs& in, const RunOptions& o, const at::Tensor& acc0, const at::Tensor& dec0) {
  const int64_t n_seq = in.q.size(0), T = in.q.size(1), Hq = in.q.size(2), D = in.q.size(3);
  const int64_t Hkv = in.k.size(1), S = in.k.size(2);
  at::Tensor q = (o.head_major ? in.q.permute({0, 2, 1, 3}) : in.q).contiguous().to(at::kCUDA);
  at::Tensor k = in.k.to(at::kCUDA), v = in.v.to(at::kCUDA);
  at::Tensor pos = in.pos.to(at::kCUDA), len = in.len.to(at::kCUDA), qpos = in.qpos.to(at::kCUDA);
  at::Tensor out = at::full(q.sizes(), kSentinel, q.options());
  at::Tensor acc = acc0.to(at::kCUDA), dec = dec0.to(at::kCUDA);
  auto fopt = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  at::Tensor ss = at::full(acc0.sizes(), kSentinel, fopt), smax = at::full(acc0.sizes(), kSentinel, fopt),
             smin = at::full(acc0.sizes(), kSentinel, fopt);
  fkv_cuda::AttentionArgs a;
  a.n_seq = n_seq; a.n_tok = T; a.n_head_q = Hq; a.n_head_kv = Hkv; a.head_dim = D; a.capacity = S;
  a.len_bound = o.len_bound;
  a.scale = static_cast<float>(in.scale);
  a.layout = o.head_major ? fkv_cuda::QueryLayout::HeadMajor : fkv_cuda::QueryLayout::TokenMajor;
  a.q = q.data_ptr<float>();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.kv_dtype = kv_dtype(in.k.scalar_type());
  a.pos = pos.data_ptr<int64_t>();
  a.len = len.data_ptr<int64_t>();
  a.qpos = qpos.data_ptr<int64_t>();
  a.out = o.with_out ? out.data_ptr<float>() : nullptr;
  if (o.stats) {
    a.acc_sum = acc.data_ptr<float>();
    a.acc_dec = dec.data_ptr<float>();
    a.decay = o.decay;
    a.stat_sum = ss.data_ptr<float>();
    a.stat_max = smax.data_ptr<float>();
    a.stat_min = smin.data_ptr<float>();
    a.stats_bf16 = o.stats_bf16;
  }
  GpuResult r;
  r.workspace_bytes = fkv_cuda::attention_workspace_bytes(a);
  REQUIRE(r.workspace_bytes > 0);
  at::Tensor ws = at::empty({static_cast<int64_t>(r.workspace_bytes)}, fopt.dtype(at::kByte));
  a.workspace = ws.data_ptr();
  a.workspace_bytes = r.workspace_bytes;
  REQUIRE(fkv_cuda::attention(a, nullptr) == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  r.out = (o.head_major ? out.permute({0, 2, 1, 3}) : out).cpu();
  r.acc_sum = acc.cpu();
  r.acc_dec = dec.cpu();
  r.stat_sum = ss.cpu();
  r.stat_max = smax.cpu();
  r.stat_min = smin.cpu();
  return r;
}

/// Run on the GPU and compare everything requested with the reference.
GpuResult check(const Inputs& in, const RunOptions& o, at::Generator& gen) {
  const int64_t Hq = in.q.size(2), Hkv = in.k.size(1), S = in.k.size(2), G = Hq / Hkv;
  at::Tensor acc0 = at::rand({in.q.size(0), Hkv, G, S}, gen), dec0 = at::rand({in.q.size(0), Hkv, G, S}, gen);
  GpuResult g = run_gpu(in, o, acc0, dec0);
  test::AttentionRef ref = test::reference_attention(in.q, in.k, in.v, in.pos, in.len, in.qpos, in.scale);
  if (o.with_out) test::require_close(g.out, ref.out, kOutAtol, kOutRtol, "out");
  if (!o.stats) return g;
  at::Tensor live = test::live_slots(in.len, G, S);
  const test::StatsRef st = test::reference_stats(ref.probs, false);
  test::require_close(g.acc_sum, at::where(live, acc0.to(at::kDouble) + st.sum, acc0.to(at::kDouble)), kProbAtol,
                      kProbRtol, "acc_sum (CUM += sum_t p)");
  test::require_close(g.acc_dec, at::where(live, o.decay * dec0.to(at::kDouble) + st.sum, dec0.to(at::kDouble)),
                      kProbAtol, kProbRtol, "acc_dec (DEC = decay * DEC + sum_t p)");
  const at::Tensor sentinel = at::full({}, static_cast<double>(kSentinel), at::kDouble);
  if (o.stats_bf16) {
    // each probability rounded to bf16: a value within fp32 noise of a rounding boundary may land on the neighbouring
    // bf16 value (one bf16 ulp <= 2^-7 relative), hence rtol 1e-2; max/min must be bf16 values exactly.
    const test::StatsRef sb = test::reference_stats(ref.probs, true);
    test::require_close(g.stat_sum, at::where(live, sb.sum, sentinel), 1e-7, 1e-2, "stat_sum (bf16 p)");
    test::require_close(g.stat_max, at::where(live, sb.max, sentinel), 1e-7, 1e-2, "stat_max (bf16 p)");
    test::require_close(g.stat_min, at::where(live, sb.min, sentinel), 1e-7, 1e-2, "stat_min (bf16 p)");
    for (const at::Tensor* t : {&g.stat_max, &g.stat_min})
      REQUIRE(at::equal(*t, t->to(at::kBFloat16).to(at::kFloat)));
  } else {
    test::require_close(g.stat_sum, at::where(live, st.sum, sentinel), kProbAtol, kProbRtol, "stat_sum");
    test::require_close(g.stat_max, at::where(live, st.max, sentinel), kProbAtol, kProbRtol, "stat_max");
    test::require_close(g.stat_min, at::where(live, st.min, sentinel), kProbAtol, kProbRtol, "stat_min");
  }
  return g;
}

}  // namespace

TEST_CASE("cuda attention: decode (T=1) and chunk (T=4) equal the reference, dtypes x GQA groups x head dims",
          "[cuda][gpu]") {
  FKV_REQUIRE_GPU();
  at::Generator gen = at::detail::createCPUGenerator(28);
  const int64_t n_seq = 2, Hkv = 2, S = 77;  // S odd, not a multiple of the 32-key tile
  // rows: empty, full, odd, a single entry
  const std::vector<int64_t> lengths = {0, S, 33, 1};
  int combo = 0;
  for (at::ScalarType dt : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int64_t G : {1, 2, 3, 4, 7, 8})
      for (int64_t T : {1, 4}) {
        // 40: not a multiple of the warp size; 256: the largest head_dim (> 48 KiB of shared memory: opt-in path)
        const int64_t D = std::vector<int64_t>{64, 128, 40, 256}[combo++ % 4];
        INFO("dtype " << at::toString(dt) << " G " << G << " T " << T << " D " << D);
        Inputs in = random_inputs(lengths, n_seq, T, G * Hkv, Hkv, D, S, dt, gen);
        check(in, RunOptions{}, gen);
      }
}

TEST_CASE("cuda attention: long caches (8192 keys) run split-K and match the reference", "[cuda][gpu]") {
  FKV_REQUIRE_GPU();
  at::Generator gen = at::detail::createCPUGenerator(8192);
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16})
    for (int64_t T : {1, 4}) {
      INFO("dtype " << at::toString(dt) << " T " << T);
      // one (sequence, KV head) holding 8192 keys: the work must spread over many key ranges
      Inputs full = random_inputs({8192}, 1, T, 4, 1, 128, 8192, dt, gen);
      GpuResult g = check(full, RunOptions{}, gen);
      // partial outputs of >= 16 key ranges are in the workspace: rows * n_split * D floats
      REQUIRE(g.workspace_bytes >= static_cast<size_t>(4 * T) * 16 * 128 * sizeof(float));
      // a larger capacity with a tighter len_bound, lengths around the bound
      Inputs part = random_inputs({8191, 5000}, 1, T, 8, 2, 128, 8300, dt, gen);
      RunOptions o;
      o.len_bound = 8191;
      check(part, o, gen);
    }
}

TEST_CASE("cuda attention: head-major layout, many query rows, statistics only, bf16 statistics, blind queries",
          "[cuda][gpu]") {
  FKV_REQUIRE_GPU();
  at::Generator gen = at::detail::createCPUGenerator(77);
  // an eviction event's observed queries: T = 20, G = 4 -> 80 rows per KV head (several row groups and chunks);
  // sequence 1's queries sit below every key position (they see nothing: out 0, p 0)
  for (at::ScalarType dt : {at::kFloat, at::kHalf}) {
    INFO("dtype " << at::toString(dt));
    Inputs in = random_inputs({300, 131, 17, 0}, 2, 20, 8, 2, 64, 300, dt, gen, /*blind_seq=*/1);
    RunOptions o;
    o.head_major = true;
    GpuResult g = check(in, o, gen);
    REQUIRE(at::equal(g.out[1], at::zeros_like(g.out[1])));
    o.with_out = false;  // statistics only
    o.decay = 0.5f;
    check(in, o, gen);
    o.stats_bf16 = true;
    o.head_major = false;
    check(in, o, gen);
  }
}

TEST_CASE("cuda attention: invalid arguments return cudaErrorInvalidValue before any launch", "[cuda][cpu]") {
  // Host-side checks only: no device is touched, so this runs on CPU-only machines.
  float f = 0;
  int64_t i64 = 0;
  alignas(16) unsigned char ws[1 << 16];
  auto valid = [&] {
    fkv_cuda::AttentionArgs a;
    a.n_seq = 1; a.n_tok = 1; a.n_head_q = 2; a.n_head_kv = 1; a.head_dim = 8; a.capacity = 4;
    a.q = &f; a.k = &f; a.v = &f; a.pos = &i64; a.len = &i64; a.qpos = &i64; a.out = &f;
    a.workspace = ws;
    a.workspace_bytes = sizeof(ws);
    return a;
  };
  REQUIRE(fkv_cuda::attention_workspace_bytes(valid()) > 0);
  REQUIRE(fkv_cuda::attention_workspace_bytes(valid()) <= sizeof(ws));
  const auto inv = cudaErrorInvalidValue;
  auto rejects = [&](const fkv_cuda::AttentionArgs& a) { return fkv_cuda::attention(a, nullptr) == inv; };
  { auto a = valid(); a.n_seq = 0; REQUIRE(rejects(a)); REQUIRE(fkv_cuda::attention_workspace_bytes(a) == 0); }
  { auto a = valid(); a.n_tok = 0; REQUIRE(rejects(a)); }
  { auto a = valid(); a.n_head_q = 0; REQUIRE(rejects(a)); }
  { auto a = valid(); a.n_head_kv = -2; REQUIRE(rejects(a)); }
  { auto a = valid(); a.head_dim = 0; REQUIRE(rejects(a)); }
  { auto a = valid(); a.head_dim = fkv_cuda::kAttentionMaxHeadDim + 1; REQUIRE(rejects(a)); }
  { auto a = valid(); a.capacity = 0; REQUIRE(rejects(a)); }
  { auto a = valid(); a.n_head_q = 3; a.n_head_kv = 2; REQUIRE(rejects(a)); }  // Hq not a multiple of Hkv
  { auto a = valid(); a.len_bound = -1; REQUIRE(rejects(a)); }
  { auto a = valid(); a.q = nullptr; REQUIRE(rejects(a)); }
  { auto a = valid(); a.k = nullptr; REQUIRE(rejects(a)); }
  { auto a = valid(); a.v = nullptr; REQUIRE(rejects(a)); }
  { auto a = valid(); a.pos = nullptr; REQUIRE(rejects(a)); }
  { auto a = valid(); a.len = nullptr; REQUIRE(rejects(a)); }
  { auto a = valid(); a.qpos = nullptr; REQUIRE(rejects(a)); }
  { auto a = valid(); a.out = nullptr; REQUIRE(rejects(a)); }  // nothing requested
  { auto a = valid(); a.workspace = nullptr; REQUIRE(rejects(a)); }
  { auto a = valid(); a.workspace_bytes = fkv_cuda::attention_workspace_bytes(a) - 1; REQUIRE(rejects(a)); }
  { auto a = valid(); a.workspace = ws + 4; a.workspace_bytes -= 4; REQUIRE(rejects(a)); }  // misaligned
  { auto a = valid(); a.kv_dtype = static_cast<fkv_cuda::KvDtype>(9); REQUIRE(rejects(a)); }
}

TEST_CASE("cuda attention reference equals ops::attention_decode_f32 (fp32 and fp16 KV)", "[cuda][cpu]") {
  at::Generator gen = at::detail::createCPUGenerator(3);
  const int64_t n_seq = 2, Hkv = 2, S = 45, D = 16;
  for (at::ScalarType dt : {at::kFloat, at::kHalf})
    for (int64_t G : {1, 2, 4, 7})
      for (int64_t T : {1, 4}) {
        INFO("dtype " << at::toString(dt) << " G " << G << " T " << T);
        const int64_t Hq = G * Hkv;
        Inputs in = random_inputs({0, S, 29, 1}, n_seq, T, Hq, Hkv, D, S, dt, gen);
        at::Tensor out = at::zeros({n_seq, T, Hq, D}, at::kFloat);
        ops::AttentionArgs a;
        a.n_seq = n_seq; a.n_tok = T; a.n_head_q = Hq; a.n_head_kv = Hkv; a.head_dim = D; a.capacity = S;
        a.scale = static_cast<float>(in.scale);
        a.q = in.q.data_ptr<float>();
        a.k = in.k.data_ptr();
        a.v = in.v.data_ptr();
        a.kv_f16 = dt == at::kHalf;
        a.pos = in.pos.data_ptr<int64_t>();
        a.len = in.len.data_ptr<int64_t>();
        a.qpos = in.qpos.data_ptr<int64_t>();
        a.out = out.data_ptr<float>();
        ops::attention_decode_f32(a);
        test::AttentionRef ref = test::reference_attention(in.q, in.k, in.v, in.pos, in.len, in.qpos, in.scale);
        test::require_close(out, ref.out, kOutAtol, kOutRtol, "ops::attention_decode_f32 vs reference");
        // the chunk's first query must not see the newest key (causality by position is exercised)
        if (T > 1) REQUIRE(ref.probs[0][1].select(2, S - 1)[0][0].item<double>() == 0.0);
      }
}

namespace {
// Keeps clones of what the Evictor shows it and keeps the newest B entries.
class StatsSpy final : public evict::Policy {
 public:
  std::string name() const override { return "stats_spy"; }
  bool needs_attention() const override { return true; }
  bool needs_accumulators() const override { return true; }
  at::Tensor select(const evict::LayerView& v) override {
    seen.push_back(v);
    evict::LayerView& c = seen.back();
    for (at::Tensor* t : {&c.k, &c.v, &c.pos, &c.logits, &c.probs, &c.cum, &c.dec})
      if (t->defined()) *t = t->clone();
    return at::arange(v.n - v.budget, v.n, at::kLong).repeat({v.k.size(0), 1});
  }
  std::vector<evict::LayerView> seen;
};
}  // namespace

TEST_CASE("cuda attention statistics reference equals the Evictor's probs, cum and decayed dec", "[cuda][cpu]") {
  // Intended variant, length trigger, B = 12, L = 4, query_window = 4: the first event sees all 16 queries of the
  // prefill (cum = dec = their sum); the second sees the 4 decode queries since then against the compacted cache
  // (cum = compacted cum + sum, dec = 0.9 * compacted dec + sum): exactly acc_sum / acc_dec of one kernel call over
  // those queries.
  at::Generator gen = at::detail::createCPUGenerator(19);
  const int64_t B = 12, L = 4, Hq = 6, Hkv = 2, G = 3, D = 8, S = 16;
  evict::EvictionConfig c;
  c.policy = "h2o";
  c.budget = B;
  c.window = L;
  c.query_window = L;
  c.trigger = evict::Trigger::Length;
  c.variant = evict::Variant::Intended;
  c.decay = 0.9;
  evict::Evictor e(c, 1, 1, Hq, Hkv, D);
  auto spy_owner = std::make_unique<StatsSpy>();
  StatsSpy* spy = spy_owner.get();
  e.set_policy(std::move(spy_owner));
  cache::KvCacheOptions o;
  o.n_seq = 1; o.n_layer = 1; o.n_head_kv = Hkv; o.head_dim = D; o.capacity = S;
  cache::KvCache kv(o);
  int64_t next = 0;
  std::vector<at::Tensor> qs, qpos;  // per forward: q [1, T, Hq, D] token-major, positions [1, T]
  std::vector<Inputs> at_event;      // the cache and the event's queries at each event
  auto forward = [&](int64_t T) {
    at::Tensor pos = (at::arange(T, at::kLong) + next).view({1, T});
    e.begin_forward(pos, {T});
    at::Tensor q = at::randn({1, Hq, T, D}, gen);
    e.observe_queries(0, q);
    kv.append(0, at::randn({1, Hkv, T, D}, gen), at::randn({1, Hkv, T, D}, gen), pos);
    next += T;
    qs.push_back(q.permute({0, 2, 1, 3}).contiguous());
    qpos.push_back(pos);
    Inputs in;
    in.k = kv.k(0).clone(); in.v = kv.v(0).clone(); in.pos = kv.pos(0).clone(); in.len = kv.lengths(0).clone();
    in.scale = 1.0 / std::sqrt(static_cast<double>(D));
    const size_t before = spy->seen.size();
    e.end_forward(kv);
    if (spy->seen.size() > before) at_event.push_back(in);
  };
  forward(B + L);  // event 0 over the 16 prefill queries
  for (int i = 0; i < L; ++i) forward(1);  // event 1 over the 4 decode queries
  REQUIRE(spy->seen.size() == 2);
  REQUIRE(at_event.size() == 2);
  at::Tensor cum_prev, dec_prev;  // compacted accumulators after event 0, [Hkv, G, S] (zero past B)
  for (int ev = 0; ev < 2; ++ev) {
    INFO("event " << ev);
    const evict::LayerView& v = spy->seen[ev];
    Inputs& in = at_event[ev];
    in.q = ev == 0 ? qs[0] : at::cat({qs[1], qs[2], qs[3], qs[4]}, 1);
    in.qpos = ev == 0 ? qpos[0] : at::cat({qpos[1], qpos[2], qpos[3], qpos[4]}, 1);
    test::AttentionRef ref = test::reference_attention(in.q, in.k, in.v, in.pos, in.len, in.qpos, in.scale);
    const int64_t n = v.n;
    REQUIRE(n == B + L);
    at::Tensor probs = ref.probs[0].narrow(3, 0, n);  // [Hkv, G, T, n]
    test::require_close(v.probs, probs, 1e-6, 1e-5, "Evictor LayerView.probs vs reference");
    at::Tensor sum = test::reference_stats(ref.probs, false).sum[0].narrow(2, 0, n);  // [Hkv, G, n]
    at::Tensor cum0 = ev == 0 ? at::zeros({Hkv, G, n}, at::kDouble) : cum_prev.narrow(2, 0, n).to(at::kDouble);
    at::Tensor dec0 = ev == 0 ? at::zeros({Hkv, G, n}, at::kDouble) : dec_prev.narrow(2, 0, n).to(at::kDouble);
    test::require_close(v.cum, cum0 + sum, 1e-6, 1e-5, "Evictor cum vs acc_sum semantics");
    test::require_close(v.dec, 0.9 * dec0 + sum, 1e-6, 1e-5, "Evictor dec vs acc_dec semantics");
    if (ev == 1) REQUIRE(at::sum(dec0).item<double>() > 0);  // the decay was exercised on nonzero values
    // the policy kept the newest B: the compacted accumulators are the last B columns, then zeros
    cum_prev = at::zeros({Hkv, G, S}, at::kFloat);
    dec_prev = at::zeros({Hkv, G, S}, at::kFloat);
    cum_prev.narrow(2, 0, B).copy_(v.cum.narrow(2, n - B, B));
    dec_prev.narrow(2, 0, B).copy_(v.dec.narrow(2, n - B, B));
  }
}
