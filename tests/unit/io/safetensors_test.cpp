// safetensors reader/writer: every golden bundle in tests/data/tiny_models (names, shapes, dtypes and
// stored values against golden.json), the sharded index, a write/read round trip, and corrupt files
// generated in a temp dir, each of which must throw a FormatError that names the problem.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <cmath>
#include <string>
#include <vector>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/json.h"
#include "foresightkv/io/safetensors.h"
#include "support/paths.h"

namespace fs = std::filesystem;
using fkv::io::SafetensorsCheckpoint;
using fkv::io::SafetensorsFile;
using fkv::io::StDtype;
using fkv::io::StTensor;
using Catch::Matchers::Contains;

namespace {

const std::vector<std::string> kCases = {"llama_g1", "llama_g3_tied_oldrope", "llama3_rope_sharded",
                                         "qwen2_g2_bias", "qwen3_g4_hd16"};

std::string case_dir(const std::string& c) { return fkv::test::test_data("tiny_models/" + c); }

float to_f32(const StTensor& t, int64_t i) {
  switch (t.dtype) {
    case StDtype::F32: {
      float f;
      std::memcpy(&f, t.data + 4 * i, 4);
      return f;
    }
    case StDtype::BF16: {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      uint32_t u = uint32_t(h) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }
    case StDtype::F16: {  // IEEE half -> float, subnormals included
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      const int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
      float v = exp == 0 ? std::ldexp(float(man), -24)
                         : exp == 31 ? (man ? NAN : INFINITY) : std::ldexp(float(man | 1024), exp - 25);
      return sign ? -v : v;
    }
    default: FAIL("to_f32: unexpected dtype " << fkv::io::st_dtype_name(t.dtype));
  }
  return 0;
}

// A unique scratch directory removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("fkv_st_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A raw safetensors file: 8-byte length (header.size() unless overridden), header text, data bytes.
std::string raw_file(const std::string& header, const std::string& data, int64_t len_override = -1) {
  uint64_t n = len_override >= 0 ? static_cast<uint64_t>(len_override) : header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + data;
}

template <typename F>
void expect_format_error(F&& f, const std::string& needle) {
  try {
    f();
    FAIL("expected fkv::FormatError containing '" << needle << "', nothing was thrown");
  } catch (const fkv::FormatError& e) {
    CHECK_THAT(std::string(e.what()), Contains(needle));
  }
}

}  // namespace

