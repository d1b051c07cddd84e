// Block selection: top-k counts and order, thresholds, top-p, forced blocks, CSR validity, density.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "gate/mass_weight.h"
#include "gate/selection.h"
#include "reference.h"

namespace seer {
namespace {

std::vector<float> random_logits(const BlockLayout& layout) {
  auto logits = test::random_values<float>(size_t(layout.map_elements()), 2.0f);
  return logits;
}

std::vector<int32_t> row_of(const BlockMask& mask, int64_t row) {
  return {mask.indices.begin() + mask.indptr[size_t(row)], mask.indices.begin() + mask.indptr[size_t(row) + 1]};
}

TEST(Selection, TopKKeepsTheLargestLogits) {
  const Sequences seqs({0, 1000, 1700, 1701});
  const BlockLayout layout(seqs, 64, 3);
  const auto logits = random_logits(layout);
  for (double density : {0.05, 0.1, 0.3, 0.5, 1.0}) {
    const BlockMask mask = select_blocks(logits, layout, {.density = density});
    ASSERT_NO_THROW(validate_block_mask(mask, layout));
    for (int64_t s = 0; s < layout.sequences(); ++s) {
      const int64_t nb = layout.blocks[size_t(s)], k = top_k_blocks(density, nb);
      for (int h = 0; h < 3; ++h)
        for (int64_t i = 0; i < nb; ++i) {
          const auto kept = row_of(mask, mask_row(layout, s, h, i));
          ASSERT_EQ(int64_t(kept.size()), std::min(k, i + 1));
          const float* row = logits.data() + layout.map_offset[size_t(s)] + (h * nb + i) * nb;
          const std::set<int32_t> in(kept.begin(), kept.end());
          float worst_kept = 1e30f, best_dropped = -1e30f;
          for (int32_t j = 0; j <= i; ++j)
            (in.count(j) ? worst_kept : best_dropped) =
                in.count(j) ? std::min(worst_kept, row[j]) : std::max(best_dropped, row[j]);
          ASSERT_GE(worst_kept, best_dropped);
        }
    }
  }
  EXPECT_EQ(top_k_blocks(0.1, 128), 6);  // floor((1 - sqrt(0.9)) * 128) = floor(6.57)
  EXPECT_EQ(top_k_blocks(0.001, 10), 1);
  EXPECT_EQ(top_k_blocks(1.0, 10), 10);
}

TEST(Selection, TopKDensityFollowsTheFormula) {
  const BlockLayout layout(Sequences::single(64 * 512), 64, 2);
  const auto logits = random_logits(layout);
  for (double density : {0.1, 0.2, 0.3, 0.5}) {
    const BlockMask mask = select_blocks(logits, layout, {.density = density});
    const double t = double(top_k_blocks(density, 512)) / 512;
    EXPECT_NEAR(mask_density(mask, layout), 2 * t - t * t, 0.01) << density;
    EXPECT_NEAR(mask_density(mask, layout), density, 0.02) << density;
  }
}

// top_k_density is the density of every top-k mask on the layout, whatever the logits: several
// sequences, one shorter than k, the built-in model's 8k window (128 blocks: 0.091 at 0.1).
TEST(Selection, TopKDensityIsTheMasksDensity) {
  for (const Sequences& seqs : {Sequences({0, 1000, 1700, 1701, 9000}), Sequences::single(8192)}) {
    const BlockLayout layout(seqs, 64, 3);
    for (double density : {0.05, 0.1, 0.2, 0.3, 0.5, 1.0}) {
      const BlockMask mask = select_blocks(random_logits(layout), layout, {.density = density});
      EXPECT_DOUBLE_EQ(top_k_density(layout, density), mask_density(mask, layout)) << density;
    }
  }
  EXPECT_NEAR(top_k_density(BlockLayout(Sequences::single(8192), 64, 9), 0.1), 0.091, 0.0005);
  EXPECT_THROW(top_k_density(BlockLayout(Sequences::single(8192), 64, 9), 0.0), Error);
}

// with_dense_last_blocks on a mask built without them is the selection's own dense_last_blocks,
// for every method, on sequences shorter and longer than the dense rows.
TEST(Selection, DenseLastBlocksOfAnyMaskAreTheSelections) {
  const BlockLayout layout(Sequences({0, 100, 1000, 1700, 5000}), 64, 3);
  const auto logits = random_logits(layout);
  for (SelectionOptions options : {SelectionOptions{.density = 0.1},
                                   SelectionOptions{.method = SelectionOptions::Method::top_p, .mass = 0.6},
                                   SelectionOptions{.method = SelectionOptions::Method::threshold, .threshold = 0.05}})
    for (int n : {0, 1, 2, 40}) {
      const BlockMask sparse = select_blocks(logits, layout, options);
      options.dense_last_blocks = n;
      const BlockMask expected = select_blocks(logits, layout, options);
      options.dense_last_blocks = 0;
      const BlockMask got = with_dense_last_blocks(sparse, layout, n);
      EXPECT_EQ(got.indptr, expected.indptr) << n;
      EXPECT_EQ(got.indices, expected.indices) << n;
      if (n == 2) {
        EXPECT_GT(got.nnz(), sparse.nnz());
      }
    }
  EXPECT_THROW(with_dense_last_blocks(select_blocks(logits, layout, {.density = 0.1}), layout, -1), Error);
}

TEST(Selection, ThresholdKeepsProbableBlocksAndTheBest) {
  const BlockLayout layout(Sequences::single(64 * 40), 64, 2);
  const auto logits = random_logits(layout);
  for (double tau : {0.0, 0.01, 0.05, 0.5, 0.99}) {
    SelectionOptions opt{.method = SelectionOptions::Method::threshold, .threshold = tau};
    const BlockMask mask = select_blocks(logits, layout, opt);
    ASSERT_NO_THROW(validate_block_mask(mask, layout));
    for (int h = 0; h < 2; ++h)
      for (int64_t i = 0; i < 40; ++i) {
        const float* row = logits.data() + (h * 40 + i) * 40;
        double m = -1e30, sum = 0;
        for (int j = 0; j <= i; ++j) m = std::max(m, double(row[j]));
        for (int j = 0; j <= i; ++j) sum += std::exp(row[j] - m);
        std::vector<int32_t> want;
        for (int32_t j = 0; j <= i; ++j)
          if (std::exp(row[j] - m) / sum > tau || row[j] == m) want.push_back(j);
        ASSERT_EQ(row_of(mask, mask_row(layout, 0, h, i)), want);
      }
  }
}

// Top-p's integer weights: exp(value - max) * 2^32 to float precision, never above 2^32, monotone in
// the value (the cut relies on it), and 0 far below the max.
TEST(Selection, MassWeightIsExpInUnitsOf2ToTheMinus32) {
  constexpr double kUnit = 4294967296.0;
  EXPECT_EQ(mass_weight(1.5f, 1.5f), uint64_t(1) << 32);
  EXPECT_EQ(mass_weight(-100.f, 0.f), 0u);
  EXPECT_EQ(mass_weight(std::nanf(""), 0.f), 0u);
  constexpr int kSteps = 400000;  // x from -90 up to 0, evenly
  uint64_t previous = 0;
  for (int i = 0; i <= kSteps; ++i) {
    const float value = 3.25f - 90.f * float(kSteps - i) / float(kSteps);
    const uint64_t w = mass_weight(value, 3.25f);
    ASSERT_GE(w, previous) << "value = " << value;
    ASSERT_LE(w, uint64_t(1) << 32);
    const double exact = std::exp(double(value) - 3.25) * kUnit;
    ASSERT_NEAR(double(w), exact, 4e-7 * exact + 1.0) << "value = " << value;
    previous = w;
  }
  for (const float below : {1e-30f, 1e-8f, 1e-4f}) {
    const double exact = std::exp(-double(below)) * kUnit;
    EXPECT_NEAR(double(mass_weight(-below, 0.f)), exact, 4e-7 * exact + 1.0) << below;
  }
}

// Top-p: the kept blocks are the most probable, their mass reaches the goal, and dropping the least
// probable of them would fall short (the fewest blocks that do).
TEST(Selection, TopPKeepsTheFewestBlocksReachingTheMass) {
  const BlockLayout layout(Sequences::single(64 * 50), 64, 2);
  auto logits = random_logits(layout);
  for (int64_t j = 0; j < 50; ++j) logits[size_t(49 * 50 + j)] = 0.5f;  // head 0, row 49: flat
  logits[size_t(48 * 50 + 7)] = 40.f;                                   // head 0, row 48: one dominant block
  for (double mass : {0.3, 0.5, 0.9, 0.99, 1.0}) {
    SelectionOptions opt{.method = SelectionOptions::Method::top_p, .mass = mass};
    const BlockMask mask = select_blocks(logits, layout, opt);
    ASSERT_NO_THROW(validate_block_mask(mask, layout));
    for (int h = 0; h < 2; ++h)
      for (int64_t i = 0; i < 50; ++i) {
        const float* row = logits.data() + (h * 50 + i) * 50;
        double m = -1e30, sum = 0;
        for (int j = 0; j <= i; ++j) m = std::max(m, double(row[j]));
        for (int j = 0; j <= i; ++j) sum += std::exp(row[j] - m);
        const auto kept = row_of(mask, mask_row(layout, 0, h, i));
        const std::set<int32_t> in(kept.begin(), kept.end());
        double kept_mass = 0, least = 1e30, best_dropped = -1e30;
        for (int32_t j = 0; j <= i; ++j) {
          const double p = std::exp(row[j] - m) / sum;
          if (in.count(j)) {
            kept_mass += p;
            least = std::min(least, p);
          } else {
            best_dropped = std::max(best_dropped, p);
          }
        }
        ASSERT_LE(best_dropped, least) << "row " << i;
        if (int64_t(kept.size()) < i + 1) {
          ASSERT_GE(kept_mass, mass - 1e-6) << "row " << i;  // masses count in units of 2^-32 of the largest
        }
        ASSERT_LT(kept_mass - least, mass + 1e-6) << "row " << i << ": one block fewer would do";
      }
    EXPECT_EQ(row_of(mask, 48), std::vector<int32_t>{7}) << mass;  // the rest weigh below 2^-32 of it
    EXPECT_EQ(int64_t(row_of(mask, 49).size()), std::min<int64_t>(50, int64_t(std::ceil(mass * 50 - 1e-9))))
        << mass;
  }
}

TEST(Selection, ForcedBlocks) {
  const BlockLayout layout(Sequences::single(64 * 30), 64, 1);
  const auto logits = random_logits(layout);
  const BlockMask mask =
      select_blocks(logits, layout, {.density = 0.05, .dense_last_blocks = 2, .keep_sink = true, .local_blocks = 3});
  ASSERT_NO_THROW(validate_block_mask(mask, layout));
  for (int64_t i = 0; i < 30; ++i) {
    const auto kept = row_of(mask, i);
    EXPECT_EQ(kept.front(), 0);
    for (int64_t j = std::max<int64_t>(0, i - 2); j <= i; ++j)  // the 3 local blocks
      EXPECT_NE(std::find(kept.begin(), kept.end(), int32_t(j)), kept.end()) << "row " << i << " block " << j;
    if (i >= 28) {
      EXPECT_EQ(int64_t(kept.size()), i + 1);
    }
  }
}

TEST(Selection, RejectsBadOptions) {
  const BlockLayout layout(Sequences::single(200), 64, 1);
  const auto logits = random_logits(layout);
  EXPECT_THROW(select_blocks(logits, layout, {.density = 0.0}), Error);
  EXPECT_THROW(select_blocks(logits, layout, {.local_blocks = -1}), Error);
  EXPECT_THROW(select_blocks(logits, layout, {.density = 1.5}), Error);
  EXPECT_THROW(select_blocks(logits, layout, {.density = -0.1}), Error);
  EXPECT_THROW(select_blocks(logits, layout, {.method = SelectionOptions::Method::threshold, .threshold = 1.0}),
               Error);
  EXPECT_THROW(select_blocks(logits, layout, {.dense_last_blocks = -1}), Error);
  EXPECT_THROW(select_blocks(logits, layout, {.method = SelectionOptions::Method::top_p, .mass = 0.0}), Error);
  EXPECT_THROW(select_blocks(logits, layout, {.method = SelectionOptions::Method::top_p, .mass = 1.01}), Error);
  const SelectionOptions per_layer{.method = SelectionOptions::Method::top_p, .layer_mass = {0.5, 0.7}};
  EXPECT_THROW(select_blocks(logits, layout, per_layer), Error);  // one layer's options only
  EXPECT_EQ(per_layer.for_layer(1).mass, 0.7);
  EXPECT_TRUE(per_layer.for_layer(1).layer_mass.empty());
  EXPECT_THROW(per_layer.for_layer(2), Error);
  EXPECT_THROW((SelectionOptions{.method = SelectionOptions::Method::top_p, .layer_mass = {1.5}}.validate()), Error);
  EXPECT_THROW((SelectionOptions{.layer_mass = {0.5}}.validate()), Error);  // per-layer masses without top-p
  EXPECT_NO_THROW(per_layer.validate());
  EXPECT_THROW(select_blocks(std::span(logits).first(5), layout, {}), Error);
}

}  // namespace
}  // namespace seer
