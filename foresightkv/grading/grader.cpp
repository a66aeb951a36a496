// Port of the official grader's parser.py (extract_answer, strip_string, choice_answer_clean,
// parse_ground_truth) and grader.py (math_equal). Each Python regex is replaced by a hand-written scan with
// the same leftmost, non-overlapping match semantics; comments name the Python expression being mirrored.
#include "foresightkv/grading/grader.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "foresightkv/core/error.h"
#include "foresightkv/grading/expression.h"
#include "foresightkv/grading/word_number.h"

namespace fkv::grading {
namespace {

// ---------------------------------------------------------------------------------------------------------
// UTF-8 and character classes

// Decodes the code point at s[i] and advances i. Invalid bytes decode to U+DC80..U+DCFF (Python's
// surrogateescape), so decoding then encoding gives the input bytes back.
char32_t decode_cp(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) { return i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80; };
  auto byte = [&](size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F); };
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  if (b0 >= 0xC2 && b0 < 0xE0 && cont(1)) {
    const char32_t c = (static_cast<char32_t>(b0 & 0x1F) << 6) | byte(1);
    i += 2;
    return c;
  }
  if (b0 >= 0xE0 && b0 < 0xF0 && cont(1) && cont(2)) {
    const char32_t c = (static_cast<char32_t>(b0 & 0x0F) << 12) | (byte(1) << 6) | byte(2);
    if (c >= 0x800 && (c < 0xD800 || c > 0xDFFF)) {
      i += 3;
      return c;
    }
  }
  if (b0 >= 0xF0 && b0 < 0xF5 && cont(1) && cont(2) && cont(3)) {
    const char32_t c = (static_cast<char32_t>(b0 & 0x07) << 18) | (byte(1) << 12) | (byte(2) << 6) | byte(3);
    if (c >= 0x10000 && c <= 0x10FFFF) {
      i += 4;
      return c;
    }
  }
  ++i;
  return 0xDC00 + b0;
}

std::u32string to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(decode_cp(s, i));
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c >= 0xDC80 && c <= 0xDCFF) {
    out.push_back(static_cast<char>(c - 0xDC00));  // an escaped invalid byte
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

size_t cp_count(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) decode_cp(s, i);
  return n;
}

