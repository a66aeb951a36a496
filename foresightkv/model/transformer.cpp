// Transformer forward on CPU in fp32 activations: embeddings -> [RMSNorm -> Q/K/V (+bias) -> q/k
// norm (qwen3) -> RoPE (HF half-split) -> append to cache -> attention over live entries -> O]
// -> [RMSNorm -> SwiGLU MLP] x n_layer -> final norm -> LM head. Matrices go through ops::matmul
// (file-format weights, on-the-fly dequantization). Attention: the decode kernel for short chunks,
// an ATen (GEMM + masked softmax) path for long chunks and whenever a tap asks for probabilities.
// Oracle: HF transformers bundles (tests/golden) and golden::ReferenceModel (masked keys).
#include "foresightkv/model/transformer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>

#include <fmt/ostream.h>

#include "foresightkv/core/error.h"
#include "foresightkv/ops/attention.h"

namespace fkv::model {
namespace {

// Chunks of at most this many tokens use the decode kernel; longer ones the GEMM path.
constexpr int64_t kDecodeKernelMaxTokens = 4;

/// y[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * w, rows of n (fp32; the sum in double).
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float scale = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
    for (int64_t i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * scale);
  }
}

void add_bias(float* y, const at::Tensor& b, int64_t rows, int64_t n) {
  if (!b.defined()) return;
  const float* bp = b.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) y[r * n + i] += bp[i];
}

/// HF rotate_half RoPE in place on x [N, H, D] with per-token cos/sin [N, D/2].
void apply_rope(float* x, const float* cs, const float* sn, int64_t N, int64_t H, int64_t D) {
  const int64_t half = D / 2;
  for (int64_t t = 0; t < N; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float* v = x + (t * H + h) * D;
      const float* c = cs + t * half;
      const float* s = sn + t * half;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c[i] - x2 * s[i];
        v[i + half] = x2 * c[i] + x1 * s[i];
      }
    }
}

// The hidden rows whose logits are asked for: every row (All), each sequence's last chunk row, or row last_index[s]
// of sequence s (prompts of a padded chunk ending at different rows); x [n_seq * T, hidden], contiguous result.
at::Tensor logit_rows(const at::Tensor& x, Logits mode, int64_t n_seq, int64_t T,
                      const std::vector<int64_t>& last_index) {
  if (mode == Logits::All) return x;
  if (last_index.empty()) return x.view({n_seq, T, x.size(1)}).select(1, T - 1).contiguous();
  std::vector<int64_t> flat(static_cast<size_t>(n_seq));
  for (int64_t s = 0; s < n_seq; ++s) flat[static_cast<size_t>(s)] = s * T + last_index[static_cast<size_t>(s)];
  return x.index_select(0, at::tensor(flat, at::kLong).to(x.device()));
}

