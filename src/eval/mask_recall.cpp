#include "eval/mask_recall.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace seer {

int MaskRecall::category(int64_t i, int64_t j) { return j == 0 ? 0 : 1 + distance_bucket(i - j); }

std::string MaskRecall::category_name(int c) {
  SEER_CHECK(c >= 0 && c < kCategories, "recall category ", c, " out of range");
  if (c == 0) return "sink";
  const int bucket = c - 1;
  if (bucket < 4) return std::to_string(bucket);
  const int64_t first = int64_t(1) << (bucket - 2);  // bucket b >= 4 starts at 2^(b - 2)
  return bucket == kBiasDistanceBuckets - 1 ? std::to_string(first) + "+"
                                            : std::to_string(first) + "-" + std::to_string(2 * first - 1);
}

void MaskRecall::add(const BlockMask& reference_mask, const BlockMask& candidate_mask, const BlockLayout& layout) {
  validate_block_mask(reference_mask, layout);
  validate_block_mask(candidate_mask, layout);
  for (int64_t s = 0; s < layout.sequences(); ++s)
    for (int h = 0; h < layout.heads; ++h)
      for (int64_t i = 0; i < layout.blocks[size_t(s)]; ++i) {
        const int64_t row = mask_row(layout, s, h, i);
        // Both rows are sorted (validate_block_mask): one merge walk.
        auto c = candidate_mask.indices.begin() + candidate_mask.indptr[size_t(row)];
        const auto c_end = candidate_mask.indices.begin() + candidate_mask.indptr[size_t(row + 1)];
        for (int64_t e = reference_mask.indptr[size_t(row)]; e < reference_mask.indptr[size_t(row + 1)]; ++e) {
          const int32_t j = reference_mask.indices[size_t(e)];
          const int cat = category(i, j);
          ++reference[size_t(cat)];
          c = std::lower_bound(c, c_end, j);
          if (c != c_end && *c == j) ++kept[size_t(cat)];
        }
      }
}

int64_t MaskRecall::reference_total() const { return std::accumulate(reference.begin(), reference.end(), int64_t(0)); }
int64_t MaskRecall::kept_total() const { return std::accumulate(kept.begin(), kept.end(), int64_t(0)); }

}  // namespace seer
