// Byte-pair encoding over token ids: a piece starts as one token per byte and the adjacent pair
// with the lowest merge rank is merged until no pair has a merge; among pairs of equal rank (the
// same pair at several places) the leftmost goes first. This is the order of Hugging Face's
// BPE::merge_word (a heap of (rank, position)).
#pragma once
#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace seer {

class BpeMerges {
 public:
  struct Merge {
    int32_t rank;    // position in the merge list: lower merges first
    int32_t merged;  // token id of the concatenation
  };

  BpeMerges() = default;
  // Each pair must be distinct; ranks are their indices.
  explicit BpeMerges(const std::vector<std::array<int32_t, 3>>& left_right_merged);

  // The merge of (left, right), or nullptr if the pair never merges.
  const Merge* find(int32_t left, int32_t right) const;

 private:
  struct Slot {
    uint64_t key;  // kEmpty or (left << 32 | right)
    Merge merge;
  };
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  size_t slot_of(uint64_t key) const;

  std::vector<Slot> slots_;  // open addressing, linear probing, at most half full
  int shift_ = 64;
};

// Scratch space for encoding pieces, reused across the pieces of one text.
class BpeEncoder {
 public:
  // Appends the ids of `piece` to `out`. byte_tokens[b] is the token of the single byte b, or -1
  // if the vocabulary has none: such bytes are left out before merging.
  void encode(std::string_view piece, const std::array<int32_t, 256>& byte_tokens, const BpeMerges& merges,
              std::vector<int32_t>& out);

 private:
  struct Symbol {
    int32_t id;    // -1 once merged into the symbol on its left
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
  };
  struct Candidate {
    int32_t rank;
    int32_t left;      // symbol index; `right` is its neighbour when the candidate was made
    int32_t right;
    int32_t left_id;   // the ids the pair had then: a candidate is stale once either changed
    int32_t right_id;
    int32_t merged;
  };
  // Heap order (std::push_heap keeps the largest on top): the lowest rank, then the leftmost.
  static bool lower_priority(const Candidate& a, const Candidate& b);
  void push_candidate(int32_t left, const BpeMerges& merges);

  std::vector<Symbol> symbols_;
  std::vector<Candidate> heap_;
};

}  // namespace seer