/// Attention of a chunk's queries q [N = n_seq*T, Hq*D] over the live cache entries of layer l (after the chunk's
/// append) whose position is <= the query's: masked softmax over max_length slots in ATen, the probabilities
/// handed to taps when asked; writes att [N, Hq*D]. The general path of both backends.
void attention_general(const at::Tensor& q, const cache::KvCache& cache, int64_t l, const at::Tensor& pos,
                       int64_t n_seq, int64_t T, int64_t Hkv, int64_t G, int64_t D, float scale, ForwardTaps* taps,
                       bool want_probs, at::Tensor& att) {
  const int64_t S = cache.max_length(l), Hq = Hkv * G;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(q.device());
  at::Tensor Q = q.view({n_seq, T, Hkv, G, D}).permute({0, 2, 3, 1, 4}).reshape({n_seq, Hkv, G * T, D});
  at::Tensor K = cache.k(l).narrow(2, 0, S), V = cache.v(l).narrow(2, 0, S);
  if (K.scalar_type() != at::kFloat) {
    K = K.to(at::kFloat);
    V = V.to(at::kFloat);
  }
  at::Tensor scores = at::matmul(Q, K.transpose(-1, -2)).mul_(scale);  // [n_seq, Hkv, G*T, S]
  at::Tensor slot = at::arange(S, f32.dtype(at::kLong));
  // lengths and positions live on the CPU (KvCache); the masks are built where q is
  at::Tensor valid = slot.view({1, 1, S}) < cache.lengths(l).to(q.device()).unsqueeze(-1);           // [n, Hkv, S]
  at::Tensor causal = cache.pos(l).narrow(2, 0, S).to(q.device()).unsqueeze(2) <=
                      pos.to(q.device()).view({n_seq, 1, T, 1});                                      // [n, Hkv, T, S]
  at::Tensor vis = (causal & valid.unsqueeze(2)).unsqueeze(2).expand({n_seq, Hkv, G, T, S}).reshape({n_seq, Hkv, G * T, S});
  scores.masked_fill_(vis.logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1);
  probs = at::where(vis.any(-1, true), probs, at::zeros({}, f32));
  at::Tensor o = at::matmul(probs, V);  // [n_seq, Hkv, G*T, D]
  att.view({n_seq, T, Hkv, G, D}).copy_(o.view({n_seq, Hkv, G, T, D}).permute({0, 3, 1, 2, 4}));
  if (want_probs) taps->on_attention(l, probs.view({n_seq, Hkv, G, T, S}).reshape({n_seq, Hq, T, S}));
}

}  // namespace

struct Transformer::Dense {
  struct Layer {
    at::Tensor wq, wk, wv, wo, w_gate, w_up, w_down;  // [out, in], compute dtype, on the device
    at::Tensor attn_norm, ffn_norm, q_norm, k_norm;   // compute dtype (undefined where the model has none)
    at::Tensor bq, bk, bv, bo;
  };
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;  // compute dtype (Weights::dtype)
  at::Tensor embd, output;            // [V, hidden] (the same tensor when tied)
  at::Tensor out_norm;
  at::Tensor inv_freq;                // [D/2] fp32 on the device
  std::vector<Layer> layers;
};

namespace {
// A matrix dequantized row by row (ops::dequantize_row: every format the native kernels read) to dense fp32 on the
// CPU, then moved to the device in the compute dtype (one matrix at a time, so the host holds one fp32 copy at most);
// fp32 rows that stay fp32 on the CPU are viewed in place instead.
at::Tensor dense_matrix(const Matrix& m, at::Device dev, at::ScalarType dt) {
  const ops::WeightView& v = m.view;
  if (v.type == io::GgmlType::F32 && dev.is_cpu() && dt == at::kFloat &&
      v.row_stride == static_cast<size_t>(v.cols) * sizeof(float) &&
      reinterpret_cast<uintptr_t>(v.data) % alignof(float) == 0)
    // fp32 rows used as they are: a view of the mapped (or converted) data, which lives as long as weights_; the
    // forward only reads it (no second copy of an fp32 model in memory)
    return at::from_blob(const_cast<uint8_t*>(v.data), {v.rows, v.cols}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor t = at::empty({m.view.rows, m.view.cols}, at::kFloat);
  float* p = t.data_ptr<float>();
  const int64_t cols = m.view.cols;
  at::parallel_for(0, m.view.rows, 64, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) ops::dequantize_row(m.view, r, p + r * cols);
  });
  return t.to(dev, dt);
}
at::Tensor on(const at::Tensor& t, at::Device dev, at::ScalarType dt) { return t.defined() ? t.to(dev, dt) : t; }
}  // namespace