TEST_CASE("safetensors: every golden bundle loads with the expected tensors", "[unit][io]") {
  for (const auto& c : kCases) {
    INFO("case " << c);
    const fkv::json g = fkv::read_json_file(case_dir(c) + "/golden.json");
    const fkv::json& ec = g.at("expected_config");
    SafetensorsCheckpoint ck(case_dir(c));
    const int64_t L = ec.at("n_layer"), H = ec.at("hidden"), D = ec.at("head_dim");
    const int64_t hq = ec.at("n_head_q"), hkv = ec.at("n_head_kv"), V = ec.at("n_vocab"), F = ec.at("ffn_hidden");
    const bool tied = ec.at("tie_embeddings"), bias = ec.at("qkv_bias"), qk_norm = ec.at("qk_norm");
    const std::string dt = g.at("weight_dtype");
    const StDtype want = dt == "float32" ? StDtype::F32 : dt == "float16" ? StDtype::F16 : StDtype::BF16;

    const size_t per_layer = 9 + (bias ? 3 : 0) + (qk_norm ? 2 : 0);
    CHECK(ck.names().size() == 2 + (tied ? 0 : 1) + L * per_layer);
    CHECK((ck.find("lm_head.weight") == nullptr) == tied);
    auto shape_of = [&](const std::string& n) { return ck.get(n).shape; };
    CHECK(shape_of("model.embed_tokens.weight") == std::vector<int64_t>{V, H});
    CHECK(shape_of("model.norm.weight") == std::vector<int64_t>{H});
    for (int64_t l = 0; l < L; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      CHECK(shape_of(p + "self_attn.q_proj.weight") == std::vector<int64_t>{hq * D, H});
      CHECK(shape_of(p + "self_attn.k_proj.weight") == std::vector<int64_t>{hkv * D, H});
      CHECK(shape_of(p + "self_attn.v_proj.weight") == std::vector<int64_t>{hkv * D, H});
      CHECK(shape_of(p + "self_attn.o_proj.weight") == std::vector<int64_t>{H, hq * D});
      CHECK(shape_of(p + "mlp.gate_proj.weight") == std::vector<int64_t>{F, H});
      CHECK(shape_of(p + "mlp.down_proj.weight") == std::vector<int64_t>{H, F});
      CHECK(shape_of(p + "input_layernorm.weight") == std::vector<int64_t>{H});
      if (bias) CHECK(shape_of(p + "self_attn.k_proj.bias") == std::vector<int64_t>{hkv * D});
      if (qk_norm) CHECK(shape_of(p + "self_attn.q_norm.weight") == std::vector<int64_t>{D});
    }
    for (const auto& n : ck.names()) {
      INFO(n);
      CHECK(ck.get(n).dtype == want);
      CHECK(ck.get(n).nbytes == static_cast<size_t>(ck.get(n).numel()) * fkv::io::st_dtype_size(want));
    }
    // Stored values: exact fp32 of the stored dtype, recorded by make_golden.py.
    for (auto it = g.at("weight_samples").begin(); it != g.at("weight_samples").end(); ++it) {
      INFO(it.key());
      const StTensor& t = ck.get(it.key());
      CHECK(t.shape == it->at("shape").get<std::vector<int64_t>>());
      const auto first = it->at("first").get<std::vector<double>>();
      for (size_t i = 0; i < first.size(); ++i) CHECK(to_f32(t, static_cast<int64_t>(i)) == static_cast<float>(first[i]));
      CHECK(to_f32(t, t.numel() - 1) == static_cast<float>(it->at("last").get<double>()));
    }
  }
}

TEST_CASE("safetensors: golden.safetensors holds ids, logits and metadata", "[unit][io]") {
  for (const auto& c : kCases) {
    INFO("case " << c);
    const fkv::json g = fkv::read_json_file(case_dir(c) + "/golden.json");
    SafetensorsFile f(case_dir(c) + "/golden.safetensors");
    const int64_t T = g.at("T"), V = g.at("expected_config").at("n_vocab");
    CHECK(f.metadata().at("format_version") == "1");
    CHECK(f.metadata().at("case") == c);
    const StTensor& ids = f.tensors().at("ids");
    CHECK(ids.dtype == StDtype::I64);
    CHECK(ids.shape == std::vector<int64_t>{T});
    const auto want_ids = g.at("ids").get<std::vector<int64_t>>();
    for (int64_t i = 0; i < T; ++i) {
      int64_t v;
      std::memcpy(&v, ids.data + 8 * i, 8);
      CHECK(v == want_ids[i]);
    }
    const StTensor& logits = f.tensors().at("logits");
    CHECK(logits.dtype == StDtype::F32);
    CHECK(logits.shape == std::vector<int64_t>{T, V});
    CHECK(f.tensors().at("rope_inv_freq").shape ==
          std::vector<int64_t>{g.at("expected_config").at("head_dim").get<int64_t>() / 2});
  }
}

