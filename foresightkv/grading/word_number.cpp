// word2number 1.1 semantics (see word_number.h). Words are split on ASCII whitespace after '-' -> ' ' and
// ASCII lower-casing; scale words split the phrase into billion / million / thousand / hundreds segments,
// and each segment is combined by the library's fixed 1-4 word rule (number_formation below).
#include "foresightkv/grading/word_number.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace fkv::grading {
namespace {

// The library's american_number_system; "point" (-1 here) separates the decimal digits.
constexpr std::pair<std::string_view, int64_t> kWords[] = {
    {"zero", 0},         {"one", 1},           {"two", 2},          {"three", 3},       {"four", 4},
    {"five", 5},         {"six", 6},           {"seven", 7},        {"eight", 8},       {"nine", 9},
    {"ten", 10},         {"eleven", 11},       {"twelve", 12},      {"thirteen", 13},   {"fourteen", 14},
    {"fifteen", 15},     {"sixteen", 16},      {"seventeen", 17},   {"eighteen", 18},   {"nineteen", 19},
    {"twenty", 20},      {"thirty", 30},       {"forty", 40},       {"fifty", 50},      {"sixty", 60},
    {"seventy", 70},     {"eighty", 80},       {"ninety", 90},      {"hundred", 100},   {"thousand", 1000},
    {"million", 1000000}, {"billion", 1000000000}, {"point", -1},
};

std::optional<int64_t> word_value(std::string_view w) {
  for (const auto& [name, v] : kWords)
    if (name == w) return v;
  return std::nullopt;
}

// number_formation: 4 words a*b+c+d, 3 words a*b+c, 2 words a*b if one is 100 else a+b, else the first.
// An empty segment is an IndexError in the library: nullopt.
std::optional<int64_t> formation(const std::vector<std::string>& words, size_t begin, size_t end) {
  std::vector<int64_t> n;
  for (size_t i = begin; i < end && i < words.size(); ++i) n.push_back(*word_value(words[i]));
  if (n.empty()) return std::nullopt;
  if (n.size() == 4) return n[0] * n[1] + n[2] + n[3];
  if (n.size() == 3) return n[0] * n[1] + n[2];
  if (n.size() == 2) return (n[0] == 100 || n[1] == 100) ? n[0] * n[1] : n[0] + n[1];
  return n[0];
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Python repr of a float (shortest round trip, always with a '.' or an exponent).
std::string python_float_repr(double v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

std::optional<std::string> words_to_number(std::string_view text) {
  std::string s(text);
  for (char& c : s) {
    if (c == '-') c = ' ';
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (!s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    const size_t nz = s.find_first_not_of('0');
    return nz == std::string::npos ? std::string("0") : s.substr(nz);  // int(s): leading zeros dropped
  }
  std::vector<std::string> clean;
  for (size_t i = 0; i < s.size();) {
    while (i < s.size() && is_space(s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !is_space(s[j])) ++j;
    if (j > i) {
      std::string w = s.substr(i, j - i);
      if (word_value(w)) clean.push_back(std::move(w));
    }
    i = j;
  }
  if (clean.empty()) return std::nullopt;
  auto count = [&](std::string_view w) { return std::count(clean.begin(), clean.end(), w); };
  if (count("thousand") > 1 || count("million") > 1 || count("billion") > 1 || count("point") > 1)
    return std::nullopt;
  std::vector<std::string> decimals;
  if (count("point") == 1) {
    const auto p = std::find(clean.begin(), clean.end(), "point");
    decimals.assign(p + 1, clean.end());
    clean.erase(p, clean.end());
  }
  auto index_of = [&](std::string_view w) -> int64_t {
    const auto it = std::find(clean.begin(), clean.end(), w);
    return it == clean.end() ? -1 : static_cast<int64_t>(it - clean.begin());
  };
  const int64_t bi = index_of("billion"), mi = index_of("million"), ti = index_of("thousand");
  if ((ti > -1 && (ti < mi || ti < bi)) || (mi > -1 && mi < bi)) return std::nullopt;

  const auto n = static_cast<int64_t>(clean.size());
  int64_t total = 0;
  auto add = [&](std::optional<int64_t> v, int64_t scale) {
    if (!v) return false;
    total += *v * scale;
    return true;
  };
  auto u = [](int64_t i) { return static_cast<size_t>(i); };
  if (n == 1) {
    total = *word_value(clean[0]);
  } else if (n > 1) {
    if (bi > -1 && !add(formation(clean, 0, u(bi)), 1000000000)) return std::nullopt;
    if (mi > -1 && !add(formation(clean, bi > -1 ? u(bi + 1) : 0, u(mi)), 1000000)) return std::nullopt;
    if (ti > -1) {
      const size_t from = mi > -1 ? u(mi + 1) : (bi > -1 ? u(bi + 1) : 0);
      if (!add(formation(clean, from, u(ti)), 1000)) return std::nullopt;
    }
    std::optional<int64_t> hundreds = 0;
    if (ti > -1 && ti != n - 1) {
      hundreds = formation(clean, u(ti + 1), u(n));
    } else if (mi > -1 && mi != n - 1) {
      hundreds = formation(clean, u(mi + 1), u(n));
    } else if (bi > -1 && bi != n - 1) {
      hundreds = formation(clean, u(bi + 1), u(n));
    } else if (ti == -1 && mi == -1 && bi == -1) {
      hundreds = formation(clean, 0, u(n));
    }
    if (!add(hundreds, 1)) return std::nullopt;
  }
  if (!decimals.empty()) {
    std::string digits;
    for (const auto& w : decimals) {
      const auto v = word_value(w);
      if (*v < 0 || *v > 9) {  // get_decimal_sum: a non-digit word makes the decimal part 0
        digits.clear();
        break;
      }
      digits += static_cast<char>('0' + *v);
    }
    if (!digits.empty()) return python_float_repr(static_cast<double>(total) + std::stod("0." + digits));
  }
  return std::to_string(total);
}

}  // namespace fkv::grading
