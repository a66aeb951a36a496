// io/gguf: metadata accessors, alignment, the real SmolLM2 file (when fetched), and corrupt inputs.
// Corrupt files are made in a temp dir from the committed fixture; every one must give a
// fkv::FormatError that names the file, never a crash, a hang or a huge allocation.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/io/gguf.h"
#include "support/paths.h"

namespace io = fkv::io;
using io::GgmlType;
using io::GgufFile;
using io::GgufValue;

namespace {

// Temp dir removed at scope exit.
struct TempDir {
  std::filesystem::path dir;
  TempDir() {
    dir = std::filesystem::temp_directory_path() / ("fkv_gguf_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string p = (dir / name).string();
    std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return p;
  }
};

// Position just after the GGUF string `s` (u64 length + bytes) in `b`; it must occur exactly once.
size_t after_string(const std::string& b, const std::string& s) {
  std::string pat(8, '\0');
  const uint64_t n = s.size();
  std::memcpy(pat.data(), &n, 8);
  pat += s;
  const size_t at = b.find(pat);
  REQUIRE(at != std::string::npos);
  REQUIRE(b.find(pat, at + 1) == std::string::npos);
  return at + pat.size();
}

template <class T>
void put(std::string& b, size_t pos, T v) {
  REQUIRE(pos + sizeof(T) <= b.size());
  std::memcpy(b.data() + pos, &v, sizeof(T));
}
template <class T>
T get(const std::string& b, size_t pos) {
  T v;
  std::memcpy(&v, b.data() + pos, sizeof(T));
  return v;
}

// Field positions of a 2-D tensor info: n_dims, ne[0], ne[1], type, offset.
struct InfoPos {
  size_t n_dims, ne0, ne1, type, offset;
};
InfoPos info_pos(const std::string& b, const std::string& name) {
  const size_t p = after_string(b, name);
  REQUIRE(get<uint32_t>(b, p) == 2);
  return {p, p + 4, p + 12, p + 20, p + 24};
}

// Opening `bytes` must throw FormatError whose message names the file and contains `expect`.
void expect_format_error(const TempDir& tmp, const std::string& case_name, const std::string& bytes,
                         const std::string& expect) {
  INFO("case: " << case_name);
  const std::string path = tmp.write(case_name + ".gguf", bytes);
  try {
    GgufFile f(path);
    FAIL("no error for " << case_name);
  } catch (const fkv::FormatError& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find(expect) != std::string::npos);
  }
}

std::string fixture_bytes() { return fkv::read_file(fkv::test::test_data("gguf/quant_types.gguf")); }

}  // namespace

TEST_CASE("GGUF metadata: every value type and the accessors", "[unit][quant][gguf]") {
  const GgufFile f(fkv::test::test_data("gguf/quant_types.gguf"));
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  CHECK(f.get("general.architecture").as_string() == "fkvtest");
  CHECK(f.get("fkv.u8").as_int() == 200);
  CHECK(f.get("fkv.i8").as_int() == -100);
  CHECK(f.get("fkv.u16").as_int() == 60000);
  CHECK(f.get("fkv.i16").as_int() == -30000);
  CHECK(f.get("fkv.u32").as_int() == 4000000000LL);
  CHECK(f.get("fkv.i32").as_int() == -2000000000LL);
  CHECK(f.get("fkv.u64").as_int() == (int64_t(1) << 40));
  CHECK(f.get("fkv.i64").as_int() == -(int64_t(1) << 40));
  CHECK(f.get("fkv.u32").type == GgufValue::Type::U32);
  CHECK(f.get("fkv.u8").is_int());
  CHECK_FALSE(f.get("fkv.f32").is_int());
  CHECK_FALSE(f.get("fkv.bool").is_int());
  CHECK(f.get("fkv.f32").as_float() == 0.25);
  CHECK(f.get("fkv.f64").as_float() == -1.5e300);
  CHECK(f.get("fkv.i16").as_float() == -30000.0);
  CHECK(f.get("fkv.bool").as_bool());
  CHECK(f.get("fkv.bool").as_int() == 1);
  CHECK(f.get("fkv.string").as_string() == "h\xc3\xa9llo w\xc3\xb6rld");
  const auto& strs = f.get("fkv.strings").as_array();
  REQUIRE(strs.size() == 4);
  CHECK(strs[0].as_string() == "a");
  CHECK(strs[1].as_string().empty());
  CHECK(strs[2].as_string() == "\xc4\xa0the");
  CHECK(strs[3].as_string() == "c d");
  const auto& ints = f.get("fkv.ints").as_array();
  REQUIRE(ints.size() == 3);
  CHECK(ints[1].type == GgufValue::Type::I32);
  CHECK(ints[1].as_int() == -2);
  const auto& nested = f.get("fkv.nested").as_array();
  REQUIRE(nested.size() == 2);
  CHECK(nested[0].as_array().size() == 2);
  CHECK(nested[0].as_array()[1].as_int() == 2);
  CHECK(nested[1].as_array()[0].as_int() == 3);

  CHECK(f.has("fkv.u8"));
  CHECK_FALSE(f.has("fkv.missing"));
  CHECK_THROWS_AS(f.get("fkv.missing"), fkv::FormatError);
  CHECK_THROWS_AS(f.get("fkv.string").as_int(), fkv::FormatError);
  CHECK_THROWS_AS(f.get("fkv.u8").as_string(), fkv::FormatError);
  CHECK_THROWS_AS(f.get("fkv.f32").as_int(), fkv::FormatError);
  CHECK_THROWS_AS(f.get("fkv.u8").as_array(), fkv::FormatError);
  CHECK_THROWS_AS(f.get("fkv.strings").as_float(), fkv::FormatError);
  GgufValue big;
  big.type = GgufValue::Type::U64;
  big.v = uint64_t(1) << 63;
  CHECK_THROWS_AS(big.as_int(), fkv::FormatError);
}

