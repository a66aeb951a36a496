#include "foresightkv/trace/trace_file.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>

#include "foresightkv/core/error.h"
#include "foresightkv/io/safetensors.h"

namespace fkv::trace {
namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::vector<int32_t> ids_from_json(const json& a, const std::string& what) {
  FKV_CHECK_FORMAT(a.is_array(), "{} must be an array of token ids", what);
  std::vector<int32_t> out;
  out.reserve(a.size());
  for (const auto& x : a) {
    FKV_CHECK_FORMAT(x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() < (int64_t{1} << 31),
                     "{} holds a non-id value {}", what, x.dump());
    out.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  return out;
}

TraceSet read_jsonl(const std::string& path) {
  std::ifstream in(path);
  FKV_CHECK_ARG(in.good(), "cannot open trace file {}", path);
  TraceSet set;
  set.header = json{{"source", path}, {"format", "jsonl"}};
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw FormatError(fmt::format("{}:{}: invalid JSON ({}); expected {{\"prompt_ids\": [...], \"response_ids\": [...]}}",
                                    path, lineno, e.what()));
    }
    FKV_CHECK_FORMAT(j.is_object() && j.contains("prompt_ids") && j.contains("response_ids"),
                     "{}:{}: expected an object with \"prompt_ids\" and \"response_ids\"", path, lineno);
    Trace t;
    t.tokens = ids_from_json(j["prompt_ids"], fmt::format("{}:{} prompt_ids", path, lineno));
    auto resp = ids_from_json(j["response_ids"], fmt::format("{}:{} response_ids", path, lineno));
    FKV_CHECK_FORMAT(!t.tokens.empty() && !resp.empty(), "{}:{}: prompt_ids and response_ids must be non-empty",
                     path, lineno);
    t.prompt_len = static_cast<int64_t>(t.tokens.size());
    t.tokens.insert(t.tokens.end(), resp.begin(), resp.end());
    t.id = j.contains("id") ? (j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump())
                            : std::to_string(set.traces.size());
    for (auto it = j.begin(); it != j.end(); ++it)
      if (it.key() != "prompt_ids" && it.key() != "response_ids") t.meta[it.key()] = it.value();
    set.traces.push_back(std::move(t));
  }
  FKV_CHECK_FORMAT(!set.traces.empty(), "{}: no traces (empty file?)", path);
  // fkv-eval generate writes samples in finish order, which depends on the schedule: order its rows (every row
  // with integer problem_index and sample_index) by (problem, sample). Other files keep their line order.
  auto key = [](const Trace& t) {
    return std::make_pair(t.meta.at("problem_index").get<int64_t>(), t.meta.at("sample_index").get<int64_t>());
  };
  const bool generated = std::all_of(set.traces.begin(), set.traces.end(), [](const Trace& t) {
    return t.meta.contains("problem_index") && t.meta["problem_index"].is_number_integer() &&
           t.meta.contains("sample_index") && t.meta["sample_index"].is_number_integer();
  });
  if (generated)
    std::stable_sort(set.traces.begin(), set.traces.end(), [&](const Trace& a, const Trace& b) { return key(a) < key(b); });
  return set;
}

at::Tensor load_tensor(const io::StTensor& t, const std::string& path) {
  at::ScalarType dt;
  switch (t.dtype) {
    case io::StDtype::F32: dt = at::kFloat; break;
    case io::StDtype::I32: dt = at::kInt; break;
    case io::StDtype::I64: dt = at::kLong; break;
    case io::StDtype::I16: dt = at::kShort; break;
    default: throw FormatError(fmt::format("{}: tensor {} has unsupported dtype {}", path, t.name, io::st_dtype_name(t.dtype)));
  }
  at::Tensor out = at::empty(t.shape, dt);
  FKV_CHECK_FORMAT(static_cast<size_t>(out.nbytes()) == t.nbytes, "{}: tensor {} size mismatch", path, t.name);
  std::memcpy(out.data_ptr(), t.data, t.nbytes);
  return out;
}

}  // namespace

const GoldenLabels* Trace::find_labels(int64_t budget, int64_t window) const {
  for (const auto& l : labels)
    if (l.budget == budget && l.window == window) return &l;
  return nullptr;
}