Transformer::Transformer(std::shared_ptr<const Weights> w) : weights_(std::move(w)) {
  std::vector<float> f = io::rope_inv_freq(weights_->config);
  inv_freq_ = at::from_blob(f.data(), {static_cast<int64_t>(f.size())}, at::kFloat).clone();
  if (weights_->backend == "aten") {
    auto d = std::make_unique<Dense>();
    d->device = at::Device(weights_->device);
    d->dtype = weights_->dtype == "bf16" ? at::kBFloat16 : at::kFloat;
    const at::Device dev = d->device;
    const at::ScalarType dt = d->dtype;
    d->embd = dense_matrix(weights_->tok_embd, dev, dt);
    d->output = weights_->output.view.data == weights_->tok_embd.view.data ? d->embd
                                                                            : dense_matrix(weights_->output, dev, dt);
    d->out_norm = on(weights_->out_norm, dev, dt);
    d->inv_freq = inv_freq_.to(dev);
    for (const auto& L : weights_->layers)
      d->layers.push_back({dense_matrix(L.wq, dev, dt), dense_matrix(L.wk, dev, dt), dense_matrix(L.wv, dev, dt),
                           dense_matrix(L.wo, dev, dt), dense_matrix(L.w_gate, dev, dt), dense_matrix(L.w_up, dev, dt),
                           dense_matrix(L.w_down, dev, dt), on(L.attn_norm, dev, dt), on(L.ffn_norm, dev, dt),
                           on(L.q_norm, dev, dt), on(L.k_norm, dev, dt), on(L.bq, dev, dt), on(L.bk, dev, dt),
                           on(L.bv, dev, dt), on(L.bo, dev, dt)});
    dense_ = std::move(d);
  }
}

Transformer::~Transformer() = default;

std::unique_ptr<Transformer> Transformer::load(const std::string& path, const LoadOptions& opt) {
  return std::make_unique<Transformer>(load_weights(path, opt));
}

cache::KvCache Transformer::make_cache(int64_t n_seq, int64_t capacity, at::ScalarType kv_dtype) const {
  FKV_CHECK_ARG(kv_dtype == at::kFloat || kv_dtype == at::kHalf || (dense_ && kv_dtype == at::kBFloat16),
                "make_cache: KV dtype must be fp32 or fp16 (or bf16 with the aten backend)");
  const auto& c = config();
  cache::KvCacheOptions o;
  o.n_seq = n_seq;
  o.n_layer = c.n_layer;
  o.n_head_kv = c.n_head_kv;
  o.head_dim = c.head_dim;
  o.capacity = capacity;
  o.dtype = kv_dtype;
  if (dense_) o.device = dense_->device;  // the aten backend keeps the cache where its weights are
  return cache::KvCache(o);
}

