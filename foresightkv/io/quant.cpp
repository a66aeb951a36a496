// ggml block formats: type traits and the reference (scalar, readable) dequantizers.
// Block layouts follow ggml's ggml-common.h / ggml-quants.c (engineering.md §0 and §3.5). The float
// operations are written in the same order as gguf-py's numpy dequantizers (gguf.quants), so the
// results are bitwise equal to them: e.g. Q4_K computes (d*sc)*q - (dmin*m), never d*(sc*q).
//
// Fused multiply-add contraction is switched off in this file: GCC contracts `a*b + c` into one FMA
// by default in C++ (-ffp-contract=fast), which rounds once instead of twice and would break the
// bitwise match with numpy for Q4_1/Q5_1/Q2_K/Q4_K/Q5_K. ops/qmatmul.cpp is the fast path.
#pragma GCC optimize("fp-contract=off")

#include "foresightkv/io/quant.h"

#include <array>
#include <cstring>

#include "foresightkv/core/error.h"
#include "foresightkv/io/k_quants.h"

namespace fkv::io {
namespace {

constexpr int64_t kQK = 32;    // elements per Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q8_1 block
constexpr int64_t kQKK = 256;  // elements per K-quant super-block

// Indexed by ggml type id. name == nullptr: id unknown to ggml (as of gguf-py 0.19).
struct TraitsEntry {
  TypeTraits traits;
  bool fkv_known;  // member of io::GgmlType
};

constexpr TraitsEntry kUnknown{{nullptr, 0, 0, false}, false};

// ggml types fkv does not implement still get their names, so errors can say what the file holds.
constexpr std::array<TraitsEntry, 42> make_table() {
  std::array<TraitsEntry, 42> t{};
  for (auto& e : t) e = kUnknown;
  t[0] = {{"F32", 1, 4, true}, true};
  t[1] = {{"F16", 1, 2, true}, true};
  t[2] = {{"Q4_0", kQK, 18, true}, true};
  t[3] = {{"Q4_1", kQK, 20, true}, true};
  t[6] = {{"Q5_0", kQK, 22, true}, true};
  t[7] = {{"Q5_1", kQK, 24, true}, true};
  t[8] = {{"Q8_0", kQK, 34, true}, true};
  // Q8_1 is ggml's activation format (f16 d, f16 s = d*sum(q), i8 qs[32]; 36 bytes in ggml-common.h,
  // 40 in gguf-py's legacy table). It never appears in model files, so fkv does not dequantize it.
  t[9] = {{"Q8_1", kQK, 36, false}, true};
  t[10] = {{"Q2_K", kQKK, 84, true}, true};
  t[11] = {{"Q3_K", kQKK, 110, true}, true};
  t[12] = {{"Q4_K", kQKK, 144, true}, true};
  t[13] = {{"Q5_K", kQKK, 176, true}, true};
  t[14] = {{"Q6_K", kQKK, 210, true}, true};
  t[15] = {{"Q8_K", kQKK, 292, true}, true};
  t[16] = {{"IQ2_XXS", kQKK, 66, false}, false};
  t[17] = {{"IQ2_XS", kQKK, 74, false}, false};
  t[18] = {{"IQ3_XXS", kQKK, 98, false}, false};
  t[19] = {{"IQ1_S", kQKK, 50, false}, false};
  t[20] = {{"IQ4_NL", kQK, 18, true}, true};
  t[21] = {{"IQ3_S", kQKK, 110, false}, false};
  t[22] = {{"IQ2_S", kQKK, 82, false}, false};
  t[23] = {{"IQ4_XS", kQKK, 136, true}, true};
  t[24] = {{"I8", 1, 1, true}, true};
  t[25] = {{"I16", 1, 2, true}, true};
  t[26] = {{"I32", 1, 4, true}, true};
  t[27] = {{"I64", 1, 8, true}, true};
  t[28] = {{"F64", 1, 8, true}, true};
  t[29] = {{"IQ1_M", kQKK, 56, false}, false};
  t[30] = {{"BF16", 1, 2, true}, true};
  t[34] = {{"TQ1_0", kQKK, 54, false}, false};
  t[35] = {{"TQ2_0", kQKK, 66, false}, false};
  t[39] = {{"MXFP4", kQK, 17, false}, false};
  t[40] = {{"NVFP4", 64, 36, false}, false};
  t[41] = {{"Q1_0", 128, 18, false}, false};
  return t;
}

constexpr std::array<TraitsEntry, 42> kTable = make_table();

const TraitsEntry* entry(uint32_t id) { return id < kTable.size() && kTable[id].traits.name ? &kTable[id] : nullptr; }

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float load_f16(const uint8_t* p) { return fp16_to_fp32(load_u16(p)); }
inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- 32-element blocks --------------------------------------------------------------------------
// Q4_0 {f16 d; u8 qs[16]}: byte j holds element j (low nibble) and element j+16 (high nibble).
void deq_q4_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(int(qs[j] & 0xF) - 8);
    y[j + 16] = d * float(int(qs[j] >> 4) - 8);
  }
}