TEST_CASE("safetensors: sharded checkpoint through model.safetensors.index.json", "[unit][io]") {
  const std::string dir = case_dir("llama3_rope_sharded");
  SafetensorsCheckpoint ck(dir);
  const fkv::json idx = fkv::read_json_file(dir + "/model.safetensors.index.json");
  const fkv::json& wm = idx.at("weight_map");
  std::set<std::string> shard_names;
  for (auto it = wm.begin(); it != wm.end(); ++it) shard_names.insert(it->get<std::string>());
  REQUIRE(shard_names.size() > 1);
  CHECK(ck.files().size() == shard_names.size());
  CHECK(ck.names().size() == wm.size());
  for (auto it = wm.begin(); it != wm.end(); ++it) {
    const StTensor* t = ck.find(it.key());
    REQUIRE(t != nullptr);
    CHECK(t->dtype == StDtype::BF16);
  }
  // The index file itself is accepted as the path too.
  SafetensorsCheckpoint by_index(dir + "/model.safetensors.index.json");
  CHECK(by_index.names() == ck.names());
  // A single shard opened directly holds only its part.
  SafetensorsCheckpoint one(ck.files().front());
  CHECK(one.names().size() < ck.names().size());
  CHECK(ck.find("no.such.tensor") == nullptr);
  expect_format_error([&] { (void)ck.get("no.such.tensor"); }, "no.such.tensor");
}

TEST_CASE("safetensors: write/read round trip", "[unit][io]") {
  TempDir tmp;
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-8f, -7.0f};
  const std::vector<uint16_t> b = {0x3f80, 0xc000, 0x0001};
  const std::vector<int64_t> ids = {7, -3, 1LL << 40};
  const float scalar = 42.0f;
  const std::string path = tmp.file("rt.safetensors");
  fkv::io::write_safetensors(path,
                             {{"a", StDtype::F32, {2, 3}, a.data()},
                              {"b", StDtype::BF16, {3}, b.data()},
                              {"ids", StDtype::I64, {3}, ids.data()},
                              {"scalar", StDtype::F32, {}, &scalar},
                              {"empty", StDtype::F16, {0, 4}, nullptr}},
                             {{"format", "pt"}, {"note", "round trip"}});
  const std::string bytes = fkv::read_file(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);  // header padded so the data buffer starts 8-byte aligned

  SafetensorsFile f(path);
  CHECK(f.metadata().at("note") == "round trip");
  REQUIRE(f.tensors().size() == 5);
  const StTensor& ta = f.tensors().at("a");
  CHECK(ta.shape == std::vector<int64_t>{2, 3});
  for (int i = 0; i < 6; ++i) CHECK(to_f32(ta, i) == a[i]);
  CHECK(to_f32(f.tensors().at("b"), 0) == 1.0f);
  CHECK(to_f32(f.tensors().at("b"), 1) == -2.0f);
  int64_t v;
  std::memcpy(&v, f.tensors().at("ids").data + 16, 8);
  CHECK(v == (1LL << 40));
  CHECK(f.tensors().at("scalar").shape.empty());
  CHECK(f.tensors().at("scalar").numel() == 1);
  CHECK(to_f32(f.tensors().at("scalar"), 0) == 42.0f);
  CHECK(f.tensors().at("empty").nbytes == 0);

  CHECK_THROWS_AS(fkv::io::write_safetensors(tmp.file("dup.safetensors"),
                                             {{"x", StDtype::F32, {1}, a.data()}, {"x", StDtype::F32, {1}, a.data()}}),
                  fkv::InvalidArgument);
  CHECK_THROWS_AS(fkv::io::write_safetensors(tmp.file("neg.safetensors"), {{"x", StDtype::F32, {-1}, a.data()}}),
                  fkv::InvalidArgument);
}

TEST_CASE("safetensors: unaligned data and unpadded headers are read", "[unit][io]") {
  TempDir tmp;
  // Header padded so that the F32 data starts at an odd file offset (8 + n odd).
  std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  while ((8 + header.size()) % 4 != 1) header += ' ';
  float vals[2] = {0.5f, -1.25f};
  const std::string path = tmp.file("unaligned.safetensors");
  write_bytes(path, raw_file(header, std::string(reinterpret_cast<const char*>(vals), 8)));
  SafetensorsFile f(path);
  const StTensor& t = f.tensors().at("w");
  CHECK(reinterpret_cast<uintptr_t>(t.data) % 4 != 0);
  CHECK(to_f32(t, 0) == 0.5f);
  CHECK(to_f32(t, 1) == -1.25f);
}

