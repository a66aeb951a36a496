// KvCache: append/keep/remove/keep_mask semantics, order-preserving compaction, positions following
// their entries, capacity errors; the fp32 fast path equals the generic ATen path (fp64 cache).
#include <ATen/ATen.h>

#include "support/catch.h"

#include "foresightkv/cache/kv_cache.h"
#include "foresightkv/core/error.h"

using fkv::cache::KvCache;
using fkv::cache::KvCacheOptions;

namespace {

KvCacheOptions opts(at::ScalarType dt = at::kFloat) {
  KvCacheOptions o;
  o.n_seq = 2;
  o.n_layer = 2;
  o.n_head_kv = 3;
  o.head_dim = 4;
  o.capacity = 10;
  o.dtype = dt;
  return o;
}

// Entry value encodes (seq, head, position) so survivors can be identified after compaction.
at::Tensor make_kv(int64_t n_seq, int64_t H, int64_t T, int64_t D, int64_t pos0, double sign) {
  at::Tensor t = at::empty({n_seq, H, T, D}, at::kDouble);
  for (int64_t s = 0; s < n_seq; ++s)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t d = 0; d < D; ++d) t[s][h][i][d] = sign * (1000 * s + 100 * h + (pos0 + i) + 0.01 * d);
  return t;
}

at::Tensor positions(int64_t n_seq, int64_t pos0, int64_t T) {
  return at::arange(pos0, pos0 + T, at::kLong).view({1, T}).expand({n_seq, T}).contiguous();
}

void check_entry(const KvCache& c, int64_t layer, int64_t s, int64_t h, int64_t slot, int64_t pos) {
  REQUIRE(c.pos(layer)[s][h][slot].item<int64_t>() == pos);
  for (int64_t d = 0; d < c.head_dim(); ++d) {
    REQUIRE(c.k(layer)[s][h][slot][d].item<double>() == Approx(1000 * s + 100 * h + pos + 0.01 * d).epsilon(1e-6));
    REQUIRE(c.v(layer)[s][h][slot][d].item<double>() == Approx(-(1000 * s + 100 * h + pos + 0.01 * d)).epsilon(1e-6));
  }
}

void run_semantics(at::ScalarType dt) {
  KvCache c(opts(dt));
  c.append(0, make_kv(2, 3, 6, 4, 0, 1), make_kv(2, 3, 6, 4, 0, -1), positions(2, 0, 6));
  REQUIRE(c.length(0, 0, 0) == 6);
  REQUIRE(c.length(1, 1, 2) == 0);  // other layer untouched
  // Per-head independent eviction.
  c.remove(0, 0, 1, {4, 1});
  c.keep(1, 0, 2, {0, 5});
  REQUIRE(c.length(0, 0, 1) == 4);
  REQUIRE(c.length(1, 0, 2) == 2);
  REQUIRE(c.length(0, 0, 0) == 6);
  const int64_t kept01[] = {0, 2, 3, 5};
  for (int64_t i = 0; i < 4; ++i) check_entry(c, 0, 0, 1, i, kept01[i]);
  check_entry(c, 0, 1, 2, 0, 0);
  check_entry(c, 0, 1, 2, 1, 5);
  REQUIRE(c.pos(0)[1][2][2].item<int64_t>() == -1);
  // Append after eviction lands behind the survivors, keeping original positions.
  c.append(0, make_kv(2, 3, 2, 4, 6, 1), make_kv(2, 3, 2, 4, 6, -1), positions(2, 6, 2));
  REQUIRE(c.length(0, 0, 1) == 6);
  check_entry(c, 0, 0, 1, 4, 6);
  check_entry(c, 0, 0, 1, 5, 7);
  check_entry(c, 0, 1, 2, 2, 6);
  REQUIRE(c.max_length(0) == 8);
  // keep_mask over a whole layer.
  at::Tensor m = at::ones({2, 3, 10}, at::kBool);
  m[0][0][0] = false;
  m[1][1][7] = false;
  c.keep_mask(0, m);
  REQUIRE(c.length(0, 0, 0) == 7);
  check_entry(c, 0, 0, 0, 0, 1);
  REQUIRE(c.length(1, 0, 1) == 7);
  check_entry(c, 0, 1, 1, 6, 6);
  // keep_ordered: survivors laid out in the given (score) order, positions follow; then appends land behind.
  c.keep_ordered(0, 0, 2, {5, 0, 3});
  REQUIRE(c.length(0, 0, 2) == 3);
  check_entry(c, 0, 0, 2, 0, 5);
  check_entry(c, 0, 0, 2, 1, 0);
  check_entry(c, 0, 0, 2, 2, 3);
  REQUIRE(c.pos(0)[0][2][3].item<int64_t>() == -1);
  REQUIRE_THROWS_AS(c.keep_ordered(0, 0, 2, {1, 1}), fkv::InvalidArgument);
  REQUIRE_THROWS_AS(c.keep_ordered(0, 0, 2, {3}), fkv::InvalidArgument);
  c.keep_ordered(0, 0, 2, {0, 1, 2});  // identity
  check_entry(c, 0, 0, 2, 2, 3);
  // Capacity is enforced.
  REQUIRE_THROWS_AS(c.append(0, make_kv(2, 3, 3, 4, 8, 1), make_kv(2, 3, 3, 4, 8, -1), positions(2, 8, 3)),
                    fkv::InvalidArgument);
  c.clear(0);
  REQUIRE(c.length(0, 0, 1) == 0);
  REQUIRE(c.length(1, 0, 1) == 7);
}

}  // namespace

