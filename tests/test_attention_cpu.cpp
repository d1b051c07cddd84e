// CPU attention operators against double-precision references on fresh random inputs.
#include <gtest/gtest.h>

#include "attention/attention_cpu.h"
#include "reference.h"

namespace seer {
namespace {

using test::poisoned;
using test::random_values;

using Shape = test::AttentionShape;

// Partial last blocks, one-token and one-block sequences, batches of unequal sequences,
// GQA groups 1, 3, 4 and 8, head dims 64 and 128.
const std::vector<Shape> kShapes = {
    {{1}, 2, 2, 64},          {{64}, 4, 4, 64},      {{100}, 3, 1, 64},      {{130, 1, 64, 200}, 8, 2, 64},
    {{257}, 8, 1, 128},       {{65, 190}, 4, 4, 128}, {{129, 17}, 6, 2, 128},
};

template <typename T>
struct Inputs {
  Sequences seqs;
  HeadDims dims;
  std::vector<T> q, k, v;
  explicit Inputs(const Shape& shape)
      : seqs(Sequences::from_lengths(shape.lengths)), dims{shape.q_heads, shape.kv_heads, shape.head_dim} {
    const size_t t = size_t(seqs.tokens());
    q = random_values<T>(t * dims.q_heads * dims.head_dim, 1.5f);
    k = random_values<T>(t * dims.kv_heads * dims.head_dim, 1.5f);
    v = random_values<T>(t * dims.kv_heads * dims.head_dim);
  }
  std::span<const T> qs() const { return q; }
  std::span<const T> ks() const { return k; }
  std::span<const T> vs() const { return v; }
};


template <typename T>
class AttentionCpu : public ::testing::Test {};
using InputTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(AttentionCpu, InputTypes);

TYPED_TEST(AttentionCpu, DenseMatchesReference) {
  for (const Shape& shape : kShapes) {
    const Inputs<TypeParam> in(shape);
    auto out = poisoned(in.q.size()), lse = poisoned(size_t(in.seqs.tokens() * in.dims.q_heads));
    dense_attention_cpu<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, out, lse);
    std::vector<double> ref_out, ref_lse;
    test::reference_attention<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, ref_out, ref_lse);
    EXPECT_LT(test::relative_error(out, ref_out), 2e-6) << "tokens " << in.seqs.tokens();
    EXPECT_LT(test::max_abs_error(lse, ref_lse), 2e-5) << "tokens " << in.seqs.tokens();
  }
}

TYPED_TEST(AttentionCpu, StreamingGroundTruthMatchesBruteForce) {
  for (const Shape& shape : kShapes)
    for (int block : {64, 16})
      for (GtPooling pooling : {GtPooling::max, GtPooling::mass, GtPooling::peak_mass}) {
        const Inputs<TypeParam> in(shape);
        const BlockLayout layout(in.seqs, block, in.dims.q_heads);
        auto out = poisoned(in.q.size()), lse = poisoned(size_t(in.seqs.tokens() * in.dims.q_heads));
        auto gt = poisoned(size_t(layout.map_elements()));
        ground_truth_attention_cpu<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, block, out, lse, gt,
                                              pooling);
        std::vector<double> brute(gt.size());
        ground_truth_bruteforce_cpu<TypeParam>(in.qs(), in.ks(), in.seqs, in.dims, block, brute, pooling);
        const std::string where = std::string("block ") + std::to_string(block) + ", " + gt_pooling_name(pooling);
        // The streaming pass computes scores in float, the brute force in double: the maps agree to
        // 1e-6 relative as a whole and every element to float noise on its scores (1e-5 relative).
        EXPECT_LT(test::relative_error(gt, brute), 1e-6) << where;
        for (size_t n = 0; n < gt.size(); ++n)
          ASSERT_NEAR(gt[n], brute[n], 1e-5 * std::max(brute[n], 1e-3)) << "element " << n << ", " << where;
        if (pooling != GtPooling::max && *std::max_element(layout.blocks.begin(), layout.blocks.end()) > 1) {
          // Not the max map under another name (they differ once a row has two blocks).
          std::vector<double> max_map(gt.size());
          ground_truth_bruteforce_cpu<TypeParam>(in.qs(), in.ks(), in.seqs, in.dims, block, max_map, GtPooling::max);
          EXPECT_GT(test::max_abs_error(gt, max_map), 1e-2) << where;
        }
        // Rows sum to one over the causal part; zero above the diagonal.
        for (int64_t s = 0; s < layout.sequences(); ++s) {
          const int64_t nb = layout.blocks[size_t(s)];
          for (int h = 0; h < layout.heads; ++h)
            for (int64_t i = 0; i < nb; ++i) {
              double sum = 0;
              for (int64_t j = 0; j < nb; ++j) {
                const double x = gt[size_t(layout.map_offset[size_t(s)] + (h * nb + i) * nb + j)];
                if (j > i) {
                  ASSERT_EQ(x, 0.0);
                }
                sum += x;
              }
              ASSERT_NEAR(sum, 1.0, 1e-5);
            }
        }
        // The ground-truth pass is also a dense forward.
        std::vector<double> ref_out, ref_lse;
        test::reference_attention<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, ref_out, ref_lse);
        EXPECT_LT(test::relative_error(out, ref_out), 2e-6);
      }
}

