// Recursive-descent evaluator for the arithmetic subset of LaTeX described in expression.h.
// Grammar (whitespace and no-op commands are skipped between tokens):
//   expr    := term (('+' | '-') term)*
//   term    := unary (('*' | \cdot | \times | '/' | \div) unary | <implicit> power)*
//   unary   := ('-' | '+') unary | power
//   power   := postfix (('^' | '**') unary)?              right-associative through unary
//   postfix := primary ('%' | '\%' | '!' | '^\circ')*
//   primary := number | '(' expr ')' | '{' expr '}' | \frac arg arg | \sqrt ('[' expr ']')? arg | \pi
//   arg     := '{' expr '}' | digit | \pi
// <implicit> is a '(' , '{', \frac, \dfrac, \tfrac, \sqrt, \pi or π directly after a factor.
#include "foresightkv/grading/expression.h"

#include <cmath>
#include <cstdlib>
#include <string>

namespace fkv::grading {
namespace {

constexpr double kPi = 3.14159265358979323846;

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  std::optional<double> run() {
    std::optional<double> v = expr(0);
    skip();
    if (!v || pos_ != s_.size() || !std::isfinite(*v)) return std::nullopt;
    return v;
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;

  bool at(std::string_view t) const { return s_.substr(pos_).substr(0, t.size()) == t; }

  // True when "\name" starts at pos_ and is not followed by another letter (so \pi does not match \pink).
  bool at_command(std::string_view name) const {
    if (pos_ >= s_.size() || s_[pos_] != '\\') return false;
    if (s_.substr(pos_ + 1).substr(0, name.size()) != name) return false;
    const size_t end = pos_ + 1 + name.size();
    return end >= s_.size() || !is_alpha(s_[end]);
  }
  bool eat_command(std::string_view name) {
    if (!at_command(name)) return false;
    pos_ += 1 + name.size();
    return true;
  }

  void skip() {
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        ++pos_;
      } else if (at("\\,") || at("\\;") || at("\\:") || at("\\!") || at("\\ ")) {
        pos_ += 2;
      } else if (eat_command("left") || eat_command("right") || eat_command("displaystyle") ||
                 eat_command("quad") || eat_command("qquad")) {
      } else {
        break;
      }
    }
  }

  // Consumes `t` after skipping blanks; false (nothing consumed but blanks) when absent.
  bool eat(std::string_view t) {
    skip();
    if (!at(t)) return false;
    pos_ += t.size();
    return true;
  }

  std::optional<double> expr(int depth) {
    std::optional<double> v = term(depth);
    while (v) {
      skip();
      if (eat("+")) {
        auto r = term(depth);
        if (!r) return std::nullopt;
        *v += *r;
      } else if (eat("-") || eat("\xE2\x88\x92")) {  // '-' or U+2212 minus sign
        auto r = term(depth);
        if (!r) return std::nullopt;
        *v -= *r;
      } else {
        break;
      }
    }
    return v;
  }

  bool at_implicit_factor() {
    skip();
    if (pos_ >= s_.size()) return false;
    const char c = s_[pos_];
    return c == '(' || c == '{' || at("\xCF\x80") || at_command("frac") || at_command("dfrac") ||
           at_command("tfrac") || at_command("sqrt") || at_command("pi");
  }

  std::optional<double> term(int depth) {
    std::optional<double> v = unary(depth);
    while (v) {
      skip();
      if (at("**")) break;  // a power operator belongs to the factor on the left; handled in power()
      if (eat("*") || eat_command("cdot") || eat_command("times") || eat("\xC3\x97") || eat("\xC2\xB7")) {
        auto r = unary(depth);
        if (!r) return std::nullopt;
        *v *= *r;
      } else if (eat("/") || eat_command("div") || eat("\xC3\xB7")) {
        auto r = unary(depth);
        if (!r) return std::nullopt;
        *v /= *r;
      } else if (at_implicit_factor()) {
        auto r = power(depth);
        if (!r) return std::nullopt;
        *v *= *r;
      } else {
        break;
      }
    }
    return v;
  }

  std::optional<double> unary(int depth) {
    if (depth > kMaxExpressionDepth) return std::nullopt;
    if (eat("-") || eat("\xE2\x88\x92")) {
      auto v = unary(depth + 1);
      if (!v) return std::nullopt;
      return -*v;
    }
    if (eat("+")) return unary(depth + 1);
    return power(depth);
  }