TEST_CASE("GGUF tensors: shapes in HF order, lookup, data pointers", "[unit][quant][gguf]") {
  const GgufFile f(fkv::test::test_data("gguf/quant_types.gguf"));
  CHECK(f.tensors().size() == 30);  // 15 types, each with its .expected
  const io::GgufTensorInfo& t = f.tensor("t.q4_1");
  CHECK(t.type == GgmlType::Q4_1);
  CHECK(t.ne == std::vector<int64_t>{96, 5});
  CHECK(t.shape() == std::vector<int64_t>{5, 96});
  CHECK(t.n_elements() == 480);
  CHECK(t.nbytes == 5 * 3 * 20);
  CHECK(t.offset % 32 == 0);
  CHECK(f.find_tensor("t.q6_k") != nullptr);
  CHECK(f.find_tensor("nope") == nullptr);
  CHECK_THROWS_AS(f.tensor("nope"), fkv::FormatError);
  const io::GgufTensorInfo& k = f.tensor("t.q6_k");
  CHECK(k.shape() == std::vector<int64_t>{3, 512});
  CHECK(k.nbytes == 3 * 2 * 210);
}

TEST_CASE("GGUF custom general.alignment", "[unit][quant][gguf]") {
  const GgufFile f(fkv::test::test_data("gguf/align64.gguf"));
  CHECK(f.alignment() == 64);
  const std::string raw = fkv::read_file(fkv::test::test_data("gguf/align64.gguf"));
  for (const auto& t : f.tensors()) {
    CHECK(t.offset % 64 == 0);
    // the data section itself starts on the alignment: find the tensor's bytes in the file
    const size_t at = raw.find(std::string(reinterpret_cast<const char*>(t.data), t.nbytes));
    REQUIRE(at != std::string::npos);
    CHECK(at % 64 == 0);
  }
  const std::vector<float> a = f.dequantize(f.tensor("a"));
  REQUIRE(a.size() == 15);
  for (int i = 0; i < 15; ++i) CHECK(a[size_t(i)] == float(i) / 4);
  CHECK(f.tensor("b").type == GgmlType::Q8_0);
  CHECK(f.dequantize(f.tensor("b")).size() == 128);
}

