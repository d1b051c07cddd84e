#include "tokenizer/bpe.h"

#include <algorithm>
#include <bit>

#include "core/error.h"

namespace seer {
namespace {

uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

}  // namespace

BpeMerges::BpeMerges(const std::vector<std::array<int32_t, 3>>& left_right_merged) {
  const size_t capacity = std::bit_ceil(std::max<size_t>(2 * left_right_merged.size(), 16));
  shift_ = 64 - std::countr_zero(capacity);
  slots_.assign(capacity, Slot{kEmpty, {0, 0}});
  for (size_t rank = 0; rank < left_right_merged.size(); ++rank) {
    const auto [left, right, merged] = left_right_merged[rank];
    const uint64_t key = pair_key(left, right);
    size_t slot = slot_of(key);
    while (slots_[slot].key != kEmpty) {
      SEER_CHECK(slots_[slot].key != key, "merge ", rank, " repeats the pair of tokens ", left, " and ", right,
                 " (merge ", slots_[slot].merge.rank, ")");
      slot = (slot + 1) & (capacity - 1);
    }
    slots_[slot] = Slot{key, {int32_t(rank), merged}};
  }
}

size_t BpeMerges::slot_of(uint64_t key) const {
  // Fibonacci hashing: the top bits of key * 2^64/phi spread consecutive ids well.
  return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_);
}

const BpeMerges::Merge* BpeMerges::find(int32_t left, int32_t right) const {
  if (slots_.empty()) return nullptr;
  const uint64_t key = pair_key(left, right);
  for (size_t slot = slot_of(key);; slot = (slot + 1) & (slots_.size() - 1)) {
    if (slots_[slot].key == key) return &slots_[slot].merge;
    if (slots_[slot].key == kEmpty) return nullptr;
  }
}

bool BpeEncoder::lower_priority(const Candidate& a, const Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
}

void BpeEncoder::push_candidate(int32_t left, const BpeMerges& merges) {
  const int32_t right = symbols_[size_t(left)].next;
  if (right < 0) return;
  const int32_t left_id = symbols_[size_t(left)].id, right_id = symbols_[size_t(right)].id;
  if (const BpeMerges::Merge* merge = merges.find(left_id, right_id)) {
    heap_.push_back({merge->rank, left, right, left_id, right_id, merge->merged});
    std::push_heap(heap_.begin(), heap_.end(), lower_priority);
  }
}

void BpeEncoder::encode(std::string_view piece, const std::array<int32_t, 256>& byte_tokens,
                        const BpeMerges& merges, std::vector<int32_t>& out) {
  symbols_.clear();
  for (char byte : piece) {
    const int32_t id = byte_tokens[uint8_t(byte)];
    if (id < 0) continue;  // no token for this byte: dropped, as Hugging Face does without an unk token
    const int32_t index = int32_t(symbols_.size());
    symbols_.push_back({id, index - 1, -1});
    if (index > 0) symbols_[size_t(index) - 1].next = index;
  }
  if (symbols_.empty()) return;
  heap_.clear();
  for (int32_t i = 0; i + 1 < int32_t(symbols_.size()); ++i) push_candidate(i, merges);

  while (!heap_.empty()) {
    std::pop_heap(heap_.begin(), heap_.end(), lower_priority);
    const Candidate c = heap_.back();
    heap_.pop_back();
    Symbol& left = symbols_[size_t(c.left)];
    if (left.id != c.left_id || left.next != c.right || symbols_[size_t(c.right)].id != c.right_id) continue;
    Symbol& right = symbols_[size_t(c.right)];
    left.id = c.merged;
    left.next = right.next;
    if (right.next >= 0) symbols_[size_t(right.next)].prev = c.left;
    right.id = -1;
    if (left.prev >= 0) push_candidate(left.prev, merges);
    push_candidate(c.left, merges);
  }
  for (int32_t i = 0; i >= 0; i = symbols_[size_t(i)].next) out.push_back(symbols_[size_t(i)].id);
}

}  // namespace seer
