// Grading of a JSONL file of model responses (the work behind `fkv-eval grade`): each non-blank input line
// is a JSON object with a response field (a string) and "answer" (a string or a number); each output line is
// the same object, keys in their input order, plus "extracted", "correct", "strict_extracted" and
// "strict_correct" (grader.h). Lines keep their order. The output is written atomically, and only when every
// line graded: a malformed line throws FormatError naming the file and the line number.
#pragma once
#include <cstdint>
#include <string>

#include "foresightkv/grading/grader.h"

namespace fkv::grading {

struct GradeJsonlOptions {
  std::string input;                 // JSONL path
  std::string output;                // JSONL path (written atomically)
  Dataset dataset = Dataset::Math;   // ground-truth parsing and GPQA letter handling
  std::string field = "response";    // key of the model response in each input object
};

struct GradeSummary {
  int64_t n = 0;
  int64_t correct = 0;
  int64_t strict_correct = 0;
  /// {"n": n, "accuracy": correct / n, "strict_accuracy": strict_correct / n}; the accuracies are fractions
  /// in [0, 1] (the paper's acc is 100x) and null when n == 0.
  std::string to_json_line() const;
};

GradeSummary grade_jsonl(const GradeJsonlOptions& options);

}  // namespace fkv::grading
