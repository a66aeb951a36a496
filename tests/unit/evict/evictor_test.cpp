// Evictor: triggers (length and the parity counter), the statistics handed to policies (attention of the
// observed queries recomputed naively here, causal by position), accumulators following their entries
// through compaction, score-order layouts, and validation of policy output. Synthetic caches; no model.
#include <ATen/ATen.h>

#include "support/catch.h"

#include <cmath>
#include <map>

#include "foresightkv/core/error.h"
#include "foresightkv/evict/evictor.h"

using namespace fkv;

namespace {

constexpr int64_t kLayers = 2, kHq = 4, kHkv = 2, kD = 8;

cache::KvCache make_kv(int64_t n_seq, int64_t cap) {
  cache::KvCacheOptions o;
  o.n_seq = n_seq;
  o.n_layer = kLayers;
  o.n_head_kv = kHkv;
  o.head_dim = kD;
  o.capacity = cap;
  return cache::KvCache(o);
}

// One "forward": T new tokens per sequence at the given next positions, random q/k/v.
void step(evict::Evictor& e, cache::KvCache& kv, std::vector<int64_t>& next_pos, int64_t T,
          std::vector<at::Tensor>* q_log = nullptr) {
  const int64_t n_seq = kv.n_seq();
  at::Tensor pos = at::empty({n_seq, T}, at::kLong);
  for (int64_t s = 0; s < n_seq; ++s)
    for (int64_t i = 0; i < T; ++i) pos[s][i] = next_pos[s] + i;
  e.begin_forward(pos, std::vector<int64_t>(n_seq, T));
  for (int64_t l = 0; l < kLayers; ++l) {
    at::Tensor q = at::randn({n_seq, kHq, T, kD});
    if (q_log) q_log->push_back(q);
    e.observe_queries(l, q);
    kv.append(l, at::randn({n_seq, kHkv, T, kD}), at::randn({n_seq, kHkv, T, kD}), pos);
  }
  for (int64_t s = 0; s < n_seq; ++s) next_pos[s] += T;
  e.end_forward(kv);
}

// Records every view it is shown, delegates to streaming-like "keep the newest B".
class Spy final : public evict::Policy {
 public:
  explicit Spy(bool acc) : acc_(acc) {}
  std::string name() const override { return "spy"; }
  bool needs_attention() const override { return true; }
  bool needs_accumulators() const override { return acc_; }
  at::Tensor select(const evict::LayerView& v) override {
    seen.push_back(v);  // views alias live storage that the next compaction rewrites: keep copies
    evict::LayerView& c = seen.back();
    for (at::Tensor* t : {&c.k, &c.v, &c.pos, &c.logits, &c.probs, &c.cum, &c.dec})
      if (t->defined()) *t = t->clone();
    // keep the B entries with the largest (position * 7919) % 101: a scrambled, position-determined choice
    at::Tensor key = (v.pos * 7919).remainder(101).to(at::kFloat);
    key.narrow(1, v.n - v.protect, v.protect).fill_(1e9);
    return std::get<1>(key.topk(v.budget, -1, true, true));  // score order (not positional)
  }
  bool acc_;
  std::vector<evict::LayerView> seen;
};

evict::EvictionConfig config(const std::string& policy, int64_t B, int64_t L, evict::Variant var) {
  evict::EvictionConfig c;
  c.policy = policy;
  c.budget = B;
  c.window = L;
  c.variant = var;
  return c;
}

}  // namespace

