// Internal: the byte-level BPE model (engineering.md §4.2 step 4). A piece's UTF-8 bytes become byte symbols
// (GPT-2 bytes_to_unicode spelling), then the adjacent pair with the lowest merge rank is merged, leftmost
// first on equal ranks, until no ranked pair remains (HF tokenizers' Word::merge_all, priority queue with
// lazy invalidation). `ignore_merges` emits a piece that is itself a vocabulary entry directly. Results are
// cached per piece (thread-safe). Not part of the public API.
#pragma once
#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fkv::text::detail {

class BpeModel {
 public:
  /// `vocab`: token spelling (byte-level alphabet) -> id. `merges`: pairs of spellings, rank = index (a repeated
  /// pair keeps its last rank, as HF does). Throws FormatError when a merge names a token missing from `vocab`.
  BpeModel(std::unordered_map<std::string, int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           bool ignore_merges, std::optional<int32_t> unk_id);

  /// Appends the ids of one pre-tokenized piece (raw UTF-8 bytes, before byte-level mapping).
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }
  size_t merge_count() const { return merges_.size(); }

 private:
  void merge_word(std::string_view piece, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges_;  // (left id, right id) -> (rank, merged id)
  std::array<int32_t, 256> byte_ids_{};                                // id of each byte's symbol, -1 when absent
  bool ignore_merges_ = false;
  std::optional<int32_t> unk_id_;

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace fkv::text::detail