TraceSet read_trace_set(const std::string& path) {
  if (!ends_with(path, ".safetensors")) return read_jsonl(path);
  io::SafetensorsFile f(path);
  auto mit = f.metadata().find("fkv_trace");
  FKV_CHECK_FORMAT(mit != f.metadata().end(),
                   "{}: not an fkv trace file (safetensors metadata has no \"fkv_trace\" entry)", path);
  json meta;
  try {
    meta = json::parse(mit->second);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: fkv_trace metadata is not valid JSON ({})", path, e.what()));
  }
  FKV_CHECK_FORMAT(meta.is_object() && meta.value("format", "") == "fkv-trace", "{}: metadata format is not fkv-trace",
                   path);
  const int version = meta.value("version", -1);
  FKV_CHECK_FORMAT(version == kTraceFormatVersion,
                   "{}: trace format version {} but this build reads version {}; regenerate the traces with this fkv",
                   path, version, kTraceFormatVersion);
  FKV_CHECK_FORMAT(meta.contains("traces") && meta["traces"].is_array(), "{}: metadata has no traces list", path);
  TraceSet set;
  set.header = meta.value("header", json::object());
  const auto& T = f.tensors();
  auto get = [&](const std::string& name) -> const io::StTensor& {
    auto it = T.find(name);
    FKV_CHECK_FORMAT(it != T.end(), "{}: missing tensor {} (truncated or edited file?)", path, name);
    return it->second;
  };
  const int64_t n_layer = set.header.value("model", json::object()).value("n_layer", int64_t{-1});
  const int64_t n_kv = set.header.value("model", json::object()).value("n_head_kv", int64_t{-1});
  int64_t i = 0;
  for (const auto& m : meta["traces"]) {
    Trace t;
    const std::string p = fmt::format("trace.{}.", i);
    t.id = m.value("id", std::to_string(i));
    t.prompt_len = m.value("prompt_len", int64_t{-1});
    t.meta = m.value("meta", json::object());
    at::Tensor tok = load_tensor(get(p + "tokens"), path);
    FKV_CHECK_FORMAT(tok.dim() == 1 && tok.scalar_type() == at::kInt, "{}: {}tokens must be int32 [T]", path, p);
    t.tokens.assign(tok.data_ptr<int32_t>(), tok.data_ptr<int32_t>() + tok.numel());
    const int64_t Tn = t.length();
    FKV_CHECK_FORMAT(t.prompt_len >= 1 && t.prompt_len < Tn, "{}: trace {} prompt_len {} outside [1, {})", path, i,
                     t.prompt_len, Tn);
    if (T.count(p + "nll")) {
      t.nll = load_tensor(get(p + "nll"), path);
      t.entropy = load_tensor(get(p + "entropy"), path);
      FKV_CHECK_FORMAT(t.nll.dim() == 1 && t.nll.size(0) == Tn - 1 && t.entropy.sizes() == t.nll.sizes(),
                       "{}: trace {} nll/entropy must be [T-1 = {}]", path, i, Tn - 1);
    }
    for (const auto& lb : m.value("labels", json::array())) {
      GoldenLabels g;
      g.budget = lb.at("budget").get<int64_t>();
      g.window = lb.at("window").get<int64_t>();
      const std::string q = fmt::format("{}golden.{}x{}.", p, g.budget, g.window);
      g.drops = load_tensor(get(q + "drops"), path);
      g.scores = load_tensor(get(q + "scores"), path);
      FKV_CHECK_FORMAT(g.drops.dim() == 4 && g.drops.size(3) == g.window && g.scores.dim() == 4 &&
                           g.scores.size(3) == g.budget && g.scores.size(0) == g.drops.size(0) &&
                           g.scores.size(1) == g.drops.size(1) && g.scores.size(2) == g.drops.size(2),
                       "{}: trace {} labels {}x{} have inconsistent shapes", path, i, g.budget, g.window);
      if (n_layer > 0) FKV_CHECK_FORMAT(g.drops.size(0) == n_layer, "{}: trace {} labels cover {} layers, model has {}", path, i, g.drops.size(0), n_layer);
      if (n_kv > 0) FKV_CHECK_FORMAT(g.drops.size(2) == n_kv, "{}: trace {} labels cover {} KV heads, model has {}", path, i, g.drops.size(2), n_kv);
      t.labels.push_back(std::move(g));
    }
    set.traces.push_back(std::move(t));
    ++i;
  }
  return set;
}

void write_trace_set(const std::string& path, const TraceSet& set) {
  FKV_CHECK_ARG(ends_with(path, ".safetensors"), "trace output {} must end in .safetensors", path);
  std::vector<io::StWriteTensor> ts;
  std::vector<at::Tensor> keep;  // owns contiguous copies while writing
  json traces = json::array();
  auto add = [&](const std::string& name, at::Tensor t, io::StDtype dt) {
    t = t.contiguous();
    keep.push_back(t);
    ts.push_back({name, dt, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()), t.data_ptr()});
  };
  for (size_t i = 0; i < set.traces.size(); ++i) {
    const Trace& t = set.traces[i];
    const std::string p = fmt::format("trace.{}.", i);
    add(p + "tokens", at::tensor(std::vector<int32_t>(t.tokens), at::kInt), io::StDtype::I32);
    if (t.nll.defined()) {
      add(p + "nll", t.nll.to(at::kFloat), io::StDtype::F32);
      add(p + "entropy", t.entropy.to(at::kFloat), io::StDtype::F32);
    }
    json labels = json::array();
    for (const auto& g : t.labels) {
      const std::string q = fmt::format("{}golden.{}x{}.", p, g.budget, g.window);
      add(q + "drops", g.drops.to(at::kInt), io::StDtype::I32);
      add(q + "scores", g.scores.to(at::kFloat), io::StDtype::F32);
      labels.push_back({{"budget", g.budget}, {"window", g.window}, {"steps", g.drops.size(1)}});
    }
    traces.push_back({{"id", t.id}, {"prompt_len", t.prompt_len}, {"length", t.length()}, {"labels", labels},
                      {"meta", t.meta}});
  }
  json meta = {{"format", "fkv-trace"}, {"version", kTraceFormatVersion}, {"header", set.header}, {"traces", traces}};
  io::write_safetensors(path, ts, {{"fkv_trace", meta.dump()}});
}

}  // namespace fkv::trace