// Python's \w for str patterns: letters, digits and '_' of any script. Exact for ASCII; a non-ASCII code
// point is a word character unless it lies in a symbol / punctuation block (see grader.h).
bool is_word(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (c <= 0xBF) {  // Latin-1 punctuation and symbols; ª ² ³ µ ¹ º ¼ ½ ¾ are alphanumeric
    return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA || (c >= 0xBC && c <= 0xBE);
  }
  if (c == 0xD7 || c == 0xF7) return false;  // × ÷
  if (c >= 0x2000 && c <= 0x206F) return false;  // general punctuation
  if (c >= 0x20A0 && c <= 0x20CF) return false;  // currency
  if (c == 0x2103 || c == 0x2109 || c == 0x2116 || c == 0x2120 || c == 0x2122) return false;  // ℃ ℉ № ℠ ™
  if (c >= 0x2190 && c <= 0x23FF) return false;  // arrows, mathematical operators, technical
  if (c >= 0x2500 && c <= 0x27BF) return false;  // box drawing, shapes, symbols, dingbats
  if (c >= 0x27C0 && c <= 0x27EF) return false;
  if (c >= 0x2900 && c <= 0x2BFF) return false;
  if (c >= 0x3000 && c <= 0x303F) return false;  // CJK punctuation
  if ((c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) ||
      (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65))
    return false;  // CJK compatibility forms, fullwidth punctuation
  if (c >= 0x1F000 && c <= 0x1FAFF) return false;  // emoji and pictographs
  if (c >= 0xDC80 && c <= 0xDCFF) return false;    // escaped invalid bytes
  return true;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Python str.strip() whitespace (ASCII part: \t \n \v \f \r space and the separators \x1c-\x1f).
bool is_py_space(char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f');
}

std::string_view py_strip(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_py_space(s[b])) ++b;
  while (e > b && is_py_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// str.strip(chars) / lstrip / rstrip for an ASCII character set.
std::string_view strip_chars(std::string_view s, std::string_view chars, bool left = true, bool right = true) {
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && chars.find(s[b]) != std::string_view::npos) ++b;
  if (right)
    while (e > b && chars.find(s[e - 1]) != std::string_view::npos) --e;
  return s.substr(b, e - b);
}

std::string lower_ascii(std::string_view s) {
  std::string r(s);
  for (char& c : r)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return r;
}

bool contains(std::string_view s, std::string_view t) { return s.find(t) != std::string_view::npos; }

size_t count_of(std::string_view s, std::string_view t) {
  size_t n = 0;
  for (size_t p = s.find(t); p != std::string_view::npos; p = s.find(t, p + t.size())) ++n;
  return n;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  size_t p = 0;
  for (size_t q = s.find(from); q != std::string::npos; q = s.find(from, p)) {
    out.append(s, p, q - p);
    out.append(to);
    p = q + from.size();
  }
  out.append(s, p, std::string::npos);
  s = std::move(out);
}

std::vector<std::string> split(std::string_view s, std::string_view sep) {
  std::vector<std::string> parts;
  size_t p = 0;
  for (size_t q = s.find(sep); q != std::string_view::npos; q = s.find(sep, p)) {
    parts.emplace_back(s.substr(p, q - p));
    p = q + sep.size();
  }
  parts.emplace_back(s.substr(p));
  return parts;
}

// ---------------------------------------------------------------------------------------------------------
// strip_string pieces

// Unit words of parser.py (mainly from MathQA), followed by the same list with "s" appended. In the
// Python code each one is a regex, so '.' matches any character; there is no other metacharacter.
constexpr std::string_view kUnitTexts[] = {
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile", "q .", "monkey",
    "prime", "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per", "dm", "lt", "gain", "ab",
    "way", "west", "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t", "a", "h", "no change", "men",
    "soldier", "pie", "bc", "excess", "st", "inches", "noon", "percent", "by", "gal", "kmh", "c", "acre",
    "rise", "a . m", "th", "\xCF\x80 r 2", "sq", "mark", "l", "toy", "coin", "sq . m", "gallon", "\xC2\xB0 f",
    "profit", "minw", "yr", "women", "feet", "am", "pm", "hr", "cu cm", "square",
    "v \xC3\xA2 \xE2\x82\xAC \xE2\x84\xA2", "are", "rupee", "rounds", "cubic", "cc", "mtr", "s", "ohm",
    "number", "kmph", "day", "hour", "minute", "min", "second", "man", "woman", "sec", "cube", "mt", "sq inch",
    "mp", "\xE2\x88\x8F cm \xC2\xB3", "hectare", "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg",
    "g", "month", "km", "m", "cm", "mm", "apple", "liter", "loss", "yard", "pure", "year", "increase",
    "decrease", "d", "less", "Surface", "litre", "pi sq m", "s .", "metre", "meter", "inch",
};

const std::vector<std::u32string>& unit_patterns() {
  static const std::vector<std::u32string> units = [] {
    std::vector<std::u32string> u;
    for (auto t : kUnitTexts) u.push_back(to_u32(t));
    for (auto t : kUnitTexts) u.push_back(to_u32(std::string(t) + "s"));
    return u;
  }();
  return units;
}

// re.sub(r"(^|\W)" + unit + r"($|\W)", r"\1\2", s): removes the unit where it stands alone. The
// neighbouring non-word characters belong to the match (so they cannot be part of the next one) and are put
// back. A match with the unit at p starts at p - 1 (or at 0 for "^"), so walking the occurrences of the
// unit's first character left to right, skipping those whose match would start inside the previous match,
// gives re.sub's matches without scanning every position for every unit.
void remove_unit(std::u32string& s, const std::u32string& u) {
  const size_t n = s.size();
  auto unit_at = [&](size_t p) {
    if (p + u.size() > n) return false;
    for (size_t k = 0; k < u.size(); ++k) {
      if (u[k] == U'.' ? s[p + k] == U'\n' : s[p + k] != u[k]) return false;
    }
    return true;
  };
  std::vector<std::pair<size_t, size_t>> cuts;  // [p, p + unit size) of each match
  size_t next_allowed = 0;                      // first position a new match may start at
  for (size_t p = s.find(u[0]); p != std::u32string::npos; p = s.find(u[0], p + 1)) {
    const bool prefix = (p == 0 && next_allowed == 0) || (p >= 1 && p - 1 >= next_allowed && !is_word(s[p - 1]));
    if (!prefix || !unit_at(p)) continue;
    const size_t e = p + u.size();
    if (e == n) {
      cuts.emplace_back(p, e);
      next_allowed = e;
    } else if (!is_word(s[e])) {
      cuts.emplace_back(p, e);
      next_allowed = e + 1;
    }
  }
  if (cuts.empty()) return;
  std::u32string out;
  out.reserve(n);
  size_t from = 0;
  for (const auto& [b, e] : cuts) {
    out.append(s, from, b - from);
    from = e;
  }
  out.append(s, from, std::u32string::npos);
  if (!out.empty()) s = std::move(out);  // the Python code keeps the string when the result is empty
}

// re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s)
std::string fix_sqrt(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.substr(i, 5) == "\\sqrt") {
      size_t j = i + 5;
      while (j < s.size()) {
        size_t k = j;
        if (!is_word(decode_cp(s, k))) break;
        j = k;
      }
      if (j > i + 5) {
        out += "\\sqrt{";
        out.append(s.substr(i + 5, j - i - 5));
        out += "}";
      } else {
        out += "\\sqrt";
      }
      i = j;
    } else {
      out.push_back(s[i++]);
    }
  }
  return out;
}

