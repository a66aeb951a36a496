// fkv_cuda::compact (in-place order-preserving compaction of K, V, positions, lengths and accumulators) against the
// index_select reference of references.h, which is itself checked against KvCache::keep_mask / remove and the
// Evictor's accumulator gather on the CPU ([cpu] cases, no GPU needed). GPU cases skip (exit 4) without a device.
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include "support/catch.h"

#include <vector>

#include "cuda_test_util.h"
#include "foresightkv/cache/kv_cache.h"
#include "fkv_cuda/compact.h"
#include "references.h"

using namespace fkv;

namespace {

struct CacheState {
  at::Tensor k, v;              // [n_seq, Hkv, S, D] of the storage dtype; garbage past len
  at::Tensor pos;               // [n_seq, Hkv, S] int64, strictly increasing below len, -1 past it
  at::Tensor len;               // [n_seq, Hkv] int64
  std::vector<at::Tensor> acc;  // each [n_seq, Hkv, G, S] fp32, zero past len
};

CacheState random_state(const std::vector<int64_t>& lengths, int64_t n_seq, int64_t Hkv, int64_t S, int64_t D,
                        int64_t G, int n_acc, at::ScalarType dtype, at::Generator& gen) {
  CacheState c;
  c.k = at::randn({n_seq, Hkv, S, D}, gen).to(dtype);
  c.v = at::randn({n_seq, Hkv, S, D}, gen).to(dtype);
  c.len = at::tensor(lengths, at::kLong).view({n_seq, Hkv});
  at::Tensor steps = at::randint(1, 4, {n_seq, Hkv, S}, gen, at::kLong);
  at::Tensor live = at::arange(S, at::kLong).view({1, 1, S}) < c.len.unsqueeze(-1);
  c.pos = at::where(live, steps.cumsum(-1) + 10, at::full({}, -1, at::kLong));
  for (int a = 0; a < n_acc; ++a) c.acc.push_back(at::rand({n_seq, Hkv, G, S}, gen) * live.unsqueeze(2));
  return c;
}

/// Keep mask [n_seq, Hkv, S] uint8. Row r uses mode (r + offset) % 4: 0 keep all (empty drop set), 1 keep exactly one,
/// 2 random half, 3 drop all. Slots past the length get random values (the kernel must ignore them).
at::Tensor make_keep(const at::Tensor& len, int64_t S, int offset, at::Generator& gen) {
  const int64_t n_seq = len.size(0), Hkv = len.size(1);
  at::Tensor keep = at::randint(0, 2, {n_seq, Hkv, S}, gen, at::kByte);
  for (int64_t s = 0; s < n_seq; ++s)
    for (int64_t h = 0; h < Hkv; ++h) {
      const int64_t n = len[s][h].item<int64_t>();
      if (n == 0) continue;
      at::Tensor row = keep[s][h].narrow(0, 0, n);
      switch ((s * Hkv + h + offset) % 4) {
        case 0: row.fill_(1); break;
        case 1: {
          row.fill_(0);
          row[at::randint(0, n, {1}, gen, at::kLong).item<int64_t>()] = 1;
          break;
        }
        case 2: break;
        default: row.fill_(0);
      }
    }
  return keep;
}

/// The same selection as ascending drop lists [n_seq, Hkv, S + 1] (padded with junk past the count) and counts.
std::pair<at::Tensor, at::Tensor> drop_lists(const at::Tensor& keep, const at::Tensor& len) {
  const int64_t n_seq = keep.size(0), Hkv = keep.size(1), S = keep.size(2);
  at::Tensor drop = at::full({n_seq, Hkv, S + 1}, -7, at::kLong), nd = at::zeros({n_seq, Hkv}, at::kLong);
  for (int64_t s = 0; s < n_seq; ++s)
    for (int64_t h = 0; h < Hkv; ++h) {
      const int64_t n = len[s][h].item<int64_t>();
      at::Tensor idx = (keep[s][h].narrow(0, 0, n) == 0).nonzero().view({-1});
      drop[s][h].narrow(0, 0, idx.numel()).copy_(idx);
      nd[s][h] = idx.numel();
    }
  return {drop, nd};
}

fkv_cuda::KvDtype kv_dtype(at::ScalarType t) {
  return t == at::kFloat ? fkv_cuda::KvDtype::F32 : t == at::kHalf ? fkv_cuda::KvDtype::F16 : fkv_cuda::KvDtype::BF16;
}

/// Run the kernel on copies of `c` on the GPU; return the result on the CPU in the reference's shape.
test::CompactRef run_gpu(const CacheState& c, const at::Tensor& keep, bool by_list, int64_t G) {
  at::Tensor k = c.k.to(at::kCUDA), v = c.v.to(at::kCUDA), pos = c.pos.to(at::kCUDA), len = c.len.to(at::kCUDA);
  std::vector<at::Tensor> acc;
  for (const auto& a : c.acc) acc.push_back(a.to(at::kCUDA));
  at::Tensor mask = keep.to(at::kCUDA), drop, nd;
  fkv_cuda::CompactArgs a;
  a.n_seq = c.k.size(0);
  a.n_head_kv = c.k.size(1);
  a.capacity = c.k.size(2);
  a.head_dim = c.k.size(3);
  a.kv_dtype = kv_dtype(c.k.scalar_type());
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.pos = pos.data_ptr<int64_t>();
  a.len = len.data_ptr<int64_t>();
  a.n_acc = static_cast<int>(acc.size());
  a.n_group = G;
  for (size_t i = 0; i < acc.size(); ++i) a.acc[i] = acc[i].data_ptr<float>();
  if (by_list) {
    auto dl = drop_lists(keep, c.len);
    drop = dl.first.to(at::kCUDA);
    nd = dl.second.to(at::kCUDA);
    a.drop = drop.data_ptr<int64_t>();
    a.n_drop = nd.data_ptr<int64_t>();
    a.drop_stride = drop.size(2);
  } else {
    a.keep_mask = mask.data_ptr<uint8_t>();
  }
  REQUIRE(fkv_cuda::compact(a, nullptr) == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  test::CompactRef r{k.cpu(), v.cpu(), pos.cpu(), len.cpu(), {}};
  for (const auto& x : acc) r.acc.push_back(x.cpu());
  return r;
}

/// Exact equality of everything: the kernel copies bits and leaves K/V slots past the new length untouched, as the
/// reference (and KvCache) do.
void require_equal(const test::CompactRef& got, const test::CompactRef& want) {
  REQUIRE(at::equal(got.len, want.len));
  REQUIRE(at::equal(got.pos, want.pos));
  REQUIRE(at::equal(got.k, want.k));
  REQUIRE(at::equal(got.v, want.v));
  REQUIRE(got.acc.size() == want.acc.size());
  for (size_t i = 0; i < got.acc.size(); ++i) REQUIRE(at::equal(got.acc[i], want.acc[i]));
}

struct Shape {
  int64_t n_seq, Hkv, S, D, G;
  int n_acc;
};

}  // namespace

TEST_CASE("cuda compact: GPU equals the index_select reference (dtypes, head dims, groups, drop sets, mask and list)",
          "[cuda][gpu]") {
  FKV_REQUIRE_GPU();
  at::Generator gen = at::detail::createCPUGenerator(2807);
  // S not a multiple of the 256-slot tile (17, 300, 513, 1000) and exactly one tile; odd D gives 2-byte-word rows
  // for fp16/bf16 (D = 3, 5); G up to 8 with 0..2 accumulators.
  const std::vector<Shape> shapes = {{2, 3, 300, 64, 2, 2}, {1, 4, 17, 3, 1, 1}, {2, 3, 1000, 5, 8, 2},
                                     {1, 6, 513, 128, 7, 0}, {1, 4, 256, 16, 3, 2}};
  for (at::ScalarType dt : {at::kFloat, at::kHalf, at::kBFloat16})
    for (const Shape& sh : shapes) {
      const int64_t rows = sh.n_seq * sh.Hkv;
      // lengths: empty, full, full - 1, one entry, then odd ones
      std::vector<int64_t> lengths = {0, sh.S, sh.S - 1, 1};
      for (int64_t r = static_cast<int64_t>(lengths.size()); r < rows; ++r)
        lengths.push_back((sh.S * (r + 1) / (rows + 1)) | 1);
      lengths.resize(rows);
      for (int offset = 0; offset < 4; ++offset)
        for (bool by_list : {false, true}) {
          INFO("dtype " << at::toString(dt) << " S " << sh.S << " D " << sh.D << " G " << sh.G << " acc " << sh.n_acc
                        << " mode offset " << offset << (by_list ? " drop lists" : " keep mask"));
          CacheState c = random_state(lengths, sh.n_seq, sh.Hkv, sh.S, sh.D, sh.G, sh.n_acc, dt, gen);
          at::Tensor keep = make_keep(c.len, sh.S, offset, gen);
          require_equal(run_gpu(c, keep, by_list, sh.G), test::reference_compact(c.k, c.v, c.pos, c.len, c.acc, keep));
        }
    }
}

TEST_CASE("cuda compact: long rows (8192 slots, many tiles and staging chunks), random and sparse drop sets",
          "[cuda][gpu]") {
  FKV_REQUIRE_GPU();
  at::Generator gen = at::detail::createCPUGenerator(11);
  const int64_t S = 8192, D = 128, G = 4;
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    CacheState c = random_state({8192, 8191, 5000, 4097}, 2, 2, S, D, G, 2, dt, gen);
    for (double p_keep : {0.5, 0.98, 0.02}) {
      INFO("dtype " << at::toString(dt) << " keep probability " << p_keep);
      at::Tensor keep = (at::rand({2, 2, S}, gen) < p_keep).to(at::kByte);
      for (bool by_list : {false, true})
        require_equal(run_gpu(c, keep, by_list, G), test::reference_compact(c.k, c.v, c.pos, c.len, c.acc, keep));
    }
  }
}