TEST_CASE("GGUF corrupt headers and metadata throw FormatError", "[unit][quant][gguf]") {
  const TempDir tmp;
  const std::string good = fixture_bytes();
  REQUIRE_NOTHROW(GgufFile(tmp.write("good.gguf", good)));

  expect_format_error(tmp, "empty", "", "fewer than the 4-byte magic");
  std::string b = good;
  b[0] = 'X';
  expect_format_error(tmp, "bad_magic", b, "expected magic \"GGUF\"");
  for (uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
    b = good;
    put<uint32_t>(b, 4, v);
    expect_format_error(tmp, "version_" + std::to_string(v), b, "GGUF version " + std::to_string(v));
  }
  for (uint64_t n : {uint64_t(1) << 40, ~uint64_t(0), uint64_t(2000)}) {
    b = good;
    put<uint64_t>(b, 8, n);
    expect_format_error(tmp, "tensor_count_" + std::to_string(n), b, "tensors");
  }
  for (uint64_t n : {uint64_t(1) << 62, ~uint64_t(0)}) {
    b = good;
    put<uint64_t>(b, 16, n);
    expect_format_error(tmp, "kv_count_" + std::to_string(n), b, "key/value");
  }
  // plausible but wrong count: the tensor infos are then parsed as metadata until something fails
  b = good;
  put<uint64_t>(b, 16, 200);
  expect_format_error(tmp, "kv_count_200", b, "");
  // a string value whose length runs past the end of the file
  const size_t str_len = after_string(good, "fkv.string") + 4;
  REQUIRE(get<uint64_t>(good, str_len) == std::string("h\xc3\xa9llo w\xc3\xb6rld").size());
  for (uint64_t n : {uint64_t(good.size()), ~uint64_t(0)}) {
    b = good;
    put<uint64_t>(b, str_len, n);
    expect_format_error(tmp, "string_len_" + std::to_string(n), b, "has length");
  }
  // a key length past the end of the file
  b = good;
  put<uint64_t>(b, after_string(good, "general.architecture") - 20 - 8, uint64_t(1) << 50);
  expect_format_error(tmp, "key_len", b, "has length");
  // arrays: absurd element counts, a bad element type, nesting
  const size_t arr = after_string(good, "fkv.strings");  // u32 9, u32 elem type, u64 count
  REQUIRE(get<uint32_t>(good, arr) == 9);
  for (uint64_t n : {uint64_t(1) << 40, uint64_t(good.size() / 8)}) {
    b = good;
    put<uint64_t>(b, arr + 8, n);
    expect_format_error(tmp, "array_count_" + std::to_string(n), b, "is an array of");
  }
  b = good;
  put<uint32_t>(b, arr + 4, 13);
  expect_format_error(tmp, "array_elem_type", b, "array element type 13");
  const size_t nested = after_string(good, "fkv.nested");
  REQUIRE(get<uint32_t>(good, nested + 4) == 9);
  b = good;
  put<uint64_t>(b, nested + 20, uint64_t(1) << 60);  // count of the first inner array (after outer count, inner type)
  expect_format_error(tmp, "nested_count", b, "is an array of");
  // value type, bool byte, duplicate keys
  b = good;
  put<uint32_t>(b, after_string(good, "fkv.u8"), 13);
  expect_format_error(tmp, "value_type", b, "value type 13");
  b = good;
  const size_t boolv = after_string(good, "fkv.bool");
  REQUIRE(get<uint32_t>(good, boolv) == 7);
  b[boolv + 4] = 2;
  expect_format_error(tmp, "bool_value", b, "expected 0 or 1");
  b = good;
  const size_t k16 = after_string(good, "fkv.u16");
  std::memcpy(b.data() + k16 - 3, "u32", 3);
  expect_format_error(tmp, "duplicate_key", b, "appears twice");
}

TEST_CASE("GGUF corrupt tensor infos throw FormatError", "[unit][quant][gguf]") {
  const TempDir tmp;
  const std::string good = fixture_bytes();
  const InfoPos q41 = info_pos(good, "t.q4_1");
  REQUIRE(get<uint64_t>(good, q41.ne0) == 96);
  REQUIRE(get<uint32_t>(good, q41.type) == 3);
  std::string b;

  for (uint32_t nd : {0u, 5u, 1000u}) {
    b = good;
    put<uint32_t>(b, q41.n_dims, nd);
    expect_format_error(tmp, "n_dims_" + std::to_string(nd), b, "n_dims " + std::to_string(nd));
  }
  b = good;
  put<uint64_t>(b, q41.ne0, 80);
  expect_format_error(tmp, "ne0_block", b, "not a multiple of the Q4_1 block size 32");
  b = good;
  put<uint64_t>(b, q41.ne0, uint64_t(1) << 40);
  put<uint64_t>(b, q41.ne1, uint64_t(1) << 40);
  expect_format_error(tmp, "ne_overflow", b, "overflows");
  b = good;
  put<uint64_t>(b, q41.ne1, ~uint64_t(0));
  expect_format_error(tmp, "ne_negative", b, "negative");
  b = good;
  put<uint64_t>(b, q41.ne1, 5000);
  expect_format_error(tmp, "extent_beyond_eof", b, "truncated: tensor 't.q4_1' needs bytes");
  for (uint32_t ty : {99u, 16u, 4u}) {
    b = good;
    put<uint32_t>(b, q41.type, ty);
    expect_format_error(tmp, "type_" + std::to_string(ty), b, "ggml type id " + std::to_string(ty));
  }
  b = good;
  put<uint32_t>(b, q41.type, 21);
  expect_format_error(tmp, "type_iq3_s", b, "IQ3_S, not supported by fkv");
  b = good;
  put<uint64_t>(b, q41.offset, get<uint64_t>(good, q41.offset) + 16);
  expect_format_error(tmp, "misaligned_offset", b, "not a multiple of the alignment 32");
  b = good;
  put<uint64_t>(b, q41.offset, uint64_t(1) << 62);
  expect_format_error(tmp, "offset_beyond_eof", b, "truncated: tensor 't.q4_1' needs bytes");
  b = good;
  put<uint64_t>(b, q41.offset, ~uint64_t(31));
  expect_format_error(tmp, "offset_wraps", b, "truncated: tensor 't.q4_1' needs bytes");
  b = good;
  put<uint64_t>(b, q41.offset, get<uint64_t>(good, info_pos(good, "t.q4_0").offset));
  expect_format_error(tmp, "overlap", b, "overlaps");
  b = good;
  const size_t name_end = after_string(good, "t.q4_0");
  b[name_end - 1] = '1';  // rename t.q4_0 -> t.q4_1
  expect_format_error(tmp, "duplicate_tensor", b, "tensor name 't.q4_1' appears twice");
  b = good;
  put<uint64_t>(b, name_end - 6 - 8, 100);  // name length 100 > 63 (and swallows the next fields)
  expect_format_error(tmp, "long_name", b, "name of 100 bytes");
}

