// Traces: per-token NLL/entropy against HF transformers (tiny bundles), labeller labels against the dense
// O(T^2) golden reference on q/k captured independently, slot alignment of the golden drops replayed through
// the runtime's evictor, and the trace file format (round trip, corrupt/mismatched files).
#include <ATen/ATen.h>

#include "support/catch.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "foresightkv/core/error.h"
#include "foresightkv/evict/evictor.h"
#include "foresightkv/golden/schedule.h"
#include "foresightkv/trace/labeler.h"
#include "foresightkv/trace/trace_file.h"
#include "support/model_fixtures.h"
#include "support/traces.h"

using namespace fkv;
namespace fs = std::filesystem;

namespace {

std::string tmp(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("fkv_trace_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return (d / name).string();
}

class QkCapture final : public model::ForwardTaps {
 public:
  std::vector<at::Tensor> q, k;
  void on_qkv(int64_t layer, const at::Tensor& qq, const at::Tensor& kk, const at::Tensor&) override {
    if (static_cast<int64_t>(q.size()) <= layer) {
      q.resize(layer + 1);
      k.resize(layer + 1);
    }
    q[layer] = qq[0].clone();
    k[layer] = kk[0].clone();
  }
};

}  // namespace

TEST_CASE("trace NLL and entropy equal HF transformers on the tiny bundles", "[unit][trace]") {
  for (const auto& name : test::bundle_names()) {
    DYNAMIC_SECTION(name) {
      test::Bundle b = test::load_bundle(name);
      auto m = model::Transformer::load(b.dir);
      trace::Trace t;
      t.tokens.assign(b.ids.begin(), b.ids.end());
      t.prompt_len = 5;
      trace::LabelOptions lo;
      lo.chunk = 7;  // chunked pass
      trace::label_trace(*m, t, lo);
      const int64_t T = static_cast<int64_t>(b.ids.size());
      at::Tensor lp = at::log_softmax(b.logits.to(at::kDouble), -1).narrow(0, 0, T - 1);
      at::Tensor y = at::tensor(std::vector<int64_t>(b.ids.begin() + 1, b.ids.end()), at::kLong).unsqueeze(1);
      at::Tensor nll = -lp.gather(1, y).squeeze(1), ent = -(lp.exp() * lp).sum(1);
      CHECK(test::max_abs_diff(t.nll, nll) < 1e-4);
      CHECK(test::max_abs_diff(t.entropy, ent) < 1e-4);
    }
  }
}

TEST_CASE("labeller labels equal the dense golden reference on independently captured q/k", "[unit][trace]") {
  for (const std::string name : {"llama_g1", "qwen2_g2_bias", "qwen3_g4_hd16"}) {
    DYNAMIC_SECTION(name) {
      auto m = model::Transformer::load(test::load_bundle(name).dir);
      const auto& c = m->config();
      trace::Trace t = test::random_trace(83, 10, c.n_vocab, 3);
      trace::LabelOptions lo;
      lo.budgets = {16, 24};
      lo.window = 8;
      lo.chunk = 13;
      trace::label_trace(*m, t, lo);
      // q/k from one full-sequence forward (single chunk, no labeller code)
      QkCapture cap;
      cache::KvCache kv = m->make_cache(1, 83);
      at::Tensor ids = at::tensor(std::vector<int64_t>(t.tokens.begin(), t.tokens.end()), at::kLong).view({1, 83});
      m->forward(ids, at::arange(83, at::kLong).view({1, 83}), kv, model::Logits::None, &cap);
      for (int64_t B : {16, 24}) {
        const trace::GoldenLabels* g = t.find_labels(B, 8);
        REQUIRE(g != nullptr);
        REQUIRE(g->drops.size(1) == golden::golden_steps(83, B, 8));
        for (int64_t l = 0; l < c.n_layer; ++l) {
          golden::GoldenOptions go{B, 8, true};
          auto ref = golden::golden_schedule_reference(golden::block_scores_dense(cap.q[l], cap.k[l], 8, true), 83, go);
          REQUIRE(at::equal(g->drops[l].to(at::kLong), ref.drops.to(at::kLong)));
          REQUIRE(test::max_abs_diff(g->scores[l], ref.scores) < 1e-5);
        }
      }
    }
  }
}

TEST_CASE("slot alignment: replaying golden drops through the runtime keeps exactly the oracle's positions",
          "[unit][trace]") {
  for (const std::string name : {"llama_g3_tied_oldrope", "qwen2_g2_bias"}) {
    DYNAMIC_SECTION(name) {
      auto m = model::Transformer::load(test::load_bundle(name).dir);
      const auto& c = m->config();
      const int64_t T = 77, B = 16, W = 8;
      trace::Trace t = test::random_trace(T, 6, c.n_vocab, 9);
      trace::LabelOptions lo;
      lo.budgets = {B};
      lo.window = W;
      trace::label_trace(*m, t, lo);
      const trace::GoldenLabels& g = *t.find_labels(B, W);
      const int64_t S = g.drops.size(1);
      REQUIRE(S == golden::golden_steps(T, B, W));
      REQUIRE(S >= 5);
      // runtime: chunks of W from position 0, golden policy, length trigger (the fidelity schedule)
      evict::EvictionConfig ec;
      ec.policy = "golden";
      ec.budget = B;
      ec.window = W;
      evict::Evictor ev(ec, 1, c.n_layer, c.n_head_q, c.n_head_kv, c.head_dim);
      dynamic_cast<evict::GoldenPolicy*>(ev.policy())->set_labels(0, g.drops);
      cache::KvCache kv = m->make_cache(1, ec.resolved().capacity_for_chunk(W));
      const int64_t events = test::run_in_chunks(*m, t, W, ev, kv, nullptr, [&](int64_t step) {
        if (step >= S) return;  // past the oracle (nothing follows in the trace)
        at::Tensor expect = trace::replay_survivors(g, T, step);  // [L, H, B]
        for (int64_t l = 0; l < c.n_layer; ++l)
          for (int64_t h = 0; h < c.n_head_kv; ++h) {
            REQUIRE(kv.length(0, l, h) == B);
            REQUIRE(at::equal(kv.pos(l)[0][h].narrow(0, 0, B), expect[l][h]));
          }
      });
      REQUIRE(events >= S);
    }
  }
}

TEST_CASE("trace files: round trip, corrupt, truncated, wrong version, JSONL errors", "[unit][trace]") {
  trace::TraceSet set;
  set.header = json{{"model", {{"sha256", "abc"}, {"n_layer", 2}, {"n_head_kv", 1}}}, {"seed", 3}};
  trace::Trace t = test::random_trace(20, 4, 100, 1);
  t.nll = at::rand({19});
  t.entropy = at::rand({19});
  trace::GoldenLabels g;
  g.budget = 8;
  g.window = 4;
  g.drops = at::randint(0, 8, {2, 2, 1, 4}, at::kInt);
  g.scores = at::rand({2, 2, 1, 8});
  t.labels.push_back(g);
  t.meta = json{{"question", "q"}, {"correct", true}};
  set.traces.push_back(t);
  set.traces.push_back(test::random_trace(9, 3, 100, 2));
  const std::string p = tmp("set.safetensors");
  trace::write_trace_set(p, set);
  trace::TraceSet r = trace::read_trace_set(p);
  REQUIRE(r.traces.size() == 2);
  REQUIRE(r.header == set.header);
  REQUIRE(r.traces[0].tokens == t.tokens);
  REQUIRE(r.traces[0].prompt_len == 4);
  REQUIRE(at::equal(r.traces[0].nll, t.nll));
  REQUIRE(at::equal(r.traces[0].find_labels(8, 4)->drops, g.drops));
  REQUIRE(at::equal(r.traces[0].find_labels(8, 4)->scores, g.scores));
  REQUIRE(r.traces[0].find_labels(8, 8) == nullptr);
  REQUIRE(r.traces[0].meta["question"] == "q");
  REQUIRE_FALSE(r.traces[1].nll.defined());

  // truncated
  std::string bytes;
  {
    std::ifstream f(p, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  const std::string q = tmp("trunc.safetensors");
  {
    std::ofstream f(q, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 10));
  }
  REQUIRE_THROWS_AS(trace::read_trace_set(q), Error);
  // wrong version: patch the metadata's version digit
  std::string v2 = bytes;
  const size_t at = v2.find("\\\"version\\\":1");
  REQUIRE(at != std::string::npos);
  v2[at + std::string("\\\"version\\\":").size()] = '7';
  {
    std::ofstream f(q, std::ios::binary);
    f.write(v2.data(), static_cast<std::streamsize>(v2.size()));
  }
  REQUIRE_THROWS_WITH(trace::read_trace_set(q), Catch::Contains("version 7"));
  // labels from another model (layer count mismatch with the header)
  trace::TraceSet bad = set;
  bad.header["model"]["n_layer"] = 3;
  trace::write_trace_set(q, bad);
  REQUIRE_THROWS_WITH(trace::read_trace_set(q), Catch::Contains("layers"));
  // a plain safetensors file that is not a trace
  io::write_safetensors(q, {}, {});
  REQUIRE_THROWS_WITH(trace::read_trace_set(q), Catch::Contains("not an fkv trace"));
  // JSONL
  const std::string j = tmp("t.jsonl");
  {
    std::ofstream f(j);
    f << R"({"prompt_ids": [1, 2], "response_ids": [3, 4, 5], "id": "a"})" << "\n\n"
      << R"({"prompt_ids": [7], "response_ids": [8]})" << "\n";
  }
  r = trace::read_trace_set(j);
  REQUIRE(r.traces.size() == 2);
  REQUIRE(r.traces[0].id == "a");
  REQUIRE(r.traces[0].tokens == std::vector<int32_t>{1, 2, 3, 4, 5});
  REQUIRE(r.traces[0].prompt_len == 2);
  REQUIRE(r.traces[1].id == "1");  // line order when the rows are not fkv-eval samples
  // fkv-eval generate rows (finish order) are read in (problem_index, sample_index) order
  {
    std::ofstream f(j);
    f << R"({"problem_index": 3, "sample_index": 1, "prompt_ids": [1], "response_ids": [31]})" << "\n"
      << R"({"problem_index": 0, "sample_index": 2, "prompt_ids": [1], "response_ids": [2]})" << "\n"
      << R"({"problem_index": 3, "sample_index": 0, "prompt_ids": [1], "response_ids": [30]})" << "\n"
      << R"({"problem_index": 0, "sample_index": 0, "prompt_ids": [1], "response_ids": [0]})" << "\n";
  }
  r = trace::read_trace_set(j);
  REQUIRE(r.traces.size() == 4);
  std::vector<int32_t> last;
  for (const auto& t : r.traces) last.push_back(t.tokens.back());
  REQUIRE(last == std::vector<int32_t>{0, 2, 30, 31});
  REQUIRE(r.traces[2].meta["problem_index"] == 3);
  // one row without the keys: the file is not treated as samples, line order stays
  {
    std::ofstream f(j);
    f << R"({"problem_index": 3, "sample_index": 1, "prompt_ids": [1], "response_ids": [31]})" << "\n"
      << R"({"prompt_ids": [1], "response_ids": [5]})" << "\n"
      << R"({"problem_index": 0, "sample_index": 0, "prompt_ids": [1], "response_ids": [0]})" << "\n";
  }
  r = trace::read_trace_set(j);
  last.clear();
  for (const auto& t : r.traces) last.push_back(t.tokens.back());
  REQUIRE(last == std::vector<int32_t>{31, 5, 0});
  {
    std::ofstream f(j);
    f << R"({"prompt_ids": [1, 2], "response_ids": [3, -4]})" << "\n";
  }
  REQUIRE_THROWS_AS(trace::read_trace_set(j), FormatError);
  {
    std::ofstream f(j);
    f << R"({"prompt_ids": [1, 2], "respons)" << "\n";
  }
  REQUIRE_THROWS_AS(trace::read_trace_set(j), FormatError);
  REQUIRE_THROWS_AS(trace::read_trace_set(tmp("missing.jsonl")), Error);
  fs::remove_all(fs::path(p).parent_path());
}