TEST_CASE("cuda compact: invalid arguments return cudaErrorInvalidValue before any launch", "[cuda][cpu]") {
  // Host-side checks only: no device is touched, so this runs on CPU-only machines.
  float f = 0;
  int64_t i64 = 0;
  uint8_t mask = 1;
  auto valid = [&] {
    fkv_cuda::CompactArgs a;
    a.n_seq = 1; a.n_head_kv = 1; a.head_dim = 4; a.capacity = 1;
    a.k = &f; a.v = &f; a.pos = &i64; a.len = &i64; a.keep_mask = &mask;
    return a;
  };
  const auto inv = cudaErrorInvalidValue;
  { auto a = valid(); a.n_seq = 0; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.n_head_kv = -1; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.head_dim = 0; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.capacity = 0; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.k = nullptr; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.v = nullptr; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.pos = nullptr; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.len = nullptr; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.keep_mask = nullptr; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }  // no selection
  {  // two selections
    auto a = valid(); a.drop = &i64; a.n_drop = &i64; a.drop_stride = 1;
    REQUIRE(fkv_cuda::compact(a, nullptr) == inv);
  }
  {  // drop list without counts
    auto a = valid(); a.keep_mask = nullptr; a.drop = &i64; a.drop_stride = 1;
    REQUIRE(fkv_cuda::compact(a, nullptr) == inv);
  }
  {  // drop list with stride 0
    auto a = valid(); a.keep_mask = nullptr; a.drop = &i64; a.n_drop = &i64;
    REQUIRE(fkv_cuda::compact(a, nullptr) == inv);
  }
  { auto a = valid(); a.n_acc = 1; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }  // acc[0] null
  { auto a = valid(); a.n_acc = 1; a.acc[0] = &f; a.n_group = 0; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.n_acc = fkv_cuda::kMaxCompactAccumulators + 1; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.kv_dtype = static_cast<fkv_cuda::KvDtype>(7); REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }
  { auto a = valid(); a.head_dim = 100000; REQUIRE(fkv_cuda::compact(a, nullptr) == inv); }  // row too large to stage
}

