// fkv-bench-cuda: GPU benchmarks of the fused kernels (issue "The CUDA path"), one JSON object on stdout.
//   copy        device-to-device cudaMemcpy of 1 GiB: the device's measured copy bandwidth (bytes read + written)
//   attention   decode attention (T = 1) over bf16 caches of several lengths, batch 32, Qwen3-4B heads (32 q / 8 kv,
//               D = 128): K + V bytes read / time, as a fraction of the copy bandwidth; with and without the CUM
//               statistics pass
//   compact     order-preserving compaction of 128 random drops per (sequence, KV head) from B + 128 = 1152 slots
//               (bf16 K/V, positions, CUM + DEC accumulators): bytes the move reads + writes / time
//   eviction    one ForesightKV eviction event of a Qwen3-4B-shaped model (36 layers, 8 KV heads, G = 4, D = 128,
//               batch 32, B = 1024, L = 128): per layer the statistics pass over the event's 128 observed queries,
//               judge scoring, top-2D sampling (host Gumbel noise uploaded, as the CPU policy draws), compaction.
//   decode      one decode step of the same shape at batch 32 with a 1152-entry cache: the projections as cuBLAS bf16
//               GEMMs (fp32 accumulate) + this attention kernel per layer + the LM head (norms, RoPE and sampling,
//               a few percent of a step, are left out, so the step is a lower bound and the eviction share an upper
//               bound). eviction_share = event time / (L decode steps + event time).
// Random inputs (fixed seed); timings are CUDA-event means over repetitions after warm-up.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "fkv_cuda/attention.h"
#include "fkv_cuda/compact.h"
#include "fkv_cuda/judge_score.h"