// _fix_fracs: "\frac12" -> "\frac{1}{2}", "\frac1{2}" -> "\frac{1}{2}"; a bare \frac with fewer than two
// characters after it leaves the whole string unchanged.
std::string fix_fracs(const std::string& s) {
  const std::vector<std::string> parts = split(s, "\\frac");
  std::string out = parts[0];
  for (size_t k = 1; k < parts.size(); ++k) {
    const std::string& sub = parts[k];
    out += "\\frac";
    if (!sub.empty() && sub[0] == '{') {
      out += sub;
      continue;
    }
    if (cp_count(sub) < 2) return s;
    size_t i = 0;
    decode_cp(sub, i);
    const std::string a = sub.substr(0, i);
    const size_t j0 = i;
    decode_cp(sub, i);
    const std::string b = sub.substr(j0, i - j0);
    const std::string rest = sub.substr(i);
    if (b != "{")
      out += "{" + a + "}{" + b + "}" + rest;
    else
      out += "{" + a + "}" + b + rest;
  }
  return out;
}

// A part that survives `str(int(part)) == part`: "0" or an optional '-' and digits without leading zero.
bool is_canonical_int(std::string_view s) {
  if (!s.empty() && s[0] == '-') s.remove_prefix(1);
  if (s.empty() || !std::all_of(s.begin(), s.end(), is_digit)) return false;
  return s == "0" || s[0] != '0';
}

// _fix_a_slash_b: "a/b" with integer parts (or parts containing "sqrt") -> "\frac{a}{b}".
std::string fix_a_slash_b(const std::string& s) {
  const std::vector<std::string> parts = split(s, "/");
  if (parts.size() != 2) return s;
  const auto ok = [](const std::string& p) { return contains(p, "sqrt") || is_canonical_int(p); };
  if (!ok(parts[0]) || !ok(parts[1])) return s;
  return "\\frac{" + parts[0] + "}{" + parts[1] + "}";
}

// For each occurrence of `open` (e.g. "\text{"), find the next `close`; replace open..close by
// open_replacement + (keep_inner ? inner : "") . Mirrors re.sub(r"\\text\{(.*?)\}", ...) and friends; the
// scan stops at the first `open` with no `close` after it (no later one can match either).
std::string sub_lazy_group(std::string_view s, std::string_view open, std::string_view close, bool keep_inner,
                           std::string_view replacement = "") {
  std::string out;
  size_t p = 0;
  while (true) {
    const size_t q = s.find(open, p);
    if (q == std::string_view::npos) break;
    const size_t c = s.find(close, q + open.size());
    if (c == std::string_view::npos) break;
    out.append(s.substr(p, q - p));
    out.append(replacement);
    if (keep_inner) out.append(s.substr(q + open.size(), c - q - open.size()));
    p = c + close.size();
  }
  out.append(s.substr(p));
  return out;
}

// re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s): "2.0x" -> "2x", "3.00)" -> "3)".
std::string drop_zero_decimals_inside(std::string_view s) {
  std::string out;
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (!is_digit(s[i])) {
      out.push_back(s[i++]);
      continue;
    }
    size_t j = i;
    while (j < n && is_digit(s[j])) ++j;
    out.append(s.substr(i, j - i));
    if (j < n && s[j] == '.') {
      size_t k = j + 1;
      while (k < n && s[k] == '0') ++k;
      if (k < n && !is_digit(s[k])) {
        size_t e = k;
        decode_cp(s, e);
        out.append(s.substr(k, e - k));
        i = e;
        continue;
      }
    }
    i = j;
  }
  return out;
}

// re.sub(r"(\d+)\.0*$", r"\1", s): "5.000" -> "5", "12." -> "12".
std::string drop_zero_decimals_at_end(std::string s) {
  size_t k = s.size();
  while (k > 0 && s[k - 1] == '0') --k;
  if (k >= 2 && s[k - 1] == '.' && is_digit(s[k - 2])) s.resize(k - 1);
  return s;
}

// re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
std::string array_to_pmatrix(std::string_view s) {
  return sub_lazy_group(s, "\\begin{array}{", "}", false, "\\begin{pmatrix}");
}

// ---------------------------------------------------------------------------------------------------------
// Choice letters

