// How much of a reference block selection (an oracle's top-k) a candidate (the gate's) keeps, by
// where the blocks lie: the attention sink (key block 0), then the block distance i - j in the
// buckets of gate/block_bias.h (0, 1, 2, 3, 4-7, ..., 64+). It shows where a gate ranks blocks
// differently from its target: a gate that misses the far blocks the oracle keeps needs something
// else than one that misses the near ones.
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "attention/block_mask.h"
#include "gate/block_bias.h"

namespace seer {

struct MaskRecall {
  static constexpr int kCategories = 1 + kBiasDistanceBuckets;  // the sink, then the distance buckets
  std::array<int64_t, kCategories> reference{};  // blocks the reference keeps, per category
  std::array<int64_t, kCategories> kept{};       // of those, the ones the candidate keeps too

  // The category of block pair (i, j <= i), and its name ("sink", "0", ..., "4-7", ..., "64+").
  static int category(int64_t i, int64_t j);
  static std::string category_name(int c);

  // Adds the blocks of two masks over the same layout (both validated against it).
  void add(const BlockMask& reference_mask, const BlockMask& candidate_mask, const BlockLayout& layout);
  int64_t reference_total() const;
  int64_t kept_total() const;
};

}  // namespace seer
