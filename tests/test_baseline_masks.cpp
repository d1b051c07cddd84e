// The training-free baselines of the accuracy table (eval/baseline_masks.h) against their
// definitions: StreamingLLM's sink plus window, MInference's vertical and slash lines ranked by the
// last query block, Quest's bound recomputed in double. Each mask must be valid, reach its density
// and be the smallest of its family that does.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "eval/baseline_masks.h"
#include "gate/selection.h"
#include "reference.h"

namespace seer {
namespace {

// The kept key blocks of each mask row, as sets.
std::vector<std::set<int32_t>> kept_sets(const BlockMask& mask) {
  std::vector<std::set<int32_t>> rows(size_t(mask.rows()));
  for (int64_t r = 0; r < mask.rows(); ++r)
    rows[size_t(r)].insert(mask.indices.begin() + mask.indptr[size_t(r)],
                           mask.indices.begin() + mask.indptr[size_t(r + 1)]);
  return rows;
}

double kept_fraction(const std::vector<std::set<int32_t>>& rows, const BlockLayout& layout) {
  double kept = 0;
  for (const auto& r : rows) kept += double(r.size());
  return kept / double(layout.causal_pairs());
}

// Sequences of 130, 41 and 7 blocks (the last one partial), 3 heads.
const Sequences kSeqs = Sequences::from_lengths({130 * 64, 40 * 64 + 17, 7 * 64 - 5});

TEST(BaselineMasks, StreamingIsTheSinkAndTheSmallestWindowReachingTheDensity) {
  const BlockLayout layout(kSeqs, 64, 3);
  for (const double density : {0.05, 0.1, 0.3, 0.5}) {
    const BlockMask mask = streaming_mask(layout, density);
    validate_block_mask(mask, layout);
    // The window is the number of blocks up to the diagonal that the last row of the longest
    // sequence keeps besides the sink.
    const std::vector<std::set<int32_t>> rows = kept_sets(mask);
    const int64_t window = int64_t(rows[size_t(mask_row(layout, 0, 0, 129))].size()) - 1;
    ASSERT_GE(window, 1);
    const auto family = [&](int64_t w) {  // sink + the last w blocks, built here
      std::vector<std::set<int32_t>> built(rows.size());
      for (int64_t s = 0; s < layout.sequences(); ++s)
        for (int h = 0; h < layout.heads; ++h)
          for (int64_t i = 0; i < layout.blocks[size_t(s)]; ++i) {
            std::set<int32_t>& row = built[size_t(mask_row(layout, s, h, i))];
            row.insert(0);
            for (int64_t j = std::max<int64_t>(0, i - w + 1); j <= i; ++j) row.insert(int32_t(j));
          }
      return built;
    };
    EXPECT_EQ(family(window), rows);
    EXPECT_GE(kept_fraction(rows, layout), density);
    EXPECT_LT(kept_fraction(family(window - 1), layout), density) << "a smaller window reaches the density too";
    EXPECT_NEAR(kept_fraction(rows, layout), mask_density(mask, layout), 1e-12);
  }
  EXPECT_THROW(streaming_mask(layout, 1.5), Error);
}

TEST(BaselineMasks, VerticalSlashKeepsTheLastRowsTopColumnsAndDiagonals) {
  const BlockLayout layout(kSeqs, 64, 3);
  // Random last rows, one per (sequence, head), packed like the mask rows' [H, nb].
  std::vector<float> last_rows = test::random_values<float>(size_t(layout.total_rows() * layout.heads), 1.0f);
  for (const double density : {0.1, 0.3}) {
    const BlockMask mask = vertical_slash_mask(last_rows, layout, density);
    validate_block_mask(mask, layout);
    const std::vector<std::set<int32_t>> rows = kept_sets(mask);
    EXPECT_GE(kept_fraction(rows, layout), density);
    // n lines of each kind: the top-n columns j of the last row, and the offsets i - j of the top-n
    // entries of the last row (key block j of the last row lies on offset nb - 1 - j). Find the n
    // that rebuilds the mask, then check that n - 1 would not reach the density.
    const auto build = [&](int64_t n) {
      std::vector<std::set<int32_t>> built(rows.size());
      for (int64_t s = 0; s < layout.sequences(); ++s) {
        const int64_t nb = layout.blocks[size_t(s)];
        for (int h = 0; h < layout.heads; ++h) {
          const float* row = last_rows.data() + layout.row_offset[size_t(s)] * layout.heads + int64_t(h) * nb;
          std::vector<int64_t> order(static_cast<size_t>(nb));
          std::iota(order.begin(), order.end(), 0);
          std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
          std::set<int64_t> columns, offsets;
          for (int64_t r = 0; r < std::min(n, nb); ++r) {
            columns.insert(order[size_t(r)]);
            offsets.insert(nb - 1 - order[size_t(r)]);
          }
          for (int64_t i = 0; i < nb; ++i)
            for (int64_t j = 0; j <= i; ++j)
              if (columns.count(j) || offsets.count(i - j))
                built[size_t(mask_row(layout, s, h, i))].insert(int32_t(j));
        }
      }
      return built;
    };
    int64_t n = 0;
    while (n <= 130 && build(n) != rows) ++n;
    ASSERT_LE(n, 130) << "no number of lines rebuilds the mask at density " << density;
    ASSERT_GE(n, 1);
    EXPECT_LT(kept_fraction(build(n - 1), layout), density) << "fewer lines reach the density too";
  }
}

TEST(BaselineMasks, QuestKeepsTheBlocksWithTheLargestBound) {
  const HeadDims dims{4, 2, 32};
  const Sequences seqs = Sequences::from_lengths({1000, 300});
  const BlockLayout layout(seqs, 64, dims.q_heads);
  std::vector<bf16> q, k;
  for (const float x : test::random_values<float>(size_t(seqs.tokens() * dims.q_heads * dims.head_dim), 1.0f))
    q.push_back(bf16(x));
  for (const float x : test::random_values<float>(size_t(seqs.tokens() * dims.kv_heads * dims.head_dim), 1.0f))
    k.push_back(bf16(x));
  const double density = 0.2;
  const BlockMask mask = quest_mask(q, k, seqs, dims, density);
  validate_block_mask(mask, layout);
  const std::vector<std::set<int32_t>> rows = kept_sets(mask);
  const int d = dims.head_dim;
  for (int64_t s = 0; s < seqs.count(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)], t0 = seqs.start(s), len = seqs.length(s);
    for (int h = 0; h < dims.q_heads; ++h)
      for (int64_t i = 0; i < nb; ++i) {
        // The bound in double: Σ_c max(q̄_c·kmax_c, q̄_c·kmin_c), q̄ the query block's mean.
        std::vector<double> qmean(size_t(d), 0.0);
        const int64_t q_first = i * 64, q_last = std::min(len, q_first + 64);
        for (int64_t t = q_first; t < q_last; ++t)
          for (int c = 0; c < d; ++c)
            qmean[size_t(c)] += to_double(q[size_t(((t0 + t) * dims.q_heads + h) * d + c)]) / double(q_last - q_first);
        std::vector<double> bound(size_t(i + 1), 0.0);
        for (int64_t j = 0; j <= i; ++j)
          for (int c = 0; c < d; ++c) {
            double hi = -1e300, lo = 1e300;
            for (int64_t t = j * 64; t < std::min(len, j * 64 + 64); ++t) {
              const double x = to_double(k[size_t(((t0 + t) * dims.kv_heads + h / dims.group()) * d + c)]);
              hi = std::max(hi, x), lo = std::min(lo, x);
            }
            bound[size_t(j)] += std::max(qmean[size_t(c)] * hi, qmean[size_t(c)] * lo);
          }
        const std::set<int32_t>& kept = rows[size_t(mask_row(layout, s, h, i))];
        EXPECT_EQ(int64_t(kept.size()), std::min<int64_t>(i + 1, top_k_blocks(density, nb))) << "row " << i;
        // Every kept block's bound is at least every dropped one's (up to float rounding).
        double lowest_kept = 1e300, highest_dropped = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          if (kept.count(int32_t(j)))
            lowest_kept = std::min(lowest_kept, bound[size_t(j)]);
          else
            highest_dropped = std::max(highest_dropped, bound[size_t(j)]);
        }
        EXPECT_GE(lowest_kept, highest_dropped - 1e-4 * std::abs(highest_dropped)) << "row " << i << " head " << h;
      }
  }
  EXPECT_THROW(quest_mask(std::span(q).first(10), k, seqs, dims, density), Error);
}

}  // namespace
}  // namespace seer