// Positions of standalone A-E (\b(A|B|C|D|E)\b) in the upper-cased text, as letters in text order.
std::string standalone_letters(std::string_view text) {
  const std::u32string u = to_u32(text);
  std::string letters;
  for (size_t i = 0; i < u.size(); ++i) {
    char32_t c = u[i];
    if (c >= 'a' && c <= 'e') c = c - 'a' + 'A';
    if (c < 'A' || c > 'E') continue;
    const bool left = i == 0 || !is_word(u[i - 1]);
    const bool right = i + 1 == u.size() || !is_word(u[i + 1]);
    if (left && right) letters.push_back(static_cast<char>(c));
  }
  return letters;
}

bool is_choice_letter(std::string_view s) { return s.size() == 1 && s[0] >= 'A' && s[0] <= 'E'; }

bool is_multi_choice(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'E'; });
}

// grader.py's choice_answer_clean (no "answer is" handling): the last standalone letter, else the text.
std::string grader_choice_clean(std::string_view pred) {
  pred = strip_chars(strip_chars(strip_chars(strip_chars(strip_chars(pred, "\n"), ".", false, true), "/", false, true),
                                 " "),
                     ":", true, false);
  const std::string letters = standalone_letters(pred);
  std::string r = letters.empty() ? std::string(strip_chars(py_strip(pred), ".")) : std::string(1, letters.back());
  return std::string(strip_chars(strip_chars(r, ".", false, true), "/", false, true));
}

// ---------------------------------------------------------------------------------------------------------
// math_equal pieces

constexpr int kMaxEqualDepth = 32;  // nesting of lists / equations compared recursively

std::optional<double> python_float(std::string_view s) {
  s = py_strip(s);
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  const std::string low = lower_ascii(s);
  if (low == "inf" || low == "infinity") return neg ? -HUGE_VAL : HUGE_VAL;
  if (low == "nan") return std::nan("");
  // floatnumber: [digitpart] "." digitpart | digitpart ["."] , then optional exponent; digitpart allows
  // single underscores between digits.
  std::string clean;
  size_t i = 0;
  auto digitpart = [&]() {
    const size_t start = i;
    while (i < s.size()) {
      if (is_digit(s[i])) {
        clean.push_back(s[i++]);
      } else if (s[i] == '_' && i > start && i + 1 < s.size() && is_digit(s[i - 1]) && is_digit(s[i + 1])) {
        ++i;
      } else {
        break;
      }
    }
    return i > start;
  };
  const bool int_part = digitpart();
  bool frac_part = false;
  if (i < s.size() && s[i] == '.') {
    clean.push_back('.');
    ++i;
    frac_part = digitpart();
  }
  if (!int_part && !frac_part) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    clean.push_back('e');
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) clean.push_back(s[i++]);
    if (!digitpart()) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  const double v = std::strtod(clean.c_str(), nullptr);
  return neg ? -v : v;
}

// (\(|\[).+(\)|\]) matched at the start: an opening ( or [ and a closing ) or ] at index >= 2, with no
// newline in between ('.' does not match one).
bool is_list_format(std::string_view s) {
  if (s.size() < 3 || (s[0] != '(' && s[0] != '[')) return false;
  for (size_t k = 1; k < s.size() && s[k] != '\n'; ++k)
    if (k >= 2 && (s[k] == ')' || s[k] == ']')) return true;
  return false;
}

bool is_matrix_format(std::string_view s) {
  return (s.starts_with("\\begin{pmatrix}") || s.starts_with("\\begin{bmatrix}")) &&
         (s.ends_with("\\end{pmatrix}") || s.ends_with("\\end{bmatrix}"));
}

// Python s[1:-1] on code points.
std::string inner_of(std::string_view s) {
  size_t b = 0;
  if (!s.empty()) decode_cp(s, b);
  size_t e = s.size();
  while (e > b && (static_cast<unsigned char>(s[e - 1]) & 0xC0) == 0x80) --e;  // start of the last code point
  if (e > b) --e;
  return e > b ? std::string(s.substr(b, e - b)) : std::string();
}

// str_to_pmatrix: re.findall(r"\{.*,.*\}", ref) is greedy, so its only match runs from the first '{' to the
// last '}' and needs a ',' in between; that span, stripped of outer braces and with ',' replaced by a
// backslash, becomes \begin{pmatrix}...\end{pmatrix}. No match gives "".
std::string str_to_pmatrix(std::string_view ref) {
  ref = py_strip(ref);
  const size_t open = ref.find('{'), close = ref.rfind('}');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) return "";
  const std::string_view span = ref.substr(open, close - open + 1);
  if (span.find(',') == std::string_view::npos) return "";
  std::string m(strip_chars(span, "{}"));
  std::replace(m.begin(), m.end(), ',', '\\');
  return "\\begin{pmatrix}" + m + "\\end{pmatrix}";
}

