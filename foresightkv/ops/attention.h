// CPU attention of a few new queries over an evictable KV cache (the decode hot path), fp32.
// Semantics (identical to the ATen path in model/transformer.cpp and the golden reference): query t
// of sequence s, head h attends to every live slot j < len[s, g] of KV head g = h / G whose
// position pos[s, g, j] <= qpos[s, t]; softmax in fp32 with scale `scale`.
#pragma once
#include <cstdint>

namespace fkv::ops {

struct AttentionArgs {
  int64_t n_seq = 0, n_tok = 0, n_head_q = 0, n_head_kv = 0, head_dim = 0;
  int64_t capacity = 0;       // S: slot stride of the cache
  float scale = 1.f;
  const float* q = nullptr;   // [n_seq, n_tok, Hq, D]  (token-major, as projected)
  const void* k = nullptr;    // [n_seq, Hkv, S, D], fp32, or IEEE fp16 when kv_f16
  const void* v = nullptr;    // [n_seq, Hkv, S, D], same type as k
  bool kv_f16 = false;        // K/V stored as fp16 (half the cache bytes; converted to fp32 on load)
  const int64_t* pos = nullptr;   // [n_seq, Hkv, S]
  const int64_t* len = nullptr;   // [n_seq, Hkv]
  const int64_t* qpos = nullptr;  // [n_seq, n_tok]
  float* out = nullptr;       // [n_seq, n_tok, Hq, D]
};

/// Threads over (sequence, query head) via ATen's pool.
void attention_decode_f32(const AttentionArgs& a);  // fp32 math; K/V fp32 or fp16

}  // namespace fkv::ops