TEST_CASE("length trigger: evict to B when a forward leaves >= B + L entries", "[unit][evict]") {
  auto c = config("streamingllm", 8, 4, evict::Variant::Intended);
  c.sink_tokens = 2;
  evict::Evictor e(c, 1, kLayers, kHq, kHkv, kD);
  cache::KvCache kv = make_kv(1, c.resolved().capacity_for_chunk(5));
  std::vector<int64_t> next{0};
  int64_t events = 0;
  for (int64_t t = 0; t < 30; ++t) {
    step(e, kv, next, 1);
    const int64_t n = kv.length(0, 0, 0);
    REQUIRE(n <= 8 + 4 - 1);
    if (t + 1 >= 12 && (t + 1 - 12) % 4 == 0) {
      ++events;
      REQUIRE(n == 8);
      // sinks 0, 1 and the newest 6 positions, all layers and heads
      for (int64_t l = 0; l < kLayers; ++l)
        for (int64_t h = 0; h < kHkv; ++h) {
          at::Tensor p = kv.pos(l)[0][h].narrow(0, 0, 8);
          REQUIRE(p[0].item<int64_t>() == 0);
          REQUIRE(p[1].item<int64_t>() == 1);
          REQUIRE(p[2].item<int64_t>() == t - 5);
          REQUIRE(p[7].item<int64_t>() == t);
        }
    }
    REQUIRE(e.stats().events == events);
  }
  // a 5-token chunk that lands above B + L evicts straight to B (after 30 tokens the cache holds 10)
  REQUIRE(kv.length(0, 0, 0) == 10);
  REQUIRE(e.stats().peak_entries == 12);  // the triggering forward attended to B + L entries
  step(e, kv, next, 5);
  REQUIRE(kv.length(0, 1, 1) == 8);
  REQUIRE(e.stats().peak_entries == 15);
}

TEST_CASE("counter trigger (parity): N % L == 0 flags the next forward, which evicts to B", "[unit][evict]") {
  auto c = config("streamingllm", 8, 4, evict::Variant::Parity);
  evict::Evictor e(c, 1, kLayers, kHq, kHkv, kD);
  cache::KvCache kv = make_kv(1, 32);
  std::vector<int64_t> next{0};
  // tokens 1..: flag after N = 4, 8, 12 ...; eviction on the forward after a flag if N_kv > B
  std::vector<int64_t> lengths;
  for (int64_t t = 0; t < 20; ++t) {
    step(e, kv, next, 1);
    lengths.push_back(kv.length(0, 0, 0));
  }
  // N=9: flagged at 8, cache 9 > 8 -> evict to 8; N=13: 12 -> 8; N=17: 12 -> 8
  const std::vector<int64_t> expect = {1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11};
  REQUIRE(lengths == expect);
  REQUIRE(e.stats().events == 3);
}

