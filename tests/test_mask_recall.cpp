// MaskRecall (eval/mask_recall.h) against counts made directly on random masks.
#include <gtest/gtest.h>

#include <set>

#include "eval/mask_recall.h"
#include "reference.h"

namespace seer {
namespace {

// The category from its definition: the sink, else the distance's range.
int expected_category(int64_t i, int64_t j) {
  if (j == 0) return 0;
  const int64_t d = i - j;
  const int64_t starts[] = {0, 1, 2, 3, 4, 8, 16, 32, 64};
  int bucket = 0;
  for (int b = 0; b < 9; ++b)
    if (d >= starts[b]) bucket = b;
  return 1 + bucket;
}

TEST(MaskRecall, CountsTheReferencesBlocksTheCandidateKeeps) {
  const BlockLayout layout(Sequences::from_lengths({150 * 64, 20 * 64 + 3, 64}), 64, 2);
  const BlockMask reference = test::random_mask(layout, 0.2, false), candidate = test::random_mask(layout, 0.5, false);
  MaskRecall recall;
  recall.add(reference, candidate, layout);
  recall.add(reference, reference, layout);  // a mask keeps all of itself
  std::array<int64_t, MaskRecall::kCategories> want_reference{}, want_kept{};
  for (int64_t s = 0; s < layout.sequences(); ++s)
    for (int h = 0; h < layout.heads; ++h)
      for (int64_t i = 0; i < layout.blocks[size_t(s)]; ++i) {
        const int64_t row = mask_row(layout, s, h, i);
        const std::set<int32_t> cand(candidate.indices.begin() + candidate.indptr[size_t(row)],
                                     candidate.indices.begin() + candidate.indptr[size_t(row + 1)]);
        for (int64_t e = reference.indptr[size_t(row)]; e < reference.indptr[size_t(row + 1)]; ++e) {
          const int32_t j = reference.indices[size_t(e)];
          const int c = expected_category(i, j);
          EXPECT_EQ(MaskRecall::category(i, j), c) << "i " << i << " j " << j;
          want_reference[size_t(c)] += 2;
          want_kept[size_t(c)] += 1 + int64_t(cand.count(j));
        }
      }
  EXPECT_EQ(recall.reference, want_reference);
  EXPECT_EQ(recall.kept, want_kept);
  EXPECT_GT(recall.reference[8], 0);  // distances 32-63 occur...
  EXPECT_GT(recall.reference[9], 0);  // ...and 64 and more
  EXPECT_EQ(recall.reference_total(), 2 * reference.nnz());
  EXPECT_LT(recall.kept_total(), recall.reference_total());
  // A mask of another layout is refused.
  const BlockLayout other(Sequences::from_lengths({640}), 64, 2);
  EXPECT_THROW(recall.add(test::random_mask(other, 0.5, false), candidate, layout), Error);
}

TEST(MaskRecall, NamesItsCategories) {
  const char* names[] = {"sink", "0", "1", "2", "3", "4-7", "8-15", "16-31", "32-63", "64+"};
  for (int c = 0; c < MaskRecall::kCategories; ++c) EXPECT_EQ(MaskRecall::category_name(c), names[c]);
  EXPECT_THROW(MaskRecall::category_name(MaskRecall::kCategories), Error);
}

}  // namespace
}  // namespace seer