at::Tensor Transformer::forward(const at::Tensor& ids_in, const at::Tensor& pos_in, cache::KvCache& cache,
                                Logits logits_mode, ForwardTaps* taps, const std::vector<int64_t>& last_index) const {
  const auto& c = config();
  const auto& W = *weights_;
  // every matrix product: fp32 activations, or int8 ones for decode-size chunks when loaded with "q8"
  auto mm = [&W](const ops::WeightView& w, const float* x, int64_t n, float* y) {
    if (W.act_q8) ops::matmul_q8(w, x, n, y);
    else ops::matmul(w, x, n, y);
  };
  FKV_CHECK_ARG(ids_in.dim() == 2 && pos_in.sizes() == ids_in.sizes(),
                "forward: expected ids and pos of shape [n_seq, T], got ids {} pos {}", fmt::streamed(ids_in.sizes()),
                fmt::streamed(pos_in.sizes()));
  const at::Tensor ids = ids_in.to(at::kCPU, at::kLong).contiguous();
  const at::Tensor pos = pos_in.to(at::kCPU, at::kLong).contiguous();
  const int64_t n_seq = ids.size(0), T = ids.size(1), N = n_seq * T;
  FKV_CHECK_ARG(T > 0, "forward: empty chunk");
  FKV_CHECK_ARG(cache.n_seq() == n_seq && cache.n_layer() == c.n_layer && cache.n_head_kv() == c.n_head_kv &&
                    cache.head_dim() == c.head_dim,
                "forward: cache shaped (n_seq {}, layers {}, kv heads {}, head_dim {}) does not fit this model/batch "
                "(n_seq {}, layers {}, kv heads {}, head_dim {}); create it with Transformer::make_cache",
                cache.n_seq(), cache.n_layer(), cache.n_head_kv(), cache.head_dim(), n_seq, c.n_layer, c.n_head_kv,
                c.head_dim);
  const at::ScalarType kv_dtype = cache.options().dtype;
  if (dense_)
    FKV_CHECK_ARG(cache.options().device == dense_->device, "forward: the cache is on {} but the model on {}; create it "
                  "with Transformer::make_cache", cache.options().device.str(), dense_->device.str());
  else
    FKV_CHECK_ARG(cache.options().device.is_cpu() && (kv_dtype == at::kFloat || kv_dtype == at::kHalf),
                  "forward: the CPU runtime needs a CPU cache in fp32 or fp16");
  const int64_t* idp = ids.data_ptr<int64_t>();
  const int64_t* posp = pos.data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) {
    FKV_CHECK_ARG(idp[i] >= 0 && idp[i] < c.n_vocab, "forward: token id {} at index {} is outside the vocabulary [0, {})",
                  idp[i], i, c.n_vocab);
    FKV_CHECK_ARG(posp[i] >= 0, "forward: negative position {} at index {}", posp[i], i);
  }
  FKV_CHECK_ARG(last_index.empty() || (logits_mode == Logits::Last && static_cast<int64_t>(last_index.size()) == n_seq),
                "forward: last_index needs Logits::Last and one row per sequence (got {} for {} sequences)",
                last_index.size(), n_seq);
  for (int64_t li : last_index)
    FKV_CHECK_ARG(0 <= li && li < T, "forward: last_index {} outside the chunk [0, {})", li, T);

  if (dense_) return forward_aten(ids, pos, cache, logits_mode, taps, last_index);

  const int64_t H = c.hidden, Hq = c.n_head_q, Hkv = c.n_head_kv, D = c.head_dim, F = c.ffn_hidden;
  const int64_t G = Hq / Hkv, half = D / 2;
  const float eps = static_cast<float>(c.rms_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  auto f32 = at::TensorOptions().dtype(at::kFloat);

  at::Tensor x = at::empty({N, H}, f32);
  float* xp = x.data_ptr<float>();
  for (int64_t i = 0; i < N; ++i) ops::dequantize_row(W.tok_embd.view, idp[i], xp + i * H);

  // cos/sin per token, fp32 as HF: freqs = pos * inv_freq, cos/sin of the fp32 angle.
  at::Tensor cos_t = at::empty({N, half}, f32), sin_t = at::empty({N, half}, f32);
  {
    const float* inv = inv_freq_.data_ptr<float>();
    float* cp = cos_t.data_ptr<float>();
    float* sp = sin_t.data_ptr<float>();
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < half; ++j) {
        const float a = static_cast<float>(posp[i]) * inv[j];
        cp[i * half + j] = std::cos(a);
        sp[i * half + j] = std::sin(a);
      }
  }

  at::Tensor xn = at::empty({N, H}, f32), tmp = at::empty({N, H}, f32);
  at::Tensor q = at::empty({N, Hq * D}, f32), k = at::empty({N, Hkv * D}, f32), v = at::empty({N, Hkv * D}, f32);
  at::Tensor att = at::empty({N, Hq * D}, f32);
  at::Tensor gate = at::empty({N, F}, f32), up = at::empty({N, F}, f32);
  float *xnp = xn.data_ptr<float>(), *tp = tmp.data_ptr<float>(), *qp = q.data_ptr<float>(),
        *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>(), *ap = att.data_ptr<float>(),
        *gp = gate.data_ptr<float>(), *upp = up.data_ptr<float>();

  for (int64_t l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = W.layers[l];
    rms_norm(xp, L.attn_norm.data_ptr<float>(), xnp, N, H, eps);
    mm(L.wq.view, xnp, N, qp);
    mm(L.wk.view, xnp, N, kp);
    mm(L.wv.view, xnp, N, vp);
    add_bias(qp, L.bq, N, Hq * D);
    add_bias(kp, L.bk, N, Hkv * D);
    add_bias(vp, L.bv, N, Hkv * D);
    if (c.qk_norm) {
      rms_norm(qp, L.q_norm.data_ptr<float>(), qp, N * Hq, D, eps);
      rms_norm(kp, L.k_norm.data_ptr<float>(), kp, N * Hkv, D, eps);
    }
    apply_rope(qp, cos_t.data_ptr<float>(), sin_t.data_ptr<float>(), N, Hq, D);
    apply_rope(kp, cos_t.data_ptr<float>(), sin_t.data_ptr<float>(), N, Hkv, D);

    // [n_seq, T, Hkv, D] -> [n_seq, Hkv, T, D]
    at::Tensor k_t = k.view({n_seq, T, Hkv, D}).permute({0, 2, 1, 3}).contiguous();
    at::Tensor v_t = v.view({n_seq, T, Hkv, D}).permute({0, 2, 1, 3}).contiguous();
    if (taps) taps->on_qkv(l, q.view({n_seq, T, Hq, D}).permute({0, 2, 1, 3}).contiguous(), k_t, v_t);
    cache.append(l, k_t, v_t, pos);

    const bool want_probs = taps && taps->wants_attention(l);
    if (T <= kDecodeKernelMaxTokens && !want_probs) {
      ops::AttentionArgs a;
      a.n_seq = n_seq; a.n_tok = T; a.n_head_q = Hq; a.n_head_kv = Hkv; a.head_dim = D;
      a.capacity = cache.capacity(); a.scale = scale;
      a.q = qp; a.k = cache.k(l).data_ptr(); a.v = cache.v(l).data_ptr(); a.kv_f16 = kv_dtype == at::kHalf;
      a.pos = cache.pos(l).data_ptr<int64_t>(); a.len = cache.lengths(l).data_ptr<int64_t>();
      a.qpos = posp; a.out = ap;
      ops::attention_decode_f32(a);
    } else {
      attention_general(q, cache, l, pos, n_seq, T, Hkv, G, D, scale, taps, want_probs, att);
    }

    mm(L.wo.view, ap, N, tp);
    add_bias(tp, L.bo, N, H);
    x.add_(tmp);
    rms_norm(xp, L.ffn_norm.data_ptr<float>(), xnp, N, H, eps);
    mm(L.w_gate.view, xnp, N, gp);
    mm(L.w_up.view, xnp, N, upp);
    // SiLU(gate) * up, split over the threads (elementwise: the same values whoever computes them)
    at::parallel_for(0, N * F, 2048, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float g = gp[i];
        gp[i] = (g / (1.0f + std::exp(-g))) * upp[i];
      }
    });
    mm(L.w_down.view, gp, N, tp);
    x.add_(tmp);
  }

  if (logits_mode == Logits::None) return at::Tensor();
  const at::Tensor rows = logit_rows(x, logits_mode, n_seq, T, last_index);
  const int64_t R = rows.size(0);
  at::Tensor hn = at::empty({R, H}, f32);
  rms_norm(rows.data_ptr<float>(), W.out_norm.data_ptr<float>(), hn.data_ptr<float>(), R, H, eps);
  at::Tensor out = at::empty({R, c.n_vocab}, f32);
  mm(W.output.view, hn.data_ptr<float>(), R, out.data_ptr<float>());
  return logits_mode == Logits::All ? out.view({n_seq, T, c.n_vocab}) : out;
}