TEST_CASE("GGUF truncated anywhere throws FormatError", "[unit][quant][gguf]") {
  const TempDir tmp;
  const std::string good = fixture_bytes();
  const GgufFile f(fkv::test::test_data("gguf/quant_types.gguf"));
  const io::GgufTensorInfo& first = f.tensors()[0];
  REQUIRE(first.offset == 0);
  const size_t data_start = good.find(std::string(reinterpret_cast<const char*>(first.data), first.nbytes));
  REQUIRE(data_start != std::string::npos);
  REQUIRE(data_start % 32 == 0);
  std::vector<size_t> cuts;
  for (size_t n = 0; n <= data_start; ++n) cuts.push_back(n);  // every byte of header, metadata, infos
  for (size_t n : {data_start + 1, data_start + 100, good.size() / 2, good.size() - 1}) cuts.push_back(n);
  for (size_t n : cuts) {
    INFO("truncated to " << n << " of " << good.size() << " bytes");
    const std::string path = tmp.write("cut.gguf", good.substr(0, n));
    bool format_error = false;
    try {
      GgufFile g(path);
    } catch (const fkv::FormatError& e) {
      format_error = std::string(e.what()).find(path) != std::string::npos;
    }
    REQUIRE(format_error);
  }
}

TEST_CASE("GGUF: the real SmolLM2-135M-Instruct Q4_1 file", "[unit][quant][gguf][model]") {
  const std::string path = fkv::test::smollm2_gguf();
  if (!fkv::file_exists(path)) {
    WARN("skipped: " << path << " not found (scripts/fetch_model.sh fetches it)");
    return;
  }
  const GgufFile f(path);
  CHECK(f.version() == 3);
  CHECK(f.tensors().size() == 272);
  CHECK(f.get("general.architecture").as_string() == "llama");
  int n_q41 = 0, n_f32 = 0, n_other = 0;
  for (const auto& t : f.tensors()) {
    if (t.type == GgmlType::Q4_1)
      ++n_q41;
    else if (t.type == GgmlType::F32)
      ++n_f32;
    else
      ++n_other;
  }
  CHECK(n_q41 == 210);
  CHECK(n_f32 == 61);
  CHECK(n_other == 1);
  const auto& emb = f.tensor("token_embd.weight");
  CHECK(emb.type == GgmlType::Q8_0);
  CHECK(emb.shape() == std::vector<int64_t>{49152, 576});
  CHECK(f.find_tensor("output.weight") == nullptr);
  CHECK(f.tensor("blk.0.ffn_down.weight").shape() == std::vector<int64_t>{576, 1536});
  CHECK(f.tensor("blk.0.attn_k.weight").shape() == std::vector<int64_t>{192, 576});
  CHECK(f.get("llama.embedding_length").as_int() == 576);
  CHECK(f.get("llama.block_count").as_int() == 30);
  CHECK(f.get("llama.attention.head_count_kv").as_int() == 3);
  CHECK(f.get("llama.rope.freq_base").as_float() == 100000.0);
  CHECK(f.get("tokenizer.ggml.model").as_string() == "gpt2");
  CHECK(f.get("tokenizer.ggml.merges").as_array().size() == 48900);
  CHECK(f.get("tokenizer.ggml.tokens").as_array().size() == 49152);
  CHECK(f.get("tokenizer.ggml.bos_token_id").as_int() == 1);
  CHECK(f.get("tokenizer.ggml.eos_token_id").as_int() == 2);
  const std::vector<float> norm = f.dequantize(f.tensor("output_norm.weight"));
  CHECK(norm.size() == 576);
  for (float v : norm) CHECK(std::isfinite(v));
}