// An oracle independent of both ground-truth implementations: a row's share of attention in key
// block j is exp(lse_j - lse), lse_j the row's log-sum-exp with only block j visible (the masked
// double reference). Mass pools the shares by the mean over a query block's rows, peak-mass by the
// max; checked on the sink column (mass: exactly, its rows already sum to 1) and, for peak-mass, as
// the ratio of the sink to the diagonal block (the normalization cancels).
TYPED_TEST(AttentionCpu, MassGroundTruthsAreTheRowsShareOfAttention) {
  const int block = 16;
  for (const Shape& shape : kShapes) {
    const Inputs<TypeParam> in(shape);
    const BlockLayout layout(in.seqs, block, in.dims.q_heads);
    const auto only = [&](bool sink) {  // every row keeps key block 0, or its own diagonal block
      BlockMask m{block, layout.heads, {0}, {}};
      for (int64_t s = 0; s < layout.sequences(); ++s)
        for (int h = 0; h < layout.heads; ++h)
          for (int64_t i = 0; i < layout.blocks[size_t(s)]; ++i) {
            m.indices.push_back(sink ? 0 : int32_t(i));
            m.indptr.push_back(int64_t(m.indices.size()));
          }
      return m;
    };
    const BlockMask sink_only = only(true), diagonal_only = only(false);
    std::vector<double> out, lse, lse_sink, lse_diagonal;
    test::reference_attention<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, out, lse);
    test::reference_attention<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, out, lse_sink, &sink_only);
    test::reference_attention<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, out, lse_diagonal,
                                         &diagonal_only);
    std::vector<float> o(in.q.size()), l(size_t(in.seqs.tokens() * in.dims.q_heads));
    std::vector<float> mass(size_t(layout.map_elements())), peak(mass.size());
    ground_truth_attention_cpu<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, block, o, l, mass,
                                          GtPooling::mass);
    ground_truth_attention_cpu<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, block, o, l, peak,
                                          GtPooling::peak_mass);
    for (int64_t s = 0; s < layout.sequences(); ++s) {
      const int64_t nb = layout.blocks[size_t(s)], len = in.seqs.length(s);
      for (int h = 0; h < layout.heads; ++h)
        for (int64_t i = 0; i < nb; ++i) {
          double mean_sink = 0, peak_sink = 0, peak_diagonal = 0;
          const int64_t rows = std::min<int64_t>(block, len - i * block);
          for (int64_t r = i * block; r < i * block + rows; ++r) {
            const size_t at = size_t(h * in.seqs.tokens() + in.seqs.start(s) + r);
            const double sink = std::exp(lse_sink[at] - lse[at]), diagonal = std::exp(lse_diagonal[at] - lse[at]);
            mean_sink += sink / double(rows);
            peak_sink = std::max(peak_sink, sink);
            peak_diagonal = std::max(peak_diagonal, diagonal);
          }
          const size_t row = size_t(layout.map_offset[size_t(s)] + (h * nb + i) * nb);
          ASSERT_NEAR(mass[row], mean_sink, 1e-5) << "s " << s << " h " << h << " i " << i;
          ASSERT_NEAR(peak[row] / peak[row + size_t(i)], peak_sink / peak_diagonal, 1e-4 * peak_sink / peak_diagonal)
              << "s " << s << " h " << h << " i " << i;
        }
    }
  }
}