bool symbolic_equal(std::string_view a, std::string_view b) {
  if (a == b) return true;
  const auto va = evaluate_expression(a), vb = evaluate_expression(b);
  return va && vb && numeric_close(*va, *vb);
}

bool math_equal_impl(std::string_view prediction, std::string_view reference, bool include_percentage, int depth);

bool compare_matrices(const std::string& prediction, const std::string& reference, bool pct, int depth) {
  auto lines = [](const std::string& m) {
    constexpr size_t kOpen = 15, kClose = 13;  // len("\begin{pmatrix}"), len("\end{pmatrix}")
    std::vector<std::string> out;
    if (m.size() < kOpen + kClose) return out;
    for (const auto& l : split(std::string_view(m).substr(kOpen, m.size() - kOpen - kClose), "\\\\")) {
      const auto t = py_strip(l);
      if (!t.empty()) out.emplace_back(t);
    }
    return out;
  };
  const auto pl = lines(prediction), rl = lines(reference);
  if (pl.size() != rl.size()) return false;
  for (size_t i = 0; i < pl.size(); ++i) {
    const auto pp = split(pl[i], "&"), rp = split(rl[i], "&");
    if (pp.size() != rp.size()) return false;
    for (size_t k = 0; k < pp.size(); ++k)
      if (!math_equal_impl(pp[k], rp[k], pct, depth + 1)) return false;
  }
  return true;
}

bool math_equal_impl(std::string_view prediction, std::string_view reference, bool pct, int depth) {
  if (depth > kMaxEqualDepth) return false;
  if (lower_ascii(py_strip(prediction)) == lower_ascii(py_strip(reference))) return true;
  if (is_choice_letter(reference) && grader_choice_clean(prediction) == reference) return true;

  // 1. numerical equality; when both sides are numbers this decides.
  const auto p = parse_digits(prediction), r = parse_digits(reference);
  if (p && r) {
    if (pct) return numeric_close(*p, *r / 100) || numeric_close(*p, *r) || numeric_close(*p, *r * 100);
    return numeric_close(*p, *r);
  }
  if (prediction.empty()) return false;

  // 2. structural and symbolic equality.
  std::string ref(py_strip(reference)), pred(py_strip(prediction));
  if (contains(pred, "pmatrix") && !contains(ref, "pmatrix")) ref = str_to_pmatrix(ref);

  // [], (), {}: strip the outer brackets unless the kinds are [..] vs (.. or (..) vs [..; then drop every
  // {, }, ( and ) and compare case-insensitively.
  std::string pred_str = pred, ref_str = ref;
  const bool pred_sq = pred.starts_with('[') && pred.ends_with(']');
  const bool pred_par = pred.starts_with('(') && pred.ends_with(')');
  if ((pred_sq && !ref.starts_with('(')) || (pred_par && !ref.starts_with('['))) {
    pred_str = std::string(strip_chars(pred_str, "[]()"));
    ref_str = std::string(strip_chars(ref_str, "[]()"));
  }
  auto drop_brackets = [](std::string s) {
    s.erase(std::remove_if(s.begin(), s.end(), [](char c) { return c == '{' || c == '}' || c == '(' || c == ')'; }),
            s.end());
    return lower_ascii(s);
  };
  if (drop_brackets(pred_str) == drop_brackets(ref_str)) return true;

  // [a, b] vs [c, d] (any of ( [ with any of ) ]): element-wise.
  if (is_list_format(pred) && is_list_format(ref)) {
    const auto pp = split(inner_of(pred), ","), rp = split(inner_of(ref), ",");
    if (pp.size() == rp.size()) {
      bool all = true;
      for (size_t i = 0; i < pp.size() && all; ++i) all = math_equal_impl(pp[i], rp[i], pct, depth + 1);
      if (all) return true;
    }
  }
  if (is_matrix_format(pred) && is_matrix_format(ref) && compare_matrices(pred, ref, pct, depth)) return true;

  // Equations: both "l = r" compare l - (r) (or its negation); "x = v" (left side <= 2 characters) against a
  // plain value compares v.
  auto lhs_rhs = [](const std::string& s) {
    const size_t e = s.find('=');
    return std::pair<std::string, std::string>{s.substr(0, e), s.substr(e + 1)};
  };
  const size_t pred_eq = count_of(pred, "="), ref_eq = count_of(ref, "=");
  if (pred_eq == 1 && ref_eq == 1) {
    const auto [pl, pr] = lhs_rhs(pred);
    const auto [rl, rr] = lhs_rhs(ref);
    const std::string pe = std::string(py_strip(pl)) + " - (" + std::string(py_strip(pr)) + ")";
    const std::string re = std::string(py_strip(rl)) + " - (" + std::string(py_strip(rr)) + ")";
    if (symbolic_equal(pe, re) || symbolic_equal("-(" + pe + ")", re)) return true;
  } else if (pred_eq == 1 && cp_count(py_strip(lhs_rhs(pred).first)) <= 2 && ref_eq == 0) {
    if (math_equal_impl(lhs_rhs(pred).second, ref, pct, depth + 1)) return true;
  } else if (ref_eq == 1 && cp_count(py_strip(lhs_rhs(ref).first)) <= 2 && pred_eq == 0) {
    if (math_equal_impl(pred, lhs_rhs(ref).second, pct, depth + 1)) return true;
  }
  return symbolic_equal(pred, ref);
}

