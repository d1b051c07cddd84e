#include <gtest/gtest.h>

#include "attention/block_mask.h"
#include "core/bf16.h"
#include "core/fast_exp.h"
#include "core/sequences.h"

namespace seer {
namespace {

TEST(Sequences, BlockLayoutPacksPerSequenceMaps) {
  const Sequences seqs({0, 1, 130, 194});
  const BlockLayout layout(seqs, 64, 3);
  EXPECT_EQ(layout.blocks, (std::vector<int64_t>{1, 3, 1}));
  EXPECT_EQ(layout.row_offset, (std::vector<int64_t>{0, 1, 4, 5}));
  EXPECT_EQ(layout.map_offset, (std::vector<int64_t>{0, 3, 3 + 27, 3 + 27 + 3}));
  EXPECT_EQ(layout.causal_pairs(), 3 * (1 + 6 + 1));
  EXPECT_EQ(mask_row(layout, 1, 2, 1), 1 * 3 + 2 * 3 + 1);
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(bf16(std::bit_cast<float>(0x3f808000u)).bits, 0x3f80);  // tie -> even
  EXPECT_EQ(bf16(std::bit_cast<float>(0x3f818000u)).bits, 0x3f82);  // tie -> even (up)
  EXPECT_EQ(bf16(std::bit_cast<float>(0x3f808001u)).bits, 0x3f81);
  EXPECT_TRUE(std::isnan(float(bf16(std::nanf("")))));
  EXPECT_EQ(float(bf16(-2.5f)), -2.5f);
}

TEST(FastExp, RelativeErrorBelow3e7) {
  for (double x = -87.0; x <= 88.0; x += 0.0137) {
    const double want = std::exp(double(float(x)));
    ASSERT_NEAR(fast_exp(float(x)) / want, 1.0, 3e-7) << x;
  }
  EXPECT_EQ(fast_exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(fast_exp(-100.0f), 0.0f);
  EXPECT_EQ(fast_exp(0.0f), 1.0f);
}

}  // namespace
}  // namespace seer