TEST_CASE("safetensors: corrupt files throw FormatError naming the problem", "[unit][io]") {
  TempDir tmp;
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data8(8, '\0');
  auto try_file = [&](const std::string& name, const std::string& bytes, const std::string& needle) {
    INFO(name);
    const std::string p = tmp.file(name);
    write_bytes(p, bytes);
    expect_format_error([&] { SafetensorsFile f(p); }, needle);
  };

  try_file("short.safetensors", "abc", "8-byte header length");
  try_file("len_past_eof.safetensors", raw_file("{" + ok_entry + "}", data8, 4096), "past the end");
  try_file("len_over_cap.safetensors", raw_file("{}", "", 200'000'000), "100 MB");
  try_file("bad_json.safetensors", raw_file(R"({"w":{"dtype":"F32",)", data8), "not valid JSON");
  try_file("not_object.safetensors", raw_file("[1,2]", ""), "JSON object");
  try_file("unknown_dtype.safetensors",
           raw_file(R"({"w":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", data8), "unknown dtype 'F7'");
  try_file("size_mismatch.safetensors",
           raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8 + data8), "needs 12 bytes");
  try_file("neg_shape.safetensors",
           raw_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8), "negative dimension");
  try_file("begin_gt_end.safetensors",
           raw_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data8), "begin > end");
  try_file("missing_key.safetensors", raw_file(R"({"w":{"dtype":"F32","shape":[2]}})", data8), "data_offsets");
  try_file("truncated_data.safetensors", raw_file("{" + ok_entry + "}", "1234"), "file truncated?");
  try_file("overlap.safetensors",
           raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", data8 + data8),
           "overlap");
  try_file("duplicate.safetensors", raw_file("{" + ok_entry + "," + ok_entry + "}", data8), "appears twice");
  try_file("bad_metadata.safetensors", raw_file(R"({"__metadata__":{"n":3}})", ""), "__metadata__");

  // A real file cut short: its last tensor now ends past the buffer.
  const std::string real = fkv::read_file(case_dir("llama_g1") + "/model.safetensors");
  try_file("cut_real.safetensors", real.substr(0, real.size() - 100), "data_offsets");
}

TEST_CASE("safetensors: broken checkpoints throw with the file and tensor named", "[unit][io]") {
  TempDir tmp;
  const std::string src = case_dir("llama3_rope_sharded");
  fkv::json idx = fkv::read_json_file(src + "/model.safetensors.index.json");

  SECTION("missing shard") {
    for (const auto& e : fs::directory_iterator(src))
      if (e.path().filename() != "model-00002-of-00005.safetensors") fs::copy(e.path(), tmp.path / e.path().filename());
    expect_format_error([&] { SafetensorsCheckpoint ck(tmp.path.string()); }, "model-00002-of-00005.safetensors");
  }
  SECTION("tensor listed in the index but absent from its shard") {
    for (const auto& e : fs::directory_iterator(src)) fs::copy(e.path(), tmp.path / e.path().filename());
    idx["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00005.safetensors";
    write_bytes(tmp.file("model.safetensors.index.json"), idx.dump());
    expect_format_error([&] { SafetensorsCheckpoint ck(tmp.path.string()); }, "model.layers.9.mlp.up_proj.weight");
  }
  SECTION("index without weight_map") {
    write_bytes(tmp.file("model.safetensors.index.json"), R"({"metadata":{}})");
    expect_format_error([&] { SafetensorsCheckpoint ck(tmp.path.string()); }, "weight_map");
  }
  SECTION("directory without weights") {
    expect_format_error([&] { SafetensorsCheckpoint ck(tmp.path.string()); }, "model.safetensors");
  }
  SECTION("missing path") {
    CHECK_THROWS_AS(SafetensorsCheckpoint(tmp.file("nope.safetensors")), fkv::Error);
  }
}