  std::optional<double> power(int depth) {
    std::optional<double> base = postfix(depth);
    if (!base) return std::nullopt;
    skip();
    if (eat("**") || eat("^")) {
      auto e = unary(depth + 1);
      if (!e) return std::nullopt;
      return std::pow(*base, *e);
    }
    return base;
  }

  std::optional<double> postfix(int depth) {
    std::optional<double> v = primary(depth);
    while (v) {
      skip();
      if (eat("^\\circ") || eat("^{\\circ}")) {
        continue;  // degrees: the number itself is the answer
      } else if (eat("\\%") || eat("%")) {
        *v /= 100.0;
      } else if (pos_ < s_.size() && s_[pos_] == '!' && !at("!=")) {
        ++pos_;
        if (*v < 0 || *v > 170 || std::floor(*v) != *v) return std::nullopt;
        double f = 1;
        for (int i = 2; i <= static_cast<int>(*v); ++i) f *= i;
        *v = f;
      } else {
        break;
      }
    }
    return v;
  }

  std::optional<double> number() {
    const size_t start = pos_;
    size_t p = pos_;
    size_t int_digits = 0, frac_digits = 0;
    while (p < s_.size() && is_digit(s_[p])) ++p, ++int_digits;
    if (p < s_.size() && s_[p] == '.') {
      size_t q = p + 1;
      while (q < s_.size() && is_digit(s_[q])) ++q, ++frac_digits;
      if (int_digits + frac_digits > 0) p = q;
    }
    if (int_digits + frac_digits == 0) return std::nullopt;
    if (p < s_.size() && (s_[p] == 'e' || s_[p] == 'E')) {  // exponent only when digits follow
      size_t q = p + 1;
      if (q < s_.size() && (s_[q] == '+' || s_[q] == '-')) ++q;
      if (q < s_.size() && is_digit(s_[q])) {
        while (q < s_.size() && is_digit(s_[q])) ++q;
        p = q;
      }
    }
    pos_ = p;
    const std::string text(s_.substr(start, p - start));
    return std::strtod(text.c_str(), nullptr);
  }

  // One argument of \frac or \sqrt: a brace group, a single digit, or \pi.
  std::optional<double> arg(int depth) {
    skip();
    if (pos_ >= s_.size()) return std::nullopt;
    if (s_[pos_] == '{') {
      ++pos_;
      auto v = expr(depth + 1);
      if (!v || !eat("}")) return std::nullopt;
      return v;
    }
    if (is_digit(s_[pos_])) return static_cast<double>(s_[pos_++] - '0');
    if (eat_command("pi")) return kPi;
    return std::nullopt;
  }

  std::optional<double> primary(int depth) {
    if (depth > kMaxExpressionDepth) return std::nullopt;
    skip();
    if (pos_ >= s_.size()) return std::nullopt;
    const char c = s_[pos_];
    if (c == '(' || c == '{') {
      ++pos_;
      auto v = expr(depth + 1);
      if (!v || !eat(c == '(' ? ")" : "}")) return std::nullopt;
      return v;
    }
    if (is_digit(c) || c == '.') return number();
    if (eat("\xCF\x80") || eat_command("pi")) return kPi;
    if (eat_command("frac") || eat_command("dfrac") || eat_command("tfrac")) {
      auto num = arg(depth + 1);
      if (!num) return std::nullopt;
      auto den = arg(depth + 1);
      if (!den) return std::nullopt;
      return *num / *den;
    }
    if (eat_command("sqrt")) {
      std::optional<double> index;
      if (eat("[")) {
        index = expr(depth + 1);
        if (!index || !eat("]")) return std::nullopt;
      }
      auto x = arg(depth + 1);
      // A negative radicand has no real principal root (sympy's N() is complex there, so float() fails).
      if (!x || *x < 0) return std::nullopt;
      if (!index) return std::sqrt(*x);
      if (*index == 0) return std::nullopt;
      return std::pow(*x, 1.0 / *index);
    }
    return std::nullopt;
  }
};

}  // namespace

std::optional<double> evaluate_expression(std::string_view expr) {
  if (expr.empty() || expr.size() > kMaxExpressionChars) return std::nullopt;
  return Parser(expr).run();
}

}  // namespace fkv::grading
