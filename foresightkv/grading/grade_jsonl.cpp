// JSONL grading for `fkv-eval grade` (see grade_jsonl.h). Objects are parsed as nlohmann::ordered_json so the
// output keeps each input object's key order; blank lines (and a trailing '\r') are ignored.
#include "foresightkv/grading/grade_jsonl.h"

#include <fstream>

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/json.h"

namespace fkv::grading {
namespace {

using ojson = nlohmann::ordered_json;

// The answer as Python's str() would print the value json.loads gives (AMC answers are numbers: 27.0).
std::string answer_text(const ojson& a, const std::string& where) {
  if (a.is_string()) return a.get<std::string>();
  if (a.is_number_integer() || a.is_number_unsigned() || a.is_number_float()) return a.dump();
  FKV_THROW_KIND(2, "{}: \"answer\" must be a string or a number, got {} ({}); store the reference answer as "
                 "text, e.g. \"answer\": \"025\"",
                 where, a.type_name(), a.dump().substr(0, 80));
}

// Parser messages quote the bytes they stopped at; escape non-ASCII bytes so the message stays valid text
// whatever the input holds.
std::string printable(std::string_view msg) {
  std::string out;
  for (char c : msg) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x80 || (b < 0x20 && c != '\n'))
      out += fmt::format("\\x{:02x}", b);
    else
      out.push_back(c);
  }
  return out;
}

}  // namespace

std::string GradeSummary::to_json_line() const {
  ojson j;
  j["n"] = n;
  if (n > 0) {
    j["accuracy"] = static_cast<double>(correct) / static_cast<double>(n);
    j["strict_accuracy"] = static_cast<double>(strict_correct) / static_cast<double>(n);
  } else {
    j["accuracy"] = nullptr;
    j["strict_accuracy"] = nullptr;
  }
  return j.dump();
}

GradeSummary grade_jsonl(const GradeJsonlOptions& o) {
  FKV_CHECK_ARG(!o.input.empty() && !o.output.empty(), "grade: both an input and an output path are needed");
  FKV_CHECK_ARG(!o.field.empty(), "grade: the response field name is empty; use e.g. --field response");
  std::ifstream f(o.input, std::ios::binary);
  FKV_CHECK_ARG(f.good(), "cannot open input '{}': check the path (expected a JSONL file, one object per line)",
                o.input);
  GradeSummary summary;
  std::string out, line;
  int64_t line_no = 0;
  while (std::getline(f, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = fmt::format("'{}' line {}", o.input, line_no);
    ojson j;
    try {
      j = ojson::parse(line);
    } catch (const ojson::exception& e) {
      FKV_THROW_KIND(2, "{}: invalid JSON ({}); expected one JSON object per line in UTF-8", where,
                     printable(e.what()));
    }
    FKV_CHECK_FORMAT(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
    FKV_CHECK_FORMAT(j.contains(o.field) && j[o.field].is_string(),
                     "{}: expected a string field \"{}\" with the model response{}", where, o.field,
                     j.contains(o.field) ? fmt::format(", got {}", j[o.field].type_name()) : "; pass --field NAME if "
                                                                                           "it has another name");
    FKV_CHECK_FORMAT(j.contains("answer"), "{}: missing field \"answer\" (the reference answer)", where);
    const std::string answer = answer_text(j["answer"], where);
    GradeResult g;
    try {
      g = grade(j[o.field].get<std::string>(), answer, o.dataset);
    } catch (const Error& e) {
      FKV_THROW_KIND(2, "{}: {}", where, e.what());
    }
    j["extracted"] = g.extracted;
    j["correct"] = g.correct;
    j["strict_extracted"] = g.strict_extracted;
    j["strict_correct"] = g.strict_correct;
    out += j.dump(-1, ' ', false, ojson::error_handler_t::replace);
    out += '\n';
    ++summary.n;
    summary.correct += g.correct;
    summary.strict_correct += g.strict_correct;
  }
  FKV_CHECK_ARG(!f.bad(), "error reading '{}' after line {}", o.input, line_no);
  write_file_atomic(o.output, out);
  return summary;
}

}  // namespace fkv::grading
