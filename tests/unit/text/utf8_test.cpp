// UTF-8 helpers: validation, lossy decoding by maximal subparts (the U+FFFD rule of Rust from_utf8_lossy and
// Python errors="replace"), and the incomplete-tail length streaming decode relies on.
#include <catch2/catch.hpp>

#include "foresightkv/core/error.h"
#include "foresightkv/text/utf8.h"

namespace u8 = fkv::text::utf8;

TEST_CASE("utf8: validation", "[unit][text]") {
  CHECK(u8::valid_prefix("abc") == 3);
  CHECK(u8::valid_prefix("h\xc3\xa9llo") == 6);
  CHECK(u8::valid_prefix("a\xc0\xaf") == 1);          // overlong
  CHECK(u8::valid_prefix("a\xed\xa0\x80") == 1);      // surrogate
  CHECK(u8::valid_prefix("a\xf4\x90\x80\x80") == 1);  // > U+10FFFF
  CHECK(u8::valid_prefix("a\xf0\x9f\x98") == 1);      // truncated
  CHECK_NOTHROW(u8::check_valid("\xf0\x9f\x98\x80", "t"));
  CHECK_THROWS_AS(u8::check_valid("x\x80", "t"), fkv::InvalidArgument);
}

TEST_CASE("utf8: lossy decoding replaces maximal subparts", "[unit][text]") {
  const std::string r = "\xEF\xBF\xBD";
  CHECK(u8::decode_lossy("ok") == "ok");
  CHECK(u8::decode_lossy("\xf0\x9f\x98") == r);               // one truncated sequence -> one U+FFFD
  CHECK(u8::decode_lossy("\xe2\x82" "A") == r + "A");         // cut by ASCII
  CHECK(u8::decode_lossy("\x80\x80") == r + r);               // lone continuations, one each
  CHECK(u8::decode_lossy("\xed\xa0\x80") == r + r + r);       // surrogate: ED then A0, 80 are each invalid
  CHECK(u8::decode_lossy("\xf0\x80\x80") == r + r + r);       // F0 80 is not a valid prefix
  CHECK(u8::decode_lossy("\xc3\xa9\xff") == "\xc3\xa9" + r);
}

TEST_CASE("utf8: incomplete tail", "[unit][text]") {
  CHECK(u8::incomplete_tail("") == 0);
  CHECK(u8::incomplete_tail("abc") == 0);
  CHECK(u8::incomplete_tail("a\xf0") == 1);
  CHECK(u8::incomplete_tail("a\xf0\x9f") == 2);
  CHECK(u8::incomplete_tail("a\xf0\x9f\x98") == 3);
  CHECK(u8::incomplete_tail("a\xf0\x9f\x98\x80") == 0);
  CHECK(u8::incomplete_tail("a\xf0\x80") == 0);  // can never complete
  CHECK(u8::incomplete_tail("a\x80") == 0);
}

TEST_CASE("utf8: code point round trip", "[unit][text]") {
  std::string s;
  for (char32_t cp : {U'A', U'\u00e9', U'\u4e16', U'\U0001F600', U'\U0010FFFF'}) u8::append(s, cp);
  size_t i = 0;
  std::vector<char32_t> back;
  while (i < s.size()) back.push_back(u8::next(s, i));
  CHECK(back == std::vector<char32_t>{U'A', U'\u00e9', U'\u4e16', U'\U0001F600', U'\U0010FFFF'});
}
