// ops::attention_decode_f32 against a naive double-precision reference on random caches: GQA groups
// 1..8, head dims on and off the SIMD paths (16, 24, 40, 64, 14), per-head lengths and positions (holes
// from eviction), queries that see only part of the cache, several tokens and sequences.
// Tolerance 2e-5 absolute on outputs of magnitude ~1: fp32 accumulation plus the polynomial exp
// (relative error < 2e-7).
#include "support/catch.h"

#include <random>

#include "foresightkv/io/quant.h"
#include "foresightkv/ops/attention.h"

namespace {

void run_case(int64_t n_seq, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t S, uint64_t seed,
              bool f16 = false) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> q(n_seq * T * Hq * D), k(n_seq * Hkv * S * D), v(n_seq * Hkv * S * D);
  for (auto& x : q) x = 2.f * nd(rng);
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  // fp16 storage: the reference uses the fp16-rounded values, the kernel reads the fp16 bits.
  std::vector<uint16_t> k16(k.size()), v16(v.size());
  if (f16) {
    for (size_t i = 0; i < k.size(); ++i) {
      k16[i] = fkv::io::fp32_to_fp16(k[i]);
      k[i] = fkv::io::fp16_to_fp32(k16[i]);
      v16[i] = fkv::io::fp32_to_fp16(v[i]);
      v[i] = fkv::io::fp16_to_fp32(v16[i]);
    }
  }
  std::vector<int64_t> len(n_seq * Hkv), pos(n_seq * Hkv * S, -1), qpos(n_seq * T);
  for (int64_t s = 0; s < n_seq; ++s) {
    for (int64_t t = 0; t < T; ++t) qpos[s * T + t] = 3 * S + t - static_cast<int64_t>(rng() % 2) * S;
    for (int64_t g = 0; g < Hkv; ++g) {
      const int64_t L = 1 + static_cast<int64_t>(rng() % S);
      len[s * Hkv + g] = L;
      int64_t p = static_cast<int64_t>(rng() % 3);
      for (int64_t j = 0; j < L; ++j) {
        pos[(s * Hkv + g) * S + j] = p;
        p += 1 + static_cast<int64_t>(rng() % 7);  // holes: evicted positions
      }
    }
  }
  std::vector<float> out(q.size(), 123.f);
  fkv::ops::AttentionArgs a;
  a.n_seq = n_seq; a.n_tok = T; a.n_head_q = Hq; a.n_head_kv = Hkv; a.head_dim = D; a.capacity = S;
  a.scale = 1.f / std::sqrt(static_cast<float>(D));
  a.q = q.data(); a.k = f16 ? static_cast<const void*>(k16.data()) : k.data();
  a.v = f16 ? static_cast<const void*>(v16.data()) : v.data(); a.kv_f16 = f16; a.pos = pos.data(); a.len = len.data(); a.qpos = qpos.data();
  a.out = out.data();
  fkv::ops::attention_decode_f32(a);
  const int64_t G = Hq / Hkv;
  double worst = 0;
  for (int64_t s = 0; s < n_seq; ++s)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t g = h / G, L = len[s * Hkv + g];
        const float* qh = &q[((s * T + t) * Hq + h) * D];
        std::vector<double> sc(L);
        double mx = -1e300;
        bool any = false;
        for (int64_t j = 0; j < L; ++j) {
          if (pos[(s * Hkv + g) * S + j] > qpos[s * T + t]) { sc[j] = -1e300; continue; }
          double d = 0;
          for (int64_t i = 0; i < D; ++i) d += double(qh[i]) * k[((s * Hkv + g) * S + j) * D + i];
          sc[j] = d * a.scale;
          mx = std::max(mx, sc[j]);
          any = true;
        }
        std::vector<double> o(D, 0.0);
        if (any) {
          double sum = 0;
          for (int64_t j = 0; j < L; ++j) sum += sc[j] > -1e299 ? std::exp(sc[j] - mx) : 0.0;
          for (int64_t j = 0; j < L; ++j) {
            if (sc[j] < -1e299) continue;
            const double p = std::exp(sc[j] - mx) / sum;
            for (int64_t i = 0; i < D; ++i) o[i] += p * v[((s * Hkv + g) * S + j) * D + i];
          }
        }
        for (int64_t i = 0; i < D; ++i)
          worst = std::max(worst, std::abs(o[i] - out[((s * T + t) * Hq + h) * D + i]));
      }
  INFO("n_seq " << n_seq << " T " << T << " Hq " << Hq << " Hkv " << Hkv << " D " << D << " S " << S
                << ": max |dout| " << worst);
  CHECK(worst <= 2e-5);
}

}  // namespace

TEST_CASE("decode attention kernel equals a naive reference", "[unit][model][ops]") {
  uint64_t seed = 1;
  for (int64_t D : {16, 64, 14})
    for (auto [Hq, Hkv] : std::vector<std::pair<int64_t, int64_t>>{{4, 4}, {6, 3}, {6, 2}, {8, 2}})
      run_case(2, 3, Hq, Hkv, D, 37, seed++);
  run_case(1, 1, 9, 3, 64, 1500, 99);  // SmolLM2 shape, long cache (split over key ranges)
  run_case(2, 2, 14, 2, 64, 700, 5);   // Qwen2.5-0.5B shape
  // AVX2 head blocking: G = 5 and 8 (4 + 1 / 4 + 4 heads per key load, 5 / 6 + 2 per value pass),
  // D = 40 and 24 (a 16-column value block plus an 8-column tail; a key tail after 16 columns)
  run_case(1, 2, 10, 2, 40, 90, 21);
  run_case(2, 1, 16, 2, 24, 60, 22);
}

TEST_CASE("decode attention kernel with an fp16 KV cache", "[unit][model][ops]") {
  run_case(2, 3, 6, 2, 64, 37, 11, true);
  run_case(1, 1, 9, 3, 64, 1500, 12, true);
  run_case(1, 2, 4, 4, 14, 50, 13, true);  // scalar fallback (D not a multiple of 8)
  run_case(1, 2, 10, 2, 40, 90, 23, true);
}
