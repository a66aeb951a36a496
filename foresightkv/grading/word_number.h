// English number words to digits, with the exact behaviour of word2number 1.1 (`w2n.word_to_num`), which
// the official grader's strip_string calls on every answer (convert_word_number). Its quirks are kept on
// purpose because they change what the grader compares: words that are not number words are dropped
// ("five apples" -> 5, "one third" -> 1), a string of ASCII digits loses its leading zeros ("025" -> 25),
// "point" alone gives 0, and malformed phrases are left unchanged.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace fkv::grading {

/// str(w2n.word_to_num(text)) ("5", "105", "2.5"), or nullopt where word_to_num raises (no number word,
/// a repeated thousand/million/billion/point, a misordered scale word, an empty multiplier).
std::optional<std::string> words_to_number(std::string_view text);

}  // namespace fkv::grading