// The tail of extract_answer shared by the lenient and the strict extraction: re.sub(r"\n\s*", "", pred),
// drop one leading ':' and one trailing '.' and '/', then strip_string.
std::string finish_extraction(std::string_view pred) {
  std::string s;
  for (size_t i = 0; i < pred.size();) {
    if (pred[i] == '\n') {
      ++i;
      while (i < pred.size() && is_py_space(pred[i])) ++i;
    } else {
      s.push_back(pred[i++]);
    }
  }
  if (!s.empty() && s.front() == ':') s.erase(0, 1);
  if (!s.empty() && s.back() == '.') s.pop_back();
  if (!s.empty() && s.back() == '/') s.pop_back();
  return strip_string(s);
}

// Brace-balanced content of text starting just after an opening '{'; `closed` tells whether the matching
// '}' was found (otherwise everything up to the end is returned, as the Python loop does).
std::string balanced(std::string_view rest, bool& closed) {
  int depth = 1;
  closed = false;
  for (size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == '{') {
      ++depth;
    } else if (rest[i] == '}' && --depth == 0) {
      closed = true;
      return std::string(rest.substr(0, i));
    }
  }
  return std::string(rest);
}

// findall(r"-?\d*\.?\d+", s) and keep the last match.
std::string last_number(std::string_view s) {
  std::string_view last;
  bool found = false;
  const size_t n = s.size();
  // Longest match of \d*\.?\d+ at p, or 0.
  auto body = [&](size_t p) -> size_t {
    size_t d1 = 0;
    while (p + d1 < n && is_digit(s[p + d1])) ++d1;
    if (p + d1 < n && s[p + d1] == '.') {
      size_t d2 = 0;
      while (p + d1 + 1 + d2 < n && is_digit(s[p + d1 + 1 + d2])) ++d2;
      if (d2 > 0) return d1 + 1 + d2;
    }
    return d1;
  };
  for (size_t i = 0; i < n;) {
    size_t len = 0;
    if (s[i] == '-') {
      const size_t b = body(i + 1);
      if (b > 0) len = 1 + b;
    } else {
      len = body(i);
    }
    if (len > 0) {
      last = s.substr(i, len);
      found = true;
      i += len;
    } else {
      ++i;
    }
  }
  return found ? std::string(last) : std::string();
}

}  // namespace

// -------------------------------------------------------------------------------------------------------------
// Public API

Dataset parse_dataset(std::string_view name) {
  if (name == "math") return Dataset::Math;
  if (name == "gsm8k" || name == "gsm8k_test") return Dataset::Gsm8k;
  if (name == "aime24") return Dataset::Aime24;
  if (name == "aime25") return Dataset::Aime25;
  if (name == "amc23") return Dataset::Amc23;
  if (name == "gpqa") return Dataset::Gpqa;
  FKV_THROW_KIND(1, "unknown dataset '{}'; expected one of gsm8k, aime24, aime25, amc23, gpqa, math", name);
}

std::string dataset_name(Dataset ds) {
  switch (ds) {
    case Dataset::Math: return "math";
    case Dataset::Gsm8k: return "gsm8k";
    case Dataset::Aime24: return "aime24";
    case Dataset::Aime25: return "aime25";
    case Dataset::Amc23: return "amc23";
    case Dataset::Gpqa: return "gpqa";
  }
  return "math";
}

std::string apply_stop_words(std::string_view text) {
  static constexpr std::array<std::string_view, 4> kStop = {"</s>", "<|im_end|>", "<|endoftext|>",
                                                            "\n\xE9\xA2\x98\xE7\x9B\xAE\xEF\xBC\x9A"};
  std::string s(text);
  for (auto w : kStop) {
    const size_t p = s.find(w);
    if (p != std::string::npos) s = std::string(py_strip(std::string_view(s).substr(0, p)));
  }
  return s;
}

