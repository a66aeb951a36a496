// UTF-8 helpers for the tokenizer: strict validation (RFC 3629: no overlongs, no surrogates, <= U+10FFFF),
// code point iteration, lossy decoding that replaces each maximal invalid subpart with U+FFFD (the rule of
// Rust's String::from_utf8_lossy and Python's errors="replace", which HF decode uses), and the length of an
// incomplete-but-valid trailing sequence (streaming decode holds those bytes back).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace fkv::text::utf8 {

/// Length in bytes of the longest valid UTF-8 prefix of `s` (== s.size() when `s` is valid).
size_t valid_prefix(std::string_view s);

/// Throws fkv::InvalidArgument naming `what`, the byte offset and the offending bytes when `s` is not valid UTF-8.
void check_valid(std::string_view s, std::string_view what);

/// Decodes the code point starting at byte `i` of valid UTF-8 `s` and advances `i` past it.
/// Precondition: `s` is valid UTF-8 and i < s.size().
char32_t next(std::string_view s, size_t& i);

/// Appends the UTF-8 encoding of `cp` (must be a Unicode scalar value).
void append(std::string& out, char32_t cp);

/// `bytes` decoded as UTF-8 with every maximal invalid subpart replaced by U+FFFD.
std::string decode_lossy(std::string_view bytes);

/// Number of trailing bytes of `s` (0..3) that start a valid UTF-8 sequence which is not yet complete.
size_t incomplete_tail(std::string_view s);

}  // namespace fkv::text::utf8
