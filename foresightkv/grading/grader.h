// Answer extraction and grading of the ForesightKV evaluation protocol (foresightkv-spec.md §G.4): a C++
// port of the official Python grader (Qwen2.5-Math `parser.py` / `grader.py`, as run by ForesightKV's
// eval_math.py / eval_gpqa.py / evaluate.py), with a small numeric expression evaluator in place of sympy.
// docs/grading.md lists the rules and every known difference from the Python code.
//
// Pipeline for one response (grade()):
//   1. cut at the first stop word (</s>, <|im_end|>, <|endoftext|>, "\n题目："), then trim;
//   2. extract_answer (official rule order) and strip_string once more (the official run_execute does);
//   3. GPQA only: a prediction that is not a letter falls back to choice_answer_clean(text);
//   4. parse_ground_truth(answer, dataset);
//   5. math_equal(prediction, ground truth).
// The strict score repeats 2 and 5 with extract_boxed_strict: only the last complete \boxed{...} counts.
//
// All functions work on UTF-8 text. Python's Unicode-aware regex classes (\w, \W, \b) are approximated:
// ASCII is exact, non-ASCII code points count as word characters except common symbol and punctuation
// blocks (°, ×, ÷, ∏, €, ™, arrows, math operators, CJK punctuation, ...).
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace fkv::grading {

enum class Dataset { Math, Gsm8k, Aime24, Aime25, Amc23, Gpqa };

/// "math", "gsm8k", "aime24", "aime25", "amc23", "gpqa" (also "gsm8k_test"); throws InvalidArgument naming
/// the accepted names otherwise.
Dataset parse_dataset(std::string_view name);
std::string dataset_name(Dataset ds);

/// Text before the first stop word, trimmed when one was found (eval_math.py's loop over stop words).
std::string apply_stop_words(std::string_view text);

/// The official extract_answer for the math datasets, including its final strip_string:
///   "final answer is $X$. I hope" -> X; else the content after the last "boxed" (brace-balanced when it
///   starts with '{', unclosed braces keep everything; otherwise up to the next '$'); else after the last
///   "he answer is" / "final answer is"; else after the first "答案是" up to a blank line; else the last
///   number (-?\d*\.?\d+) after removing commas; else "".
std::string extract_answer(std::string_view text);

/// The raw content of the last "\boxed{...}" when its braces are balanced, else nullopt (also for
/// "\boxed 5" and a truncated "\boxed{12"). No normalisation.
std::optional<std::string> extract_boxed_strict(std::string_view text);

/// The strict counterpart of extract_answer: the last complete \boxed{...} through the same post-processing
/// and strip_string, or "" when there is none.
std::string extract_answer_strict(std::string_view text);

/// The official strip_string normalisation (see docs/grading.md for the full list of steps).
std::string strip_string(std::string_view s, bool skip_unit = false);

/// parser.py's choice_answer_clean: after the last "answer is"/"choice is" take the first standalone
/// A-E letter (case-insensitive), otherwise the last one; with no letter the cleaned text itself.
std::string choice_answer_clean(std::string_view text);

/// grader.py's parse_digits: Python float() of the text with commas removed, or of "N%" / "N\%" as N/100.
std::optional<double> parse_digits(std::string_view s);

/// math.isclose(reference, prediction, rel_tol=1e-4) (abs_tol 0).
bool numeric_close(double prediction, double reference);

/// grader.py's math_equal with include_percentage and is_close on; sympy's symbolic step is replaced by
/// evaluate_expression on both sides (equal when both evaluate and are numeric_close).
bool math_equal(std::string_view prediction, std::string_view reference, bool include_percentage = true);

/// The normalised ground truth: gsm8k takes the text after "####" (the whole text when there is none) and
/// removes commas; every dataset then applies strip_string. Throws FormatError on a gsm8k answer with more
/// than one "####".
std::string parse_ground_truth(std::string_view answer, Dataset ds);

struct GradeResult {
  std::string extracted;         // normalised prediction that was compared
  bool correct = false;          // official (lenient) score
  std::string strict_extracted;  // normalised content of the last complete \boxed{...}, "" if none
  bool strict_correct = false;   // strict score: false whenever strict_extracted is empty
};

/// Grades one response against a raw ground-truth answer (as stored in the data set).
GradeResult grade(std::string_view response, std::string_view answer, Dataset ds);

}  // namespace fkv::grading