TEST_CASE("kv cache semantics, fp32 fast path", "[unit][cache]") { run_semantics(at::kFloat); }
TEST_CASE("kv cache semantics, generic ATen path (fp64)", "[unit][cache]") { run_semantics(at::kDouble); }

TEST_CASE("kv cache rejects bad requests", "[unit][cache]") {
  KvCache c(opts());
  c.append(1, make_kv(2, 3, 4, 4, 0, 1), make_kv(2, 3, 4, 4, 0, -1), positions(2, 0, 4));
  REQUIRE_THROWS_AS(c.keep(0, 1, 0, {2, 1}), fkv::InvalidArgument);   // not increasing
  REQUIRE_THROWS_AS(c.keep(0, 1, 0, {0, 4}), fkv::InvalidArgument);   // beyond length
  REQUIRE_THROWS_AS(c.remove(0, 1, 0, {1, 1}), fkv::InvalidArgument); // duplicate
  REQUIRE_THROWS_AS(c.remove(0, 1, 3, {0}), fkv::InvalidArgument);    // head out of range
  REQUIRE_THROWS_AS(c.append(1, make_kv(1, 3, 1, 4, 0, 1), make_kv(1, 3, 1, 4, 0, 1), positions(1, 0, 1)),
                    fkv::InvalidArgument);                               // wrong batch
  REQUIRE_THROWS_AS(KvCache(KvCacheOptions{}), fkv::InvalidArgument);
  // Memory is capacity-based and independent of how many tokens were ever appended.
  const int64_t bytes = c.storage_bytes();
  for (int round = 0; round < 20; ++round) {
    c.remove(0, 1, 0, {0});
    c.remove(1, 1, 0, {0});
    for (int64_t s = 0; s < 2; ++s)
      for (int64_t h = 1; h < 3; ++h) c.remove(s, 1, h, {0});
    c.append(1, make_kv(2, 3, 1, 4, 4 + round, 1), make_kv(2, 3, 1, 4, 4 + round, -1), positions(2, 4 + round, 1));
  }
  REQUIRE(c.storage_bytes() == bytes);
  REQUIRE(c.length(0, 1, 0) == 4);
  check_entry(c, 1, 0, 0, 3, 23);
  REQUIRE(c.live_bytes() == 2 * 3 * 4 * 2 * 4 * 4);
}

TEST_CASE("copy_sequence replaces one sequence with another cache's, all layers, nothing else", "[unit][cache]") {
  for (at::ScalarType dt : {at::kFloat, at::kDouble}) {
    KvCache src(opts(dt)), dst(opts(dt));
    src.append(0, make_kv(2, 3, 6, 4, 0, 1), make_kv(2, 3, 6, 4, 0, -1), positions(2, 0, 6));
    src.append(1, make_kv(2, 3, 3, 4, 0, 1), make_kv(2, 3, 3, 4, 0, -1), positions(2, 0, 3));
    src.remove(1, 0, 2, {0, 3});  // heads of a sequence may hold different lengths
    dst.append(0, make_kv(2, 3, 8, 4, 50, 1), make_kv(2, 3, 8, 4, 50, -1), positions(2, 50, 8));
    dst.copy_sequence(0, src, 1);
    for (int64_t l = 0; l < 2; ++l)
      for (int64_t h = 0; h < 3; ++h) {
        REQUIRE(dst.length(0, l, h) == src.length(1, l, h));
        REQUIRE(at::equal(dst.pos(l)[0][h], src.pos(l)[1][h]));  // -1 past the length as well
        const int64_t n = src.length(1, l, h);
        REQUIRE(at::equal(dst.k(l)[0][h].narrow(0, 0, n), src.k(l)[1][h].narrow(0, 0, n)));
        REQUIRE(at::equal(dst.v(l)[0][h].narrow(0, 0, n), src.v(l)[1][h].narrow(0, 0, n)));
      }
    REQUIRE(dst.length(0, 0, 2) == 4);
    // the source's entries (values of sequence 1, head 2; position 0 was removed) at the destination row
    REQUIRE(dst.pos(0)[0][2][0].item<int64_t>() == 1);
    REQUIRE(dst.k(0)[0][2][0][3].item<double>() == Approx(1000 + 200 + 1 + 0.03).epsilon(1e-6));
    REQUIRE(dst.v(0)[0][2][0][3].item<double>() == Approx(-(1000 + 200 + 1 + 0.03)).epsilon(1e-6));
    // sequence 1 of the destination is untouched
    REQUIRE(dst.length(1, 0, 0) == 8);
    check_entry(dst, 0, 1, 0, 7, 57);
    // the copy is independent of the source afterwards
    src.clear(1);
    REQUIRE(dst.length(0, 0, 0) == 6);
  }
  KvCache a(opts()), b(opts(at::kDouble));
  KvCacheOptions o = opts();
  o.capacity = 11;
  KvCache c(o);
  REQUIRE_THROWS_AS(a.copy_sequence(0, b, 0), fkv::InvalidArgument);  // dtype
  REQUIRE_THROWS_AS(a.copy_sequence(0, c, 0), fkv::InvalidArgument);  // capacity
  REQUIRE_THROWS_AS(a.copy_sequence(2, a, 0), fkv::InvalidArgument);  // row out of range
  REQUIRE_THROWS_AS(a.copy_sequence(0, a, -1), fkv::InvalidArgument);
}
