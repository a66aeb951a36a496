// A small, safe numeric evaluator for LaTeX / plain arithmetic answers. It stands in for the sympy
// parse_latex / parse_expr / N() step of the official ForesightKV (Qwen2.5-Math) grader: when both sides
// of a comparison evaluate to finite numbers they are compared with rel_tol 1e-4 (docs/grading.md).
//
// Accepted: decimal numbers (".5", "2.", "1e-3"), + - * /, ^ and ** (right-associative; the exponent may be
// signed and may be a brace group), parentheses and braces as grouping, \frac \dfrac \tfrac {a}{b} (also
// \frac12 with one-digit arguments), \sqrt{x} and \sqrt[n]{x}, \pi and π, \cdot \times \div × ÷ ·,
// implicit multiplication before a group or a command ("2\sqrt{3}", "3\pi", "2(1+1)"), unary minus and
// plus, a postfix % or \% (÷100), a postfix ! on a small non-negative integer, ^\circ (ignored), and the
// no-op commands \left \right \, \; \: \! "\ " \displaystyle. Anything else (letters, commas, '=', ...) makes
// the expression not evaluable.
//
// Safety: inputs longer than kMaxExpressionChars and nesting deeper than kMaxExpressionDepth are rejected,
// parsing is a single left-to-right pass (no backtracking), so evaluation is linear in the input length.
// Results that are not finite (1/0, sqrt(-1), overflow) are "not evaluable" rather than numbers.
#pragma once
#include <cstddef>
#include <optional>
#include <string_view>

namespace fkv::grading {

inline constexpr size_t kMaxExpressionChars = 1000;
inline constexpr int kMaxExpressionDepth = 64;

/// The value of `expr`, or nullopt when it is not a complete, finite arithmetic expression in the
/// grammar above. Never throws, never recurses deeper than kMaxExpressionDepth levels of nesting.
std::optional<double> evaluate_expression(std::string_view expr);

}  // namespace fkv::grading
