// Byte-level BPE merges by rank (see bpe.h).
#include "foresightkv/text/bpe.h"

#include <queue>

#include "foresightkv/core/error.h"
#include "foresightkv/text/pretokenizer.h"
#include "foresightkv/text/utf8.h"

namespace fkv::text::detail {
namespace {

constexpr size_t kMaxCachedPieceBytes = 256;   // longer pieces (rare) are not cached
constexpr size_t kMaxCacheEntries = 1 << 18;   // the cache is cleared when it grows past this

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

struct Candidate {
  uint32_t rank;
  int32_t pos;
  int32_t new_id;
  // priority_queue is a max-heap: "less" means lower priority, i.e. higher rank, then larger position.
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::BpeModel(std::unordered_map<std::string, int32_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges,
                   std::optional<int32_t> unk_id)
    : vocab_(std::move(vocab)), ignore_merges_(ignore_merges), unk_id_(unk_id) {
  merges_.reserve(merges.size() * 2);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = vocab_.find(a);
    auto ib = vocab_.find(b);
    FKV_CHECK_FORMAT(ia != vocab_.end() && ib != vocab_.end(),
                     "BPE merge #{} ('{}' '{}') names a token that is not in the vocabulary; the tokenizer file is "
                     "inconsistent (regenerate or re-download it)",
                     rank, a, b);
    auto im = vocab_.find(a + b);
    FKV_CHECK_FORMAT(im != vocab_.end(),
                     "BPE merge #{} ('{}' '{}'): the merged token '{}' is not in the vocabulary; the tokenizer file "
                     "is inconsistent",
                     rank, a, b, a + b);
    merges_[pair_key(ia->second, ib->second)] = {static_cast<uint32_t>(rank), im->second};
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    utf8::append(s, byte_to_char(static_cast<uint8_t>(b)));
    auto it = vocab_.find(s);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(std::string(piece));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(piece, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(piece), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view piece, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    std::string spelled;
    spelled.reserve(piece.size() * 2);
    for (char c : piece) utf8::append(spelled, byte_to_char(static_cast<uint8_t>(c)));
    auto it = vocab_.find(spelled);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Initial symbols: one per byte. A byte missing from the vocabulary becomes unk, or is dropped without one
  // (HF BPE behaviour; every byte-level vocabulary has all 256 symbols).
  std::vector<Symbol> sym;
  sym.reserve(piece.size());
  for (char c : piece) {
    int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id < 0) {
      if (!unk_id_) continue;
      id = *unk_id_;
    }
    sym.push_back({id, static_cast<int32_t>(sym.size()) - 1, static_cast<int32_t>(sym.size()) + 1, true});
  }
  if (sym.empty()) return;
  sym.back().next = -1;
  const int32_t n = static_cast<int32_t>(sym.size());

  std::priority_queue<Candidate> queue;
  auto push_pair = [&](int32_t left) {
    const int32_t right = sym[left].next;
    if (right < 0) return;
    auto it = merges_.find(pair_key(sym[left].id, sym[right].id));
    if (it != merges_.end()) queue.push({it->second.first, left, it->second.second});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[left.next];
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.second != top.new_id) continue;  // stale entry
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace fkv::text::detail