TYPED_TEST(AttentionCpu, BlockSparseMatchesMaskedReference) {
  for (const Shape& shape : kShapes)
    for (bool keep_diagonal : {true, false}) {
      const Inputs<TypeParam> in(shape);
      const BlockLayout layout(in.seqs, 64, in.dims.q_heads);
      const BlockMask mask = test::random_mask(layout, 0.4, keep_diagonal);
      auto out = poisoned(in.q.size()), lse = poisoned(size_t(in.seqs.tokens() * in.dims.q_heads));
      block_sparse_attention_cpu<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, mask, out, lse);
      std::vector<double> ref_out, ref_lse;
      test::reference_attention<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, ref_out, ref_lse, &mask);
      EXPECT_LT(test::max_abs_error(out, ref_out), 1e-5);
      EXPECT_LT(test::max_abs_error(lse, ref_lse), 2e-5);
    }
}

TYPED_TEST(AttentionCpu, FullMaskEqualsDense) {
  const Inputs<TypeParam> in(kShapes[3]);
  const BlockLayout layout(in.seqs, 64, in.dims.q_heads);
  auto dense = poisoned(in.q.size()), sparse = poisoned(in.q.size());
  auto lse_dense = poisoned(size_t(in.seqs.tokens() * in.dims.q_heads)), lse_sparse = lse_dense;
  dense_attention_cpu<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, dense, lse_dense);
  block_sparse_attention_cpu<TypeParam>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, full_causal_mask(layout), sparse,
                                        lse_sparse);
  EXPECT_EQ(dense, sparse);
  EXPECT_EQ(lse_dense, lse_sparse);
}

TEST(AttentionCpuErrors, RejectsBadShapes) {
  const Inputs<float> in(kShapes[3]);
  std::vector<float> out(in.q.size()), lse(size_t(in.seqs.tokens() * in.dims.q_heads));
  const auto dense = [&](HeadDims dims, std::span<const float> q) {
    dense_attention_cpu<float>(q, in.ks(), in.vs(), in.seqs, dims, out, lse);
  };
  EXPECT_THROW(dense(HeadDims{8, 3, 64}, in.qs()), Error);                 // H_q not a multiple of H_kv
  EXPECT_THROW(dense(in.dims, in.qs().first(in.q.size() - 1)), Error);     // q too short
  EXPECT_THROW(dense(HeadDims{8, 2, 63}, in.qs()), Error);                 // odd head dim
  EXPECT_THROW(dense_attention_cpu<float>(in.qs(), in.ks(), in.vs().first(10), in.seqs, in.dims, out, lse), Error);
  EXPECT_THROW(dense_attention_cpu<float>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, out,
                                          std::span(lse).first(3)),
               Error);
  EXPECT_THROW(Sequences({0, 10, 10, 20}), Error);  // empty sequence
  EXPECT_THROW(Sequences({5, 10}), Error);
  EXPECT_THROW(Sequences({0}), Error);
}

TEST(AttentionCpuErrors, RejectsMalformedMasks) {
  const Inputs<float> in(kShapes[3]);
  const BlockLayout layout(in.seqs, 64, in.dims.q_heads);
  std::vector<float> out(in.q.size()), lse(size_t(in.seqs.tokens() * in.dims.q_heads));
  const auto run = [&](const BlockMask& mask) {
    block_sparse_attention_cpu<float>(in.qs(), in.ks(), in.vs(), in.seqs, in.dims, mask, out, lse);
  };
  const BlockMask good = full_causal_mask(layout);
  EXPECT_NO_THROW(run(good));
  // Find a row with at least two entries to corrupt.
  size_t row = 0;
  while (good.indptr[row + 1] - good.indptr[row] < 2) ++row;
  const size_t at = size_t(good.indptr[row]);
  BlockMask m = good;
  std::swap(m.indices[at], m.indices[at + 1]);  // unsorted
  EXPECT_THROW(run(m), Error);
  m = good;
  m.indices[at + 1] = m.indices[at];  // repeated
  EXPECT_THROW(run(m), Error);
  m = good;
  m.indices[size_t(good.indptr[1]) - 1] = 5;  // key block above the diagonal of row 0
  EXPECT_THROW(run(m), Error);
  m = good;
  m.indices[at] = -1;
  EXPECT_THROW(run(m), Error);
  m = good;
  m.indptr.pop_back();  // wrong row count
  EXPECT_THROW(run(m), Error);
  m = good;
  m.indptr[row + 1] = m.indptr[row] - 1;  // decreasing
  EXPECT_THROW(run(m), Error);
  m = good;
  m.block = 32;
  EXPECT_THROW(run(m), Error);
  m = good;
  m.heads = 2;
  EXPECT_THROW(run(m), Error);
}

}  // namespace
}  // namespace seer