TEST_CASE("statistics: observed queries' attention, causal by position, accumulators follow entries",
          "[unit][evict]") {
  for (auto var : {evict::Variant::Intended, evict::Variant::Parity}) {
    auto c = config("h2o", 10, 4, evict::Variant::Intended);
    c.query_window = 3;
    c.variant = var;
    c.trigger = evict::Trigger::Length;
    evict::Evictor e(c, 2, kLayers, kHq, kHkv, kD);
    auto spy_owner = std::make_unique<Spy>(true);
    Spy* spy = spy_owner.get();
    e.set_policy(std::move(spy_owner));
    cache::KvCache kv = make_kv(2, c.resolved().capacity_for_chunk(3));
    std::vector<int64_t> next{0, 100};
    std::vector<at::Tensor> qlog;  // per forward, per layer
    // expected accumulator per (seq, layer, head, g, key position)
    std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>, double> acc;
    for (int64_t f = 0; f < 12; ++f) {
      const size_t before = spy->seen.size();
      const int64_t T = f == 0 ? 3 : (f % 3) + 1;
      std::vector<at::Tensor> q_this;
      step(e, kv, next, T, &q_this);
      qlog.insert(qlog.end(), q_this.begin(), q_this.end());
      for (size_t i = before; i < spy->seen.size(); ++i) {
        const evict::LayerView& v = spy->seen[i];
        // naive: the last 3 queries of this sequence (they are the newest positions), against the view's keys
        const int64_t G = kHq / kHkv;
        // intended accumulators observe every query since the start at the first event (ring of B + L = 14)
        const int64_t nq = v.probs.size(2);
        const bool first = v.event == 0;
        REQUIRE(nq == (first && var == evict::Variant::Intended ? std::min<int64_t>(v.n, 14) : 3));
        for (int64_t h = 0; h < kHkv; ++h)
          for (int64_t g = 0; g < G; ++g)
            for (int64_t a = 0; a < nq; ++a) {
              const int64_t qpos = next[v.seq] - nq + a;
              // find that query: walk back over the logged forwards of this layer
              at::Tensor qv;
              {
                int64_t p = next[v.seq];
                for (int64_t k = static_cast<int64_t>(qlog.size()) / kLayers - 1; k >= 0 && !qv.defined(); --k) {
                  at::Tensor qq = qlog[k * kLayers + v.layer];
                  const int64_t TT = qq.size(2);
                  if (qpos >= p - TT) qv = qq[v.seq][h * G + g][qpos - (p - TT)];
                  p -= TT;
                }
              }
              std::vector<double> lg(v.n);
              double mx = -INFINITY, z = 0;
              for (int64_t n = 0; n < v.n; ++n) {
                const bool vis = v.pos[h][n].item<int64_t>() <= qpos;
                lg[n] = vis ? at::dot(qv, v.k[h][n]).item<double>() / std::sqrt(double(kD)) : -INFINITY;
                mx = std::max(mx, lg[n]);
              }
              for (int64_t n = 0; n < v.n; ++n) z += std::exp(lg[n] - mx);
              for (int64_t n = 0; n < v.n; ++n) {
                const double p = std::exp(lg[n] - mx) / z;
                REQUIRE(v.probs[h][g][a][n].item<double>() == Approx(p).margin(1e-5));
                acc[{v.seq, v.layer, h, g, v.pos[h][n].item<int64_t>()}] += p;
              }
            }
        for (int64_t h = 0; h < kHkv; ++h)
          for (int64_t g = 0; g < G; ++g)
            for (int64_t n = 0; n < v.n; ++n)
              REQUIRE(v.cum[h][g][n].item<double>() ==
                      Approx(acc[{v.seq, v.layer, h, g, v.pos[h][n].item<int64_t>()}]).margin(1e-4));
      }
    }
    REQUIRE(spy->seen.size() >= 2 * kLayers * 2);  // several events per sequence
    // the spy keeps score order: positions are not sorted after an eviction, and the cache follows it
    bool unsorted = false;
    for (int64_t h = 0; h < kHkv; ++h) {
      at::Tensor p = kv.pos(0)[0][h].narrow(0, 0, kv.length(0, 0, h));
      unsorted = unsorted || !at::equal(p, std::get<0>(p.sort()));
    }
    REQUIRE(unsorted);
  }
}

TEST_CASE("evictor rejects invalid policy output", "[unit][evict]") {
  struct Bad final : evict::Policy {
    int mode;
    explicit Bad(int m) : mode(m) {}
    std::string name() const override { return "bad"; }
    at::Tensor select(const evict::LayerView& v) override {
      const int64_t H = v.k.size(0);
      if (mode == 0) return at::zeros({H, v.budget}, at::kLong);                      // repeated slot
      if (mode == 1) return at::arange(0, v.budget, at::kLong).expand({H, v.budget}).contiguous();  // drops protected
      return at::arange(0, v.budget - 1, at::kLong).expand({H, v.budget - 1}).contiguous();         // wrong size
    }
  };
  for (int mode = 0; mode < 3; ++mode) {
    auto c = config("streamingllm", 6, 2, evict::Variant::Intended);
    evict::Evictor e(c, 1, kLayers, kHq, kHkv, kD);
    e.set_policy(std::make_unique<Bad>(mode));
    cache::KvCache kv = make_kv(1, 16);
    std::vector<int64_t> next{0};
    for (int64_t t = 0; t < 7; ++t) step(e, kv, next, 1);
    REQUIRE_THROWS_AS(step(e, kv, next, 1), Error);
  }
}