std::string extract_answer(std::string_view text) {
  std::string s(text);
  replace_all(s, "\xD0\xBA\xD0\xB8", "");  // "ки" step marker of some few-shot prompts
  const std::string_view sv = s;
  std::string pred;
  if (contains(sv, "final answer is $") && contains(sv, "$. I hope")) {
    const std::string_view tmp = sv.substr(sv.find("final answer is $") + 17);
    pred = py_strip(tmp.substr(0, tmp.find("$. I hope")));
  } else if (contains(sv, "boxed")) {
    const std::string_view ans = sv.substr(sv.rfind("boxed") + 5);
    if (ans.empty()) return "";
    if (ans[0] == '{') {
      bool closed = false;
      pred = balanced(ans.substr(1), closed);
    } else {
      pred = py_strip(ans.substr(0, ans.find('$')));
    }
  } else if (contains(sv, "he answer is")) {
    pred = py_strip(sv.substr(sv.rfind("he answer is") + 12));
  } else if (contains(sv, "final answer is")) {
    pred = py_strip(sv.substr(sv.rfind("final answer is") + 15));
  } else if (contains(sv, "\xE7\xAD\x94\xE6\xA1\x88\xE6\x98\xAF")) {  // 答案是: up to its next occurrence
    const std::string_view marker = "\xE7\xAD\x94\xE6\xA1\x88\xE6\x98\xAF";
    std::string_view seg = sv.substr(sv.find(marker) + marker.size());
    seg = seg.substr(0, seg.find(marker));
    seg = py_strip(seg);
    pred = py_strip(seg.substr(0, seg.find("\n\n")));
  } else {
    std::string no_commas = s;
    no_commas.erase(std::remove(no_commas.begin(), no_commas.end(), ','), no_commas.end());
    pred = last_number(no_commas);
  }
  return finish_extraction(pred);
}

std::optional<std::string> extract_boxed_strict(std::string_view text) {
  const size_t p = text.rfind("\\boxed");
  if (p == std::string_view::npos) return std::nullopt;
  size_t i = p + 6;
  while (i < text.size() && text[i] == ' ') ++i;
  if (i >= text.size() || text[i] != '{') return std::nullopt;
  bool closed = false;
  std::string content = balanced(text.substr(i + 1), closed);
  if (!closed) return std::nullopt;
  return content;
}

std::string extract_answer_strict(std::string_view text) {
  const auto boxed = extract_boxed_strict(text);
  return boxed ? finish_extraction(*boxed) : std::string();
}

std::string strip_string(std::string_view input, bool skip_unit) {
  std::string s(py_strip(input));
  replace_all(s, "\n", "");
  s = std::string(strip_chars(s, ".", false, true));
  replace_all(s, "\\!", "");

  // matrices
  s = array_to_pmatrix(s);
  replace_all(s, "\\end{array}", "\\end{pmatrix}");
  replace_all(s, "bmatrix", "pmatrix");

  replace_all(s, "tfrac", "frac");
  replace_all(s, "dfrac", "frac");
  replace_all(s, "\\neq", "\\ne");
  replace_all(s, "\\leq", "\\le");
  replace_all(s, "\\geq", "\\ge");
  replace_all(s, "\\left", "");
  replace_all(s, "\\right", "");
  replace_all(s, "\\{", "{");
  replace_all(s, "\\}", "}");

  // re.sub(r"\\text{.*?}$", "", s).strip(): from the first "\text{" to the end, if the string ends in '}'.
  {
    const size_t t = s.find("\\text{");
    std::string cut = s;
    if (t != std::string::npos && s.size() >= t + 7 && s.back() == '}') cut = s.substr(0, t);
    cut = std::string(py_strip(cut));
    if (!cut.empty() && cut != s) s = cut;
  }

  if (!skip_unit) {
    std::u32string u = to_u32(s);
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& unit : unit_patterns()) remove_unit(u, unit);
    }
    s = to_utf8(u);
  }

  replace_all(s, "^{\\circ}", "");
  replace_all(s, "^\\circ", "");
  replace_all(s, "\\$", "");
  replace_all(s, "$", "");
  replace_all(s, "\\(", "");
  replace_all(s, "\\)", "");

  if (auto w = words_to_number(s)) s = *w;

  s = sub_lazy_group(s, "\\text{", "}", true);
  for (std::string_view key : {"x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"})
    replace_all(s, key, "");
  replace_all(s, "\\emptyset", "{}");
  replace_all(s, "(-\\infty,\\infty)", "\\mathbb{R}");

  replace_all(s, "\\%", "");
  replace_all(s, "%", "");

  replace_all(s, " .", " 0.");
  replace_all(s, "{.", "{0.");

  replace_all(s, "infinity", "\\infty");
  if (!contains(s, "\\infty")) replace_all(s, "inf", "\\infty");
  replace_all(s, "+\\inity", "\\infty");

  replace_all(s, "and", "");
  replace_all(s, "\\mathbf", "");
  s = sub_lazy_group(s, "\\mbox{", "}", false);

  if (contains(s, "j") && !contains(s, "i")) std::replace(s.begin(), s.end(), 'j', 'i');

  s = drop_zero_decimals_inside(s);
  s = drop_zero_decimals_at_end(std::move(s));

  if (s.empty()) return s;
  if (s[0] == '.') s = "0" + s;

  // "k = 5" -> "5" when there is one '=' and at most two characters before it.
  if (count_of(s, "=") == 1) {
    const size_t e = s.find('=');
    if (cp_count(std::string_view(s).substr(0, e)) <= 2) s = s.substr(e + 1);
  }

  s = fix_sqrt(s);
  s.erase(std::remove(s.begin(), s.end(), ' '), s.end());
  s = fix_fracs(s);
  s = fix_a_slash_b(s);
  return s;
}