// The same function in ATen ops on dense weights (LoadOptions::backend "aten") on the weights' device, in their compute
// dtype; inputs validated by forward(). fp32: the readable specification of the native kernels. bf16 (the CUDA
// default): HF's bf16 semantics -- RMSNorm statistics and attention softmax in fp32, products bf16 in / fp32
// accumulate (cuBLAS), RoPE cos/sin computed in fp32 and rounded to bf16. Logits are returned as fp32 on the CPU
// (the sampler's Philox streams then draw the same tokens for the same logits on every device).
at::Tensor Transformer::forward_aten(const at::Tensor& ids_cpu, const at::Tensor& pos_cpu, cache::KvCache& cache,
                                     Logits logits_mode, ForwardTaps* taps, const std::vector<int64_t>& last_index) const {
  const auto& c = config();
  const Dense& dn = *dense_;
  const at::ScalarType dt = dn.dtype;
  const at::Tensor ids = ids_cpu.to(dn.device), pos = pos_cpu.to(dn.device);
  const int64_t n_seq = ids.size(0), T = ids.size(1), N = n_seq * T;
  const int64_t Hq = c.n_head_q, Hkv = c.n_head_kv, D = c.head_dim, G = Hq / Hkv, half = D / 2;
  const float eps = static_cast<float>(c.rms_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // x * rsqrt(mean(x^2) + eps) * w over the last dimension: statistics in fp32 (the mean of squares in double, as
  // the native kernel), the normalised row rounded to the compute dtype before the weight (HF)
  auto rms = [eps, dt](const at::Tensor& x, const at::Tensor& w) {
    const at::Tensor xf = x.to(at::kFloat);
    const at::Tensor ms = xf.to(at::kDouble).square().mean(-1, /*keepdim=*/true).to(at::kFloat);
    const at::Tensor y = xf * (ms + eps).rsqrt();
    return w * (dt == at::kFloat ? y : y.to(dt));
  };
  auto linear = [](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
    at::Tensor y = at::matmul(x, w.t());
    return b.defined() ? y + b : y;
  };
  // HF rotate_half RoPE on t [N, heads, D] with the fp32 angle pos * inv_freq (cos/sin rounded to the compute dtype)
  const at::Tensor ang = pos.reshape({N, 1}).to(at::kFloat) * dn.inv_freq.view({1, half});
  const at::Tensor cs = ang.cos().unsqueeze(1).to(dt), sn = ang.sin().unsqueeze(1).to(dt);
  auto rope = [&](const at::Tensor& t) {
    const at::Tensor x1 = t.narrow(2, 0, half), x2 = t.narrow(2, half, half);
    return at::cat({x1 * cs - x2 * sn, x2 * cs + x1 * sn}, 2);
  };
  at::Tensor x = dn.embd.index_select(0, ids.reshape({N}));  // [N, hidden]
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const Dense::Layer& dl = dn.layers[l];
    at::Tensor xn = rms(x, dl.attn_norm);
    at::Tensor q = linear(xn, dl.wq, dl.bq).view({N, Hq, D});
    at::Tensor k = linear(xn, dl.wk, dl.bk).view({N, Hkv, D});
    at::Tensor v = linear(xn, dl.wv, dl.bv);
    if (c.qk_norm) {
      q = rms(q, dl.q_norm);
      k = rms(k, dl.k_norm);
    }
    q = rope(q).reshape({N, Hq * D}).to(at::kFloat);  // attention in fp32 (no-op on the fp32 path)
    k = rope(k);
    at::Tensor k_t = k.view({n_seq, T, Hkv, D}).permute({0, 2, 1, 3}).to(at::kFloat).contiguous();
    at::Tensor v_t = v.view({n_seq, T, Hkv, D}).permute({0, 2, 1, 3}).to(at::kFloat).contiguous();
    if (taps) taps->on_qkv(l, q.view({n_seq, T, Hq, D}).permute({0, 2, 1, 3}).contiguous(), k_t, v_t);
    cache.append(l, k_t, v_t, pos_cpu);
    at::Tensor att = at::empty({N, Hq * D}, q.options());
    attention_general(q, cache, l, pos, n_seq, T, Hkv, G, D, scale, taps, taps && taps->wants_attention(l), att);
    x = x + linear(att.to(dt), dl.wo, dl.bo);
    xn = rms(x, dl.ffn_norm);
    x = x + at::matmul(at::silu(at::matmul(xn, dl.w_gate.t())) * at::matmul(xn, dl.w_up.t()), dl.w_down.t());
  }
  if (logits_mode == Logits::None) return at::Tensor();
  const at::Tensor rows = logit_rows(x, logits_mode, n_seq, T, last_index);
  at::Tensor out = at::matmul(rms(rows, dn.out_norm), dn.output.t()).to(at::kCPU, at::kFloat).contiguous();
  return logits_mode == Logits::All ? out.view({n_seq, T, c.n_vocab}) : out;
}

}  // namespace fkv::model