namespace {

#define CK(x)                                                                                         \
  do {                                                                                                \
    cudaError_t e_ = (x);                                                                             \
    if (e_ != cudaSuccess) {                                                                          \
      std::fprintf(stderr, "fkv-bench-cuda: %s failed: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__); \
      std::exit(1);                                                                                   \
    }                                                                                                 \
  } while (0)
#define CB(x)                                                                              \
  do {                                                                                     \
    cublasStatus_t s_ = (x);                                                               \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                     \
      std::fprintf(stderr, "fkv-bench-cuda: %s failed: status %d\n", #x, static_cast<int>(s_)); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

template <class T>
T* dalloc(size_t n) {
  void* p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
  return static_cast<T*>(p);
}

// Fill device memory with uniform values in [lo, hi) (converted to T on the host, uploaded once).
template <class T>
void fill(T* d, size_t n, float lo, float hi, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<T> h(n);
  for (auto& x : h) x = static_cast<T>(u(rng));
  CK(cudaMemcpy(d, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
}
void fill_bf16(__nv_bfloat16* d, size_t n, float lo, float hi, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<__nv_bfloat16> h(n);
  for (auto& x : h) x = __float2bfloat16(u(rng));
  CK(cudaMemcpy(d, h.data(), n * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice));
}

// Mean milliseconds of fn() over reps after warm-up, timed with CUDA events on `st`.
template <class F>
double time_ms(cudaStream_t st, int warm, int reps, F fn) {
  for (int i = 0; i < warm; ++i) fn();
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaEventRecord(a, st));
  for (int i = 0; i < reps; ++i) fn();
  CK(cudaEventRecord(b, st));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return ms / reps;
}

struct Cache {  // one layer's cache of n_seq x Hkv rows, S slots, bf16 K/V
  int64_t n_seq, hkv, S, D, G;
  __nv_bfloat16 *k, *v;
  int64_t *pos, *len, *len0, *pos0;
  float *cum, *dec;
};

Cache make_cache(int64_t n_seq, int64_t hkv, int64_t S, int64_t D, int64_t G, int64_t live, std::mt19937_64& rng) {
  Cache c{n_seq, hkv, S, D, G};
  const size_t rows = static_cast<size_t>(n_seq * hkv);
  c.k = dalloc<__nv_bfloat16>(rows * S * D);
  c.v = dalloc<__nv_bfloat16>(rows * S * D);
  fill_bf16(c.k, rows * S * D, -1.f, 1.f, rng);
  fill_bf16(c.v, rows * S * D, -1.f, 1.f, rng);
  std::vector<int64_t> pos(rows * S), len(rows, live);
  for (size_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < S; ++j) pos[r * S + j] = j < live ? j : -1;
  c.pos = dalloc<int64_t>(rows * S);
  c.pos0 = dalloc<int64_t>(rows * S);
  c.len = dalloc<int64_t>(rows);
  c.len0 = dalloc<int64_t>(rows);
  CK(cudaMemcpy(c.pos, pos.data(), pos.size() * 8, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(c.pos0, pos.data(), pos.size() * 8, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(c.len, len.data(), len.size() * 8, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(c.len0, len.data(), len.size() * 8, cudaMemcpyHostToDevice));
  c.cum = dalloc<float>(rows * G * S);
  c.dec = dalloc<float>(rows * G * S);
  fill(c.cum, rows * G * S, 0.f, 1.f, rng);
  fill(c.dec, rows * G * S, 0.f, 1.f, rng);
  return c;
}
void free_cache(Cache& c) {
  for (void* p : {static_cast<void*>(c.k), static_cast<void*>(c.v), static_cast<void*>(c.pos),
                  static_cast<void*>(c.pos0), static_cast<void*>(c.len), static_cast<void*>(c.len0),
                  static_cast<void*>(c.cum), static_cast<void*>(c.dec)})
    cudaFree(p);
}

// Compaction of every row of `c` (K, V, positions, CUM + DEC) by the drop lists drop [rows, stride] / n_drop [rows].
fkv_cuda::CompactArgs compact_args(const Cache& c, const int64_t* drop, const int64_t* n_drop, int64_t stride) {
  fkv_cuda::CompactArgs ca;
  ca.n_seq = c.n_seq;
  ca.n_head_kv = c.hkv;
  ca.head_dim = c.D;
  ca.capacity = c.S;
  ca.kv_dtype = fkv_cuda::KvDtype::BF16;
  ca.k = c.k;
  ca.v = c.v;
  ca.pos = c.pos;
  ca.len = c.len;
  ca.n_acc = 2;
  ca.n_group = c.G;
  ca.acc[0] = c.cum;
  ca.acc[1] = c.dec;
  ca.drop = drop;
  ca.n_drop = n_drop;
  ca.drop_stride = stride;
  return ca;
}
// Undo a compaction's effect on lengths and positions (K/V content does not matter for timing).
void restore_rows(const Cache& c, cudaStream_t st) {
  const size_t rows = static_cast<size_t>(c.n_seq * c.hkv);
  CK(cudaMemcpyAsync(c.len, c.len0, rows * 8, cudaMemcpyDeviceToDevice, st));
  CK(cudaMemcpyAsync(c.pos, c.pos0, rows * c.S * 8, cudaMemcpyDeviceToDevice, st));
}

struct Attn {  // attention call state: queries, positions, output, workspace
  fkv_cuda::AttentionArgs a;
  float *q = nullptr, *out = nullptr;
  int64_t* qpos = nullptr;
  void* ws = nullptr;
};
Attn make_attention(const Cache& c, int64_t T, int64_t live, bool with_out, float* acc_sum, float* stat_sum,
                    float* stat_max, float* stat_min, std::mt19937_64& rng) {
  Attn r;
  const int64_t Hq = c.hkv * c.G;
  r.q = dalloc<float>(static_cast<size_t>(c.n_seq * T * Hq * c.D));
  fill(r.q, static_cast<size_t>(c.n_seq * T * Hq * c.D), -1.f, 1.f, rng);
  std::vector<int64_t> qp(static_cast<size_t>(c.n_seq * T));
  for (int64_t s = 0; s < c.n_seq; ++s)
    for (int64_t t = 0; t < T; ++t) qp[static_cast<size_t>(s * T + t)] = live - T + t;  // the newest T positions
  r.qpos = dalloc<int64_t>(qp.size());
  CK(cudaMemcpy(r.qpos, qp.data(), qp.size() * 8, cudaMemcpyHostToDevice));
  if (with_out) r.out = dalloc<float>(static_cast<size_t>(c.n_seq * T * Hq * c.D));
  auto& a = r.a;
  a.n_seq = c.n_seq;
  a.n_tok = T;
  a.n_head_q = Hq;
  a.n_head_kv = c.hkv;
  a.head_dim = c.D;
  a.capacity = c.S;
  a.len_bound = live;
  a.scale = 1.f / std::sqrt(static_cast<float>(c.D));
  a.layout = T == 1 ? fkv_cuda::QueryLayout::TokenMajor : fkv_cuda::QueryLayout::HeadMajor;
  a.q = r.q;
  a.k = c.k;
  a.v = c.v;
  a.kv_dtype = fkv_cuda::KvDtype::BF16;
  a.pos = c.pos;
  a.len = c.len;
  a.qpos = r.qpos;
  a.out = r.out;
  a.acc_sum = acc_sum;
  a.stat_sum = stat_sum;
  a.stat_max = stat_max;
  a.stat_min = stat_min;
  a.workspace_bytes = fkv_cuda::attention_workspace_bytes(a);
  CK(cudaMalloc(&r.ws, std::max<size_t>(a.workspace_bytes, 16)));
  a.workspace = r.ws;
  return r;
}
void free_attention(Attn& r) {
  cudaFree(r.q);
  cudaFree(r.out);
  cudaFree(r.qpos);
  cudaFree(r.ws);
}

std::string num(double x) {
  char b[64];
  std::snprintf(b, sizeof b, "%.6g", x);
  return b;
}

}  // namespace

int main() {
  int dev = 0;
  CK(cudaSetDevice(dev));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, dev));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  std::mt19937_64 rng(1234);
  std::string js = "{\"device\": \"" + std::string(prop.name) + "\", \"sms\": " + std::to_string(prop.multiProcessorCount);

  // ---- copy bandwidth
  const size_t copy_bytes = size_t{1} << 30;
  char* src = dalloc<char>(copy_bytes);
  char* dst = dalloc<char>(copy_bytes);
  CK(cudaMemset(src, 1, copy_bytes));
  const double copy_ms = time_ms(st, 3, 20, [&] { CK(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, st)); });
  const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
  cudaFree(src);
  cudaFree(dst);
  js += ", \"copy\": {\"bytes\": " + std::to_string(copy_bytes) + ", \"ms\": " + num(copy_ms) +
        ", \"gb_per_s_read_plus_write\": " + num(copy_gbs) + "}";

  // ---- decode attention over bf16 caches
  const int64_t n_seq = 32, hkv = 8, G = 4, D = 128;
  js += ", \"attention\": [";
  bool first = true;
  for (int64_t live : {1152, 4096, 16384, 32768}) {
    Cache c = make_cache(n_seq, hkv, live, D, G, live, rng);
    for (bool stats : {false, true}) {
      Attn at = make_attention(c, 1, live, true, stats ? c.cum : nullptr, nullptr, nullptr, nullptr, rng);
      const double ms = time_ms(st, 3, 20, [&] { CK(fkv_cuda::attention(at.a, st)); });
      const double bytes = 2.0 * n_seq * hkv * live * D * 2;  // K + V bf16 read once
      const double gbs = bytes / (ms * 1e-3) / 1e9;
      js += std::string(first ? "" : ", ") + "{\"keys\": " + std::to_string(live) + ", \"cum_stats\": " +
            (stats ? "true" : "false") + ", \"ms\": " + num(ms) + ", \"kv_gb_per_s\": " + num(gbs) +
            ", \"fraction_of_copy\": " + num(gbs / copy_gbs) + "}";
      first = false;
      free_attention(at);
    }
    free_cache(c);
  }
  js += "]";

  // ---- compaction: 128 random drops of 1152 per row
  const int64_t B = 1024, L = 128, S = B + L;
  {
    Cache c = make_cache(n_seq, hkv, S, D, G, S, rng);
    const int64_t rows = n_seq * hkv;
    std::vector<int64_t> drops(static_cast<size_t>(rows * L)), nd(static_cast<size_t>(rows), L);
    int64_t moved_slots = 0;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int64_t> all(static_cast<size_t>(B));
      for (int64_t j = 0; j < B; ++j) all[static_cast<size_t>(j)] = j;
      std::shuffle(all.begin(), all.end(), rng);
      std::sort(all.begin(), all.begin() + L);
      std::copy(all.begin(), all.begin() + L, drops.begin() + r * L);
      moved_slots += S - all[0] - L;  // survivors after the first dropped slot move
    }
    int64_t* d_drop = dalloc<int64_t>(drops.size());
    int64_t* d_nd = dalloc<int64_t>(nd.size());
    CK(cudaMemcpy(d_drop, drops.data(), drops.size() * 8, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_nd, nd.data(), nd.size() * 8, cudaMemcpyHostToDevice));
    const fkv_cuda::CompactArgs ca = compact_args(c, d_drop, d_nd, L);
    // every repetition restores the lengths and positions first (two small copies, timed separately and subtracted)
    auto restore = [&] { restore_rows(c, st); };
    const double ms_restore = time_ms(st, 3, 50, restore);
    const double ms_all = time_ms(st, 3, 50, [&] { restore(); CK(fkv_cuda::compact(ca, st)); });
    const double ms = std::max(ms_all - ms_restore, 1e-6);
    // bytes the move must read + write: K, V (bf16 D each), position (8) and 2 x G accumulators (4) per moved slot
    const double bytes = 2.0 * moved_slots * (2.0 * D * 2 + 8 + 2.0 * G * 4);
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    js += ", \"compact\": {\"rows\": " + std::to_string(rows) + ", \"slots\": " + std::to_string(S) +
          ", \"drops_per_row\": " + std::to_string(L) + ", \"ms\": " + num(ms) + ", \"moved_gb_per_s\": " + num(gbs) +
          ", \"fraction_of_copy\": " + num(gbs / copy_gbs) + "}";
    cudaFree(d_drop);
    cudaFree(d_nd);
    free_cache(c);
  }

  // ---- one eviction event and one decode step of a Qwen3-4B-shaped model
  {
    const int64_t n_layer = 36, hidden = 2560, ffn = 9728, vocab = 151936, Hq = hkv * G;
    const int64_t F = 2 * D + 8 * G, rows = n_seq * hkv;
    Cache c = make_cache(n_seq, hkv, S, D, G, S, rng);
    float *smax = dalloc<float>(rows * G * S), *smin = dalloc<float>(rows * G * S), *ssum = dalloc<float>(rows * G * S);
    Attn ev = make_attention(c, L, S, false, c.cum, ssum, smax, smin, rng);  // the event's 128 observed queries
    float *w1 = dalloc<float>(hkv * F * 16), *b1 = dalloc<float>(hkv * 16), *w2 = dalloc<float>(hkv * 16),
          *b2 = dalloc<float>(hkv);
    fill(w1, hkv * F * 16, -0.1f, 0.1f, rng);
    fill(b1, hkv * 16, -0.1f, 0.1f, rng);
    fill(w2, hkv * 16, -0.1f, 0.1f, rng);
    fill(b2, hkv, -0.1f, 0.1f, rng);
    std::vector<int64_t> ncand(static_cast<size_t>(rows), B);
    int64_t* d_ncand = dalloc<int64_t>(rows);
    CK(cudaMemcpy(d_ncand, ncand.data(), rows * 8, cudaMemcpyHostToDevice));
    float* phi = dalloc<float>(rows * B);
    int64_t* drops = dalloc<int64_t>(rows * L);
    std::vector<int64_t> nd(static_cast<size_t>(rows), L);
    int64_t* d_nd = dalloc<int64_t>(rows);
    CK(cudaMemcpy(d_nd, nd.data(), rows * 8, cudaMemcpyHostToDevice));
    std::vector<uint64_t> keys(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) keys[static_cast<size_t>(r)] = 0x9E3779B97F4A7C15ull * (r + 1);
    std::vector<double> noise(static_cast<size_t>(rows * 2 * L));
    double* d_noise = dalloc<double>(noise.size());
    fkv_cuda::JudgeScoreArgs ja;
    ja.n_seq = n_seq;
    ja.n_head_kv = hkv;
    ja.head_dim = D;
    ja.group = G;
    ja.k = c.k;
    ja.v = c.v;
    ja.kv_type = fkv_cuda::KvDtype::BF16;
    ja.kv_capacity = S;
    ja.cum = c.cum;
    ja.dec = c.dec;
    ja.stat_capacity = S;
    ja.stat_max = smax;
    ja.stat_min = smin;
    ja.stat_sum = ssum;
    ja.n_cand = d_ncand;
    ja.w1 = w1;
    ja.b1 = b1;
    ja.w2 = w2;
    ja.b2 = b2;
    ja.phi = phi;
    ja.phi_stride = B;
    const fkv_cuda::CompactArgs ca = compact_args(c, drops, d_nd, L);
    auto restore = [&] { restore_rows(c, st); };
    // per layer: statistics pass, judge, host noise (as the CPU policy draws it) uploaded, selection, compaction
    auto one_layer = [&](bool with_noise_host) {
      CK(fkv_cuda::attention(ev.a, st));
      CK(fkv_cuda::judge_score(ja, st));
      if (with_noise_host) fkv_cuda::judge_gumbel_noise(keys.data(), rows, L, noise.data());
      CK(cudaMemcpyAsync(d_noise, noise.data(), noise.size() * 8, cudaMemcpyHostToDevice, st));
      CK(fkv_cuda::judge_select_drops(phi, rows, B, d_ncand, L, /*sampled=*/true, /*parity=*/false, d_noise, drops, st));
      CK(fkv_cuda::compact(ca, st));
    };
    const double ms_restore = time_ms(st, 2, 20, restore);
    const double ms_layer = time_ms(st, 2, 20, [&] { restore(); one_layer(true); }) - ms_restore;
    const double ms_stats = time_ms(st, 2, 20, [&] { CK(fkv_cuda::attention(ev.a, st)); });
    const double ms_judge = time_ms(st, 2, 20, [&] { CK(fkv_cuda::judge_score(ja, st)); });
    const double event_ms = n_layer * ms_layer;

    // decode step: cuBLAS bf16 GEMMs (fp32 accumulate) of the projections + this attention kernel per layer + LM head
    cublasHandle_t h;
    CB(cublasCreate(&h));
    CB(cublasSetStream(h, st));
    const int64_t qkv = (Hq + 2 * hkv) * D;
    __nv_bfloat16 *x = dalloc<__nv_bfloat16>(n_seq * std::max(ffn, vocab)), *y = dalloc<__nv_bfloat16>(n_seq * std::max({ffn, vocab, qkv}));
    __nv_bfloat16 *wqkv = dalloc<__nv_bfloat16>(hidden * qkv), *wo = dalloc<__nv_bfloat16>(Hq * D * hidden),
                  *wg = dalloc<__nv_bfloat16>(hidden * ffn), *wu = dalloc<__nv_bfloat16>(hidden * ffn),
                  *wd = dalloc<__nv_bfloat16>(ffn * hidden), *wl = dalloc<__nv_bfloat16>(hidden * vocab);
    for (auto [p, n] : std::vector<std::pair<__nv_bfloat16*, int64_t>>{
             {wqkv, hidden * qkv}, {wo, Hq * D * hidden}, {wg, hidden * ffn}, {wu, hidden * ffn}, {wd, ffn * hidden},
             {wl, hidden * vocab}, {x, n_seq * std::max(ffn, vocab)}})
      CK(cudaMemset(p, 0x3c, static_cast<size_t>(n) * 2));  // ~1.1e-2 in bf16: finite values, timing only
    const float one = 1.f, zero = 0.f;
    auto gemm = [&](const __nv_bfloat16* w, int64_t in, int64_t out) {  // y[n_seq, out] = x[n_seq, in] w[in, out]
      CB(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(n_seq), static_cast<int>(in),
                      &one, w, CUDA_R_16BF, static_cast<int>(out), x, CUDA_R_16BF, static_cast<int>(in), &zero, y,
                      CUDA_R_16BF, static_cast<int>(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    };
    Attn dec = make_attention(c, 1, S, true, nullptr, nullptr, nullptr, nullptr, rng);
    auto step = [&] {
      for (int64_t l = 0; l < n_layer; ++l) {
        gemm(wqkv, hidden, qkv);
        CK(fkv_cuda::attention(dec.a, st));
        gemm(wo, Hq * D, hidden);
        gemm(wg, hidden, ffn);
        gemm(wu, hidden, ffn);
        gemm(wd, ffn, hidden);
      }
      gemm(wl, hidden, vocab);
    };
    const double step_ms = time_ms(st, 3, 20, step);
    const double share = event_ms / (L * step_ms + event_ms);
    js += ", \"eviction\": {\"layers\": " + std::to_string(n_layer) + ", \"batch\": " + std::to_string(n_seq) +
          ", \"budget\": " + std::to_string(B) + ", \"window\": " + std::to_string(L) + ", \"layer_ms\": " +
          num(ms_layer) + ", \"stats_ms\": " + num(ms_stats) + ", \"judge_ms\": " + num(ms_judge) +
          ", \"event_ms\": " + num(event_ms) + ", \"decode_step_ms\": " + num(step_ms) +
          ", \"decode_tokens_per_s\": " + num(n_seq / (step_ms * 1e-3)) + ", \"eviction_share\": " + num(share) + "}";
    free_attention(dec);
    free_attention(ev);
    CB(cublasDestroy(h));
    for (void* p : {static_cast<void*>(x), static_cast<void*>(y), static_cast<void*>(wqkv), static_cast<void*>(wo),
                    static_cast<void*>(wg), static_cast<void*>(wu), static_cast<void*>(wd), static_cast<void*>(wl),
                    static_cast<void*>(smax), static_cast<void*>(smin), static_cast<void*>(ssum),
                    static_cast<void*>(w1), static_cast<void*>(b1), static_cast<void*>(w2), static_cast<void*>(b2),
                    static_cast<void*>(d_ncand), static_cast<void*>(phi), static_cast<void*>(drops),
                    static_cast<void*>(d_nd), static_cast<void*>(d_noise)})
      cudaFree(p);
    free_cache(c);
  }
  js += "}";
  std::printf("%s\n", js.c_str());
  CK(cudaStreamDestroy(st));
  return 0;
}