// Q4_1 {f16 d; f16 m; u8 qs[16]}: value = d*q + m.
void deq_q4_1(const uint8_t* b, float* y) {
  const float d = load_f16(b), m = load_f16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(qs[j] & 0xF) + m;
    y[j + 16] = d * float(qs[j] >> 4) + m;
  }
}

// Q5_0 {f16 d; u8 qh[4]; u8 qs[16]}: the 5th bit of element j is bit j of qh (little-endian u32).
void deq_q5_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint32_t qh = load_u32(b + 2);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0xF) | int((qh >> j) & 1) << 4;
    const int hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
    y[j] = d * float(lo - 16);
    y[j + 16] = d * float(hi - 16);
  }
}

// Q5_1 {f16 d; f16 m; u8 qh[4]; u8 qs[16]}: value = d*q + m.
void deq_q5_1(const uint8_t* b, float* y) {
  const float d = load_f16(b), m = load_f16(b + 2);
  const uint32_t qh = load_u32(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0xF) | int((qh >> j) & 1) << 4;
    const int hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
    y[j] = d * float(lo) + m;
    y[j + 16] = d * float(hi) + m;
  }
}

// Q8_0 {f16 d; i8 qs[32]}.
void deq_q8_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = float(qs[j]) * d;
}

// ---- 256-element K-quant super-blocks ------------------------------------------------------------
// Q2_K {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin}: 16 sub-blocks of 16; scales[s] low nibble is the
// scale, high nibble the min. Element e = 128*h + 32*k + l (h < 2, k < 4, l < 32) is
// (qs[32h + l] >> 2k) & 3, in sub-block e/16.
void deq_q2_k(const uint8_t* b, float* y) {
  const uint8_t* sc = b;
  const uint8_t* qs = b + 16;
  const float d = load_f16(b + 80), dmin = load_f16(b + 82);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, k = (e / 32) % 4, l = e % 32, s = e / 16;
    const float dl = d * float(sc[s] & 0xF);
    const float ml = dmin * float(sc[s] >> 4);
    const int q = (qs[32 * h + l] >> (2 * k)) & 3;
    y[e] = dl * float(q) - ml;
  }
}

// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}: 16 sub-blocks of 16 with 6-bit signed scales
// (low 4 bits from scales[0..7] nibbles, high 2 bits from scales[8..11]). Element e = 128h + 32k + l has
// low bits (qs[32h + l] >> 2k) & 3 and subtracts 4 unless bit (e/32) of hmask[l] is set.
void deq_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = load_f16(b + 108);
  float dl[16];
  for (int s = 0; s < 16; ++s) dl[s] = d * float(q3k_scale(sc, s));
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, k = (e / 32) % 4, l = e % 32;
    const int ql = (qs[32 * h + l] >> (2 * k)) & 3;
    const int hbit = (hmask[l] >> (e / 32)) & 1;
    y[e] = dl[e / 16] * float(ql - (hbit ? 0 : 4));
  }
}

// Q4_K {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}: sub-block i (32 elements) reads qs[32*(i/2) ..]
// low nibbles for even i, high nibbles for odd i; value = (d*sc)*q - (dmin*mn).
void deq_q4_k(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int i = 0; i < 8; ++i) {
    int sc, mn;
    k_scale_min(scales, i, sc, mn);
    const float dl = d * float(sc), ml = dmin * float(mn);
    const uint8_t* q = qs + 32 * (i / 2);
    const int shift = 4 * (i % 2);
    for (int l = 0; l < 32; ++l) y[32 * i + l] = dl * float((q[l] >> shift) & 0xF) - ml;
  }
}

// Q5_K {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: as Q4_K plus a 5th bit, bit i of qh[l].
void deq_q5_k(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int i = 0; i < 8; ++i) {
    int sc, mn;
    k_scale_min(scales, i, sc, mn);
    const float dl = d * float(sc), ml = dmin * float(mn);
    const uint8_t* q = qs + 32 * (i / 2);
    const int shift = 4 * (i % 2);
    for (int l = 0; l < 32; ++l) {
      const int v = ((q[l] >> shift) & 0xF) | ((qh[l] >> i) & 1) << 4;
      y[32 * i + l] = dl * float(v) - ml;
    }
  }
}

// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: two halves of 128 (ql += 64, qh += 32,
// scales += 8); within a half, l < 32 gives outputs l, l+32, l+64, l+96 (engineering.md §3.5).
void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_f16(b + 208);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* l6 = ql + 64 * h;
    const uint8_t* h6 = qh + 32 * h;
    const int8_t* s6 = sc + 8 * h;
    float* o = y + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = int((l6[l] & 0xF) | ((h6[l] >> 0) & 3) << 4) - 32;
      const int q2 = int((l6[l + 32] & 0xF) | ((h6[l] >> 2) & 3) << 4) - 32;
      const int q3 = int((l6[l] >> 4) | ((h6[l] >> 4) & 3) << 4) - 32;
      const int q4 = int((l6[l + 32] >> 4) | ((h6[l] >> 6) & 3) << 4) - 32;
      o[l] = (d * float(s6[is])) * float(q1);
      o[l + 32] = (d * float(s6[is + 2])) * float(q2);
      o[l + 64] = (d * float(s6[is + 4])) * float(q3);
      o[l + 96] = (d * float(s6[is + 6])) * float(q4);
    }
  }
}

// Q8_K {f32 d; i8 qs[256]; i16 bsums[16]} (bsums are sums of 16 qs, used only by ggml's dot kernels).
void deq_q8_k(const uint8_t* b, float* y) {
  const float d = load_f32(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 4);
  for (int j = 0; j < 256; ++j) y[j] = d * float(qs[j]);
}

// ---- non-linear 4-bit i-quants ---------------------------------------------------------------------
// IQ4_NL {f16 d; u8 qs[16]}: element j (j < 16) is d * kIq4nlValues[qs[j] & 15], element j + 16 uses qs[j] >> 4.
void deq_iq4_nl(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(kIq4nlValues[b[2 + j] & 0xF]);
    y[j + 16] = d * float(kIq4nlValues[b[2 + j] >> 4]);
  }
}

// IQ4_XS {f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]}: 8 sub-blocks of 32, each IQ4_NL-packed in 16 bytes
// of qs with the scale d * iq4xs_scale(b, i).
void deq_iq4_xs(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int i = 0; i < 8; ++i) {
    const float dl = d * float(iq4xs_scale(b, i));
    const uint8_t* q = b + 8 + 16 * i;
    for (int j = 0; j < 16; ++j) {
      y[32 * i + j] = dl * float(kIq4nlValues[q[j] & 0xF]);
      y[32 * i + j + 16] = dl * float(kIq4nlValues[q[j] >> 4]);
    }
  }
}

template <int64_t kBlock, int64_t kBytes>
void deq_blocks(void (*fn)(const uint8_t*, float*), const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kBlock; ++i) fn(src + i * kBytes, dst + i * kBlock);
}

}  // namespace

const TypeTraits& type_traits(GgmlType t) {
  const TraitsEntry* e = entry(uint32_t(t));
  FKV_CHECK_FORMAT(e != nullptr, "unknown ggml type id {} (not a type ggml/gguf-py 0.19 defines); the file is corrupt or "
                   "was written by a newer ggml", uint32_t(t));
  return e->traits;
}

std::string type_name(GgmlType t) {
  const TraitsEntry* e = entry(uint32_t(t));
  return e ? std::string(e->traits.name) : "type#" + std::to_string(uint32_t(t));
}

bool is_known_type(uint32_t id) {
  const TraitsEntry* e = entry(id);
  return e != nullptr && e->fkv_known;
}