// Continuous batching moves a sequence prefilled in a side batch into a running batch (KvCache::copy_sequence +
// Evictor::import_sequence). From then on it must evict exactly as a sequence that ran alone from the start:
// same survivors (positions and K/V), same events, same accumulators (h2o scores, intended variant), and the
// row's stream identity (random policy) travels with it.
TEST_CASE("import_sequence: a sequence moved into another batch evicts as if it had run alone", "[unit][evict]") {
  for (const std::string pol : {"h2o", "snapkv", "rkv", "random"}) {
    DYNAMIC_SECTION(pol) {
      const auto c = config(pol, 8, 4, evict::Variant::Intended);
      const int64_t cap = c.resolved().capacity_for_chunk(6);
      at::manual_seed(7);
      // the inputs of the moved sequence: a 6-token prefill then 20 decode steps
      struct Chunk {
        at::Tensor pos;
        std::vector<at::Tensor> q, k, v;
      };
      std::vector<Chunk> chunks;
      int64_t p0 = 0;
      for (int64_t T : {6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) {
        Chunk ch;
        ch.pos = at::arange(p0, p0 + T, at::kLong).view({1, T});
        for (int64_t l = 0; l < kLayers; ++l) {
          ch.q.push_back(at::randn({1, kHq, T, kD}));
          ch.k.push_back(at::randn({1, kHkv, T, kD}));
          ch.v.push_back(at::randn({1, kHkv, T, kD}));
        }
        chunks.push_back(ch);
        p0 += T;
      }
      // feed chunk `ch` to row `row` of an n-row batch; other rows get random tokens at their own positions
      auto feed = [&](evict::Evictor& e, cache::KvCache& kv, int64_t row, const Chunk& ch, std::vector<int64_t>& other_pos) {
        const int64_t n = kv.n_seq(), T = ch.pos.size(1);
        at::Tensor pos = at::empty({n, T}, at::kLong);
        for (int64_t s = 0; s < n; ++s) pos[s] = s == row ? ch.pos[0] : at::arange(other_pos[s], other_pos[s] + T, at::kLong);
        e.begin_forward(pos, std::vector<int64_t>(n, T));
        for (int64_t l = 0; l < kLayers; ++l) {
          at::Tensor q = at::randn({n, kHq, T, kD}), k = at::randn({n, kHkv, T, kD}), v = at::randn({n, kHkv, T, kD});
          q[row] = ch.q[l][0];
          k[row] = ch.k[l][0];
          v[row] = ch.v[l][0];
          e.observe_queries(l, q);
          kv.append(l, k, v, pos);
        }
        for (int64_t s = 0; s < n; ++s) other_pos[s] += T;
        e.end_forward(kv);
      };
      // reference: alone, row 0 of a 1-row batch, stream 42
      evict::Evictor ref(c, 1, kLayers, kHq, kHkv, kD);
      ref.set_stream(0, 42);
      cache::KvCache ref_kv = make_kv(1, cap);
      std::vector<int64_t> none{0};
      for (const auto& ch : chunks) feed(ref, ref_kv, 0, ch, none);
      // moved: prefilled as row 1 of a 2-row side batch (stream 42), then moved into row 2 of a 3-row batch
      // that has been running for a while
      evict::Evictor side(c, 2, kLayers, kHq, kHkv, kD), main(c, 3, kLayers, kHq, kHkv, kD);
      side.set_stream(1, 42);
      cache::KvCache side_kv = make_kv(2, cap), main_kv = make_kv(3, cap);
      std::vector<int64_t> side_pos{0, 0}, main_pos{0, 0, 0};
      feed(side, side_kv, 1, chunks[0], side_pos);
      for (int i = 0; i < 13; ++i) feed(main, main_kv, 0, chunks[1], main_pos);  // rows busy; row 2 is then freed
      main_kv.clear(2);
      main.reset(2);
      main_kv.copy_sequence(2, side_kv, 1);
      main.import_sequence(2, side, 1);
      for (size_t i = 1; i < chunks.size(); ++i) {
        feed(main, main_kv, 2, chunks[i], main_pos);
      }
      REQUIRE(main.events(2) == ref.events(0));
      REQUIRE(main.events(2) > 0);
      REQUIRE(main.peak_entries(2) == ref.peak_entries(0));
      for (int64_t l = 0; l < kLayers; ++l) {
        const int64_t n = ref_kv.length(0, l, 0);
        REQUIRE(main_kv.length(2, l, 0) == n);
        REQUIRE(at::equal(main_kv.pos(l)[2], ref_kv.pos(l)[0]));
        REQUIRE(at::equal(main_kv.k(l)[2].narrow(1, 0, n), ref_kv.k(l)[0].narrow(1, 0, n)));
        REQUIRE(at::equal(main_kv.v(l)[2].narrow(1, 0, n), ref_kv.v(l)[0].narrow(1, 0, n)));
      }
    }
  }
  // shapes and configs must match
  auto c = config("h2o", 8, 4, evict::Variant::Intended);
  evict::Evictor a(c, 2, kLayers, kHq, kHkv, kD), b(config("h2o", 6, 4, evict::Variant::Intended), 2, kLayers, kHq, kHkv, kD);
  REQUIRE_THROWS_AS(a.import_sequence(0, b, 0), InvalidArgument);
  REQUIRE_THROWS_AS(a.import_sequence(2, a, 0), InvalidArgument);
  REQUIRE_THROWS_AS(a.set_stream(5, 1), InvalidArgument);
}

TEST_CASE("observer: every decision, before compaction, with the positions the cache then drops",
          "[unit][evict]") {
  // A score-order policy (Spy) on two sequences with their own streams: the observer sees, per (sequence, layer,
  // event), the live positions before eviction and the kept slots; the cache after the forward holds exactly the
  // kept positions in that order, and the observer changes nothing (same caches as an evictor without one).
  auto c = config("h2o", 8, 4, evict::Variant::Intended);
  cache::KvCache kv = make_kv(2, c.resolved().capacity_for_chunk(2)), kv_ref = make_kv(2, kv.capacity());
  evict::Evictor e(c, 2, kLayers, kHq, kHkv, kD), ref(c, 2, kLayers, kHq, kHkv, kD);
  e.set_policy(std::make_unique<Spy>(false));
  ref.set_policy(std::make_unique<Spy>(false));
  e.set_stream(0, 70);
  e.set_stream(1, 71);
  struct Seen {
    uint64_t stream;
    int64_t layer, event;
    at::Tensor pos, keep;
  };
  std::vector<Seen> seen;
  e.set_observer([&](const evict::EvictionRecord& r) {
    seen.push_back({r.stream, r.layer, r.event, r.pos.clone(), r.keep.clone()});
  });
  std::vector<int64_t> next{0, 50}, next_ref{0, 50};
  int64_t checked = 0;
  for (int64_t f = 0; f < 14; ++f) {
    const int64_t T = 1 + f % 2;
    seen.clear();
    at::manual_seed(f);
    step(e, kv, next, T);
    at::manual_seed(f);
    step(ref, kv_ref, next_ref, T);
    for (const Seen& s : seen) {
      const int64_t seq = s.stream == 70 ? 0 : 1;
      REQUIRE(s.stream == static_cast<uint64_t>(70 + seq));
      REQUIRE(s.event == e.events(seq) - 1);
      REQUIRE(s.pos.scalar_type() == at::kLong);
      REQUIRE(s.pos.size(0) == kHkv);
      REQUIRE(s.pos.size(1) >= 8 + 4);
      REQUIRE(s.keep.sizes() == at::IntArrayRef({kHkv, 8}));
      for (int64_t h = 0; h < kHkv; ++h) {
        // before: every position the sequence has seen that earlier events did not drop, newest = next - 1
        REQUIRE(s.pos[h].max().item<int64_t>() == next[seq] - 1);
        REQUIRE(at::equal(kv.pos(s.layer)[seq][h].narrow(0, 0, 8), s.pos[h].index_select(0, s.keep[h])));
      }
      ++checked;
    }
  }
  REQUIRE(checked >= 2 * kLayers * 2);
  for (int64_t l = 0; l < kLayers; ++l) {
    REQUIRE(at::equal(kv.pos(l), kv_ref.pos(l)));
    REQUIRE(at::equal(kv.k(l), kv_ref.k(l)));
  }
}