std::string choice_answer_clean(std::string_view text) {
  std::string_view pred = strip_chars(text, "\n");
  if (count_of(pred, "choice is") > 1 || count_of(pred, "answer is") > 1) {
    pred = pred.substr(0, pred.find("\n\n"));  // in-context examples: keep the first block
  }
  bool answer_flag = false;
  size_t cut = 0;
  for (std::string_view trigger : {"choice is", "answer is"}) {
    const size_t p = pred.rfind(trigger);
    if (p != std::string_view::npos) {
      answer_flag = true;
      cut = std::max(cut, p + trigger.size());
    }
  }
  if (answer_flag) pred = pred.substr(cut);
  pred = strip_chars(pred, "\n");
  pred = strip_chars(pred, ".", false, true);
  pred = strip_chars(pred, "/", false, true);
  pred = strip_chars(pred, " ");
  pred = strip_chars(pred, ":", true, false);
  const std::string letters = standalone_letters(pred);
  std::string r;
  if (!letters.empty())
    r = std::string(1, answer_flag ? letters.front() : letters.back());
  else
    r = strip_chars(py_strip(pred), ".");
  return std::string(strip_chars(strip_chars(r, ".", false, true), "/", false, true));
}

std::optional<double> parse_digits(std::string_view s) {
  std::string t(s);
  t.erase(std::remove(t.begin(), t.end(), ','), t.end());
  if (auto v = python_float(t)) return v;
  if (!t.empty() && t.back() == '%') {
    t.pop_back();
    if (!t.empty() && t.back() == '\\') t.pop_back();
    if (auto v = python_float(t)) return *v / 100;
  }
  return std::nullopt;
}

bool numeric_close(double prediction, double reference) {
  if (prediction == reference) return true;
  if (std::isinf(prediction) || std::isinf(reference)) return false;
  return std::fabs(prediction - reference) <= 1e-4 * std::max(std::fabs(prediction), std::fabs(reference));
}

bool math_equal(std::string_view prediction, std::string_view reference, bool include_percentage) {
  return math_equal_impl(prediction, reference, include_percentage, 0);
}

std::string parse_ground_truth(std::string_view answer, Dataset ds) {
  std::string gt(answer);
  if (ds == Dataset::Gsm8k) {
    const size_t n = count_of(gt, "####");
    FKV_CHECK_FORMAT(n <= 1,
                     "gsm8k answer has {} '####' markers, expected one ('<solution>\\n#### <number>') or none "
                     "(a bare number): '{}'",
                     n, gt.substr(0, 200));
    if (n == 1) gt = gt.substr(gt.find("####") + 4);
    gt.erase(std::remove(gt.begin(), gt.end(), ','), gt.end());
  }
  return strip_string(gt);
}

GradeResult grade(std::string_view response, std::string_view answer, Dataset ds) {
  GradeResult r;
  const std::string gt = parse_ground_truth(answer, ds);
  const std::string text = apply_stop_words(response);
  // The official run_execute returns no prediction for an empty response, and strips the extracted answer
  // a second time.
  if (!text.empty()) r.extracted = strip_string(extract_answer(text));
  if (ds == Dataset::Gpqa) {
    if (is_choice_letter(gt) && !is_choice_letter(r.extracted)) {
      r.extracted = choice_answer_clean(text);
    } else if (is_multi_choice(gt) && !is_multi_choice(r.extracted)) {
      std::string letters;
      for (char c : r.extracted)
        if (c >= 'A' && c <= 'E') letters.push_back(c);
      r.extracted = letters;
    }
  }
  r.correct = !text.empty() && math_equal(r.extracted, gt);
  r.strict_extracted = strip_string(extract_answer_strict(text));
  r.strict_correct = !r.strict_extracted.empty() && math_equal(r.strict_extracted, gt);
  return r;
}

}  // namespace fkv::grading
