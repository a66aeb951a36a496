// UTF-8 validation, iteration and lossy decoding (see utf8.h).
#include "foresightkv/text/utf8.h"

#include <cstdint>

#include "foresightkv/core/error.h"

namespace fkv::text::utf8 {
namespace {

// Sequence length for a lead byte, 0 when the byte cannot start a sequence (continuation, C0/C1, F5..FF).
inline int lead_length(uint8_t b) {
  if (b < 0x80) return 1;
  if (b < 0xC2) return 0;
  if (b < 0xE0) return 2;
  if (b < 0xF0) return 3;
  if (b < 0xF5) return 4;
  return 0;
}

// Allowed range of the second byte for a lead byte (Unicode Table 3-7); later bytes are always 80..BF.
inline bool second_ok(uint8_t lead, uint8_t b) {
  switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return b >= 0x80 && b <= 0xBF;
  }
}

// Number of bytes from `i` that belong to a valid (possibly truncated) sequence: returns the count of bytes
// that match the well-formedness table before a mismatch or the end. `complete` tells whether all were there.
inline size_t scan_sequence(std::string_view s, size_t i, bool& complete) {
  const uint8_t lead = static_cast<uint8_t>(s[i]);
  const int len = lead_length(lead);
  complete = false;
  if (len == 0) return 0;
  if (len == 1) {
    complete = true;
    return 1;
  }
  size_t k = 1;
  for (; k < static_cast<size_t>(len); ++k) {
    if (i + k >= s.size()) return k;
    const uint8_t b = static_cast<uint8_t>(s[i + k]);
    const bool ok = k == 1 ? second_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return k;
  }
  complete = true;
  return k;
}

}  // namespace

size_t valid_prefix(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    bool complete = false;
    const size_t k = scan_sequence(s, i, complete);
    if (!complete) return i;
    i += k;
  }
  return n;
}

void check_valid(std::string_view s, std::string_view what) {
  const size_t ok = valid_prefix(s);
  if (ok == s.size()) return;
  std::string bytes;
  for (size_t k = ok; k < s.size() && k < ok + 4; ++k) bytes += fmt::format("{}{:02X}", bytes.empty() ? "" : " ", static_cast<uint8_t>(s[k]));
  FKV_THROW_KIND(1,
                 "{}: expected valid UTF-8, found an invalid byte sequence at byte offset {} (bytes {}); "
                 "convert the input to UTF-8 (or decode it lossily) before tokenizing",
                 what, ok, bytes);
}

char32_t next(std::string_view s, size_t& i) {
  const uint8_t b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const int len = lead_length(b0);
  char32_t cp = b0 & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string decode_lossy(std::string_view bytes) {
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  const size_t n = bytes.size();
  while (i < n) {
    const size_t run_start = i;
    while (i < n && static_cast<uint8_t>(bytes[i]) < 0x80) ++i;
    out.append(bytes.data() + run_start, i - run_start);
    if (i >= n) break;
    bool complete = false;
    const size_t k = scan_sequence(bytes, i, complete);
    if (complete) {
      out.append(bytes.data() + i, k);
      i += k;
    } else {
      // A maximal subpart: the lead plus its well-formed continuation bytes (at least one byte).
      out.append(kReplacement);
      i += k == 0 ? 1 : k;
    }
  }
  return out;
}

size_t incomplete_tail(std::string_view s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const size_t i = n - back;
    const uint8_t b = static_cast<uint8_t>(s[i]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: keep looking for the lead
    bool complete = false;
    const size_t k = scan_sequence(s, i, complete);
    // Incomplete and every byte up to the end fits the table: the rest may still arrive.
    return (!complete && k == back && k > 0) ? back : 0;
  }
  return 0;
}

}  // namespace fkv::text::utf8