TEST_CASE("cuda compact reference equals KvCache::keep_mask / remove and the Evictor's accumulator gather",
          "[cuda][cpu]") {
  at::Generator gen = at::detail::createCPUGenerator(5);
  const int64_t n_seq = 2, Hkv = 3, S = 40, D = 6, G = 3;
  for (at::ScalarType dt : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int offset = 0; offset < 4; ++offset) {
      INFO("dtype " << at::toString(dt) << " mode offset " << offset);
      cache::KvCacheOptions o;
      o.n_seq = n_seq; o.n_layer = 1; o.n_head_kv = Hkv; o.head_dim = D; o.capacity = S; o.dtype = dt;
      cache::KvCache kv(o);
      // 33 appended tokens at positions 5.., then per-row removals so the rows hold different lengths (one empty)
      const int64_t T = 33;
      at::Tensor pos_new = (at::arange(T, at::kLong) + 5).view({1, T}).expand({n_seq, T}).contiguous();
      kv.append(0, at::randn({n_seq, Hkv, T, D}, gen), at::randn({n_seq, Hkv, T, D}, gen), pos_new);
      for (int64_t s = 0; s < n_seq; ++s)
        for (int64_t h = 0; h < Hkv; ++h) {
          const int64_t r = s * Hkv + h;
          std::vector<int64_t> drop;
          for (int64_t j = 0; j < T; ++j)
            if (r == 5 || (j * 7 + r) % (r + 2) == 0) drop.push_back(j);
          kv.remove(s, 0, h, drop);
        }
      REQUIRE(kv.length(1, 0, 2) == 0);
      std::vector<at::Tensor> acc = {at::rand({n_seq, Hkv, G, S}, gen), at::rand({n_seq, Hkv, G, S}, gen)};
      at::Tensor live = at::arange(S, at::kLong).view({1, 1, 1, S}) < kv.lengths(0).view({n_seq, Hkv, 1, 1});
      for (auto& a : acc) a.mul_(live);
      const at::Tensor k0 = kv.k(0).clone(), v0 = kv.v(0).clone(), p0 = kv.pos(0).clone(), l0 = kv.lengths(0).clone();
      at::Tensor keep = make_keep(l0, S, offset, gen);
      test::CompactRef want = test::reference_compact(k0, v0, p0, l0, acc, keep);

      kv.keep_mask(0, keep.to(at::kBool));
      REQUIRE(at::equal(kv.lengths(0), want.len));
      REQUIRE(at::equal(kv.pos(0), want.pos));
      REQUIRE(at::equal(kv.k(0), want.k));
      REQUIRE(at::equal(kv.v(0), want.v));
      // the Evictor's compaction of an accumulator row (evictor.cpp, evict_layer): gather the kept slots, zero, copy
      for (size_t i = 0; i < acc.size(); ++i)
        for (int64_t s = 0; s < n_seq; ++s)
          for (int64_t h = 0; h < Hkv; ++h) {
            const int64_t n = l0[s][h].item<int64_t>();
            at::Tensor idx = keep[s][h].narrow(0, 0, n).to(at::kBool).nonzero().view({1, -1}).expand({G, -1});
            at::Tensor a = acc[i][s][h].clone();  // [G, S]
            at::Tensor kept = a.narrow(1, 0, n).gather(1, idx);
            a.zero_();
            a.narrow(1, 0, idx.size(1)).copy_(kept);
            REQUIRE(at::equal(a, want.acc[i][s][h]));
          }
    }
  // KvCache::remove with the drop lists gives the same cache as keep_mask
  cache::KvCacheOptions o;
  o.n_seq = 1; o.n_layer = 1; o.n_head_kv = 2; o.head_dim = 4; o.capacity = 30;
  cache::KvCache kv(o);
  kv.append(0, at::randn({1, 2, 30, 4}, gen), at::randn({1, 2, 30, 4}, gen), at::arange(30, at::kLong).view({1, 30}));
  at::Tensor keep = make_keep(kv.lengths(0), 30, 2, gen);
  auto dl = drop_lists(keep, kv.lengths(0));
  test::CompactRef want = test::reference_compact(kv.k(0), kv.v(0), kv.pos(0), kv.lengths(0), {}, keep);
  for (int64_t h = 0; h < 2; ++h) {
    const int64_t nd = dl.second[0][h].item<int64_t>();
    at::Tensor d = dl.first[0][h].narrow(0, 0, nd).contiguous();
    kv.remove(0, 0, h, std::vector<int64_t>(d.data_ptr<int64_t>(), d.data_ptr<int64_t>() + nd));
  }
  REQUIRE(at::equal(kv.lengths(0), want.len));
  REQUIRE(at::equal(kv.pos(0), want.pos));
  REQUIRE(at::equal(kv.k(0), want.k));
}