size_t row_bytes(GgmlType t, int64_t n) {
  const TypeTraits& tt = type_traits(t);
  FKV_CHECK_FORMAT(n >= 0 && n % tt.block_size == 0,
                   "a row of {} elements is not a whole number of {} blocks ({} elements each)", n, tt.name,
                   tt.block_size);
  return size_t(n / tt.block_size) * size_t(tt.type_size);
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  const TypeTraits& tt = type_traits(t);
  FKV_CHECK_FORMAT(tt.dequantizable, "fkv cannot dequantize ggml type {} (supported: F32, F16, BF16, F64, I8-I64, "
                   "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL, IQ4_XS); convert the model to "
                   "one of these",
                   tt.name);
  (void)row_bytes(t, n);  // validates n
  const uint8_t* s = static_cast<const uint8_t*>(src);
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, s, size_t(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(s + 2 * i);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(s + 2 * i));
      return;
    case GgmlType::F64:
      for (int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, s + 8 * i, 8);
        dst[i] = float(v);
      }
      return;
    case GgmlType::I8:
      for (int64_t i = 0; i < n; ++i) dst[i] = float(int8_t(s[i]));
      return;
    case GgmlType::I16:
      for (int64_t i = 0; i < n; ++i) dst[i] = float(int16_t(load_u16(s + 2 * i)));
      return;
    case GgmlType::I32:
      for (int64_t i = 0; i < n; ++i) dst[i] = float(int32_t(load_u32(s + 4 * i)));
      return;
    case GgmlType::I64:
      for (int64_t i = 0; i < n; ++i) {
        int64_t v;
        std::memcpy(&v, s + 8 * i, 8);
        dst[i] = float(v);
      }
      return;
    case GgmlType::Q4_0: deq_blocks<kQK, 18>(deq_q4_0, s, dst, n); return;
    case GgmlType::Q4_1: deq_blocks<kQK, 20>(deq_q4_1, s, dst, n); return;
    case GgmlType::Q5_0: deq_blocks<kQK, 22>(deq_q5_0, s, dst, n); return;
    case GgmlType::Q5_1: deq_blocks<kQK, 24>(deq_q5_1, s, dst, n); return;
    case GgmlType::Q8_0: deq_blocks<kQK, 34>(deq_q8_0, s, dst, n); return;
    case GgmlType::Q2_K: deq_blocks<kQKK, 84>(deq_q2_k, s, dst, n); return;
    case GgmlType::Q3_K: deq_blocks<kQKK, 110>(deq_q3_k, s, dst, n); return;
    case GgmlType::Q4_K: deq_blocks<kQKK, 144>(deq_q4_k, s, dst, n); return;
    case GgmlType::Q5_K: deq_blocks<kQKK, 176>(deq_q5_k, s, dst, n); return;
    case GgmlType::Q6_K: deq_blocks<kQKK, 210>(deq_q6_k, s, dst, n); return;
    case GgmlType::Q8_K: deq_blocks<kQKK, 292>(deq_q8_k, s, dst, n); return;
    case GgmlType::IQ4_NL: deq_blocks<kQK, 18>(deq_iq4_nl, s, dst, n); return;
    case GgmlType::IQ4_XS: deq_blocks<kQKK, 136>(deq_iq4_xs, s, dst, n); return;
    case GgmlType::Q8_1: break;
  }
  FKV_THROW_KIND(2, "fkv cannot dequantize ggml type {}", tt.name);
}

// IEEE binary16 -> binary32, exact for every input (subnormals are normalised, NaN payloads kept).
float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // normal: rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {
    // subnormal: value = mant * 2^-24; shift mant up until its leading 1 reaches bit 10
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400) == 0);
    bits = sign | uint32_t(112 - e) << 23 | ((mant & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// IEEE binary32 -> binary16 with round-to-nearest-even, gradual underflow, overflow to inf, NaN kept
// quiet (same results as numpy's astype(float16) and F16C's vcvtps2ph with RNE).
uint16_t fp32_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) {  // inf or NaN
    if (ax == 0x7F800000u) return sign | 0x7C00;
    return uint16_t(sign | 0x7E00 | ((ax >> 13) & 0x3FF));
  }
  if (ax >= 0x477FF000u) return sign | 0x7C00;  // >= 65520 rounds to inf
  if (ax >= 0x38800000u) {                       // normal half (>= 2^-14)
    const uint32_t mant_odd = (ax >> 13) & 1;
    const uint32_t r = ax + 0xFFFu + mant_odd - (112u << 23);  // rebias and round to nearest even
    return uint16_t(sign | (r >> 13));
  }
  if (ax < 0x33000001u) return sign;  // < 2^-25 (or exactly 2^-25: ties to even 0) -> +-0
  // subnormal half: value = ax_value / 2^-24, rounded to nearest even integer
  const uint32_t e = ax >> 23;               // biased exponent, 102..112
  const uint32_t m = (ax & 0x7FFFFF) | 0x800000;
  const uint32_t shift = 126 - e;            // m * 2^(e-150) / 2^-24 = m >> (126 - e)
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1))) ++q;
  return uint16_t(sign | q);
}

// Same as ggml's ggml_compute_fp32_to_bf16 and gguf-py's BF16 quantizer: NaN -> quiet NaN, else RNE.
uint16_t fp32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 64);
  return uint16_t((uint64_t(u) + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

}  // namespace fkv::io
