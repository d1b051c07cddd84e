// CachedAttention against the foundation operators and the double-precision reference: any chunking
// of a sequence (down to one-token decode steps) gives the rows of dense attention over the whole
// sequence, and a block mask gives block-sparse attention.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/attention_cpu.h"
#include "gate/selection.h"
#include "model/cached_attention.h"
#include "reference.h"

namespace seer {
namespace {

struct Inputs {
  HeadDims dims;
  int64_t tokens;
  std::vector<float> q, k, v;
};

Inputs random_inputs(HeadDims dims, int64_t tokens) {
  return {dims, tokens, test::random_values<float>(size_t(tokens * dims.q_heads * dims.head_dim)),
          test::random_values<float>(size_t(tokens * dims.kv_heads * dims.head_dim)),
          test::random_values<float>(size_t(tokens * dims.kv_heads * dims.head_dim))};
}

class CachedAttentionChunks : public ::testing::TestWithParam<int64_t> {};

TEST_P(CachedAttentionChunks, EqualDenseAttentionOfTheWholeSequence) {
  const int64_t chunk = GetParam();
  for (const HeadDims dims : {HeadDims{6, 2, 32}, HeadDims{4, 4, 64}, HeadDims{3, 1, 16}}) {
    const Inputs in = random_inputs(dims, 300);
    const Sequences seqs = Sequences::single(in.tokens);
    std::vector<double> ref, lse;
    test::reference_attention<float>(in.q, in.k, in.v, seqs, dims, ref, lse);
    std::vector<float> dense(in.q.size()), dense_lse(size_t(in.tokens * dims.q_heads));
    dense_attention_cpu<float>(in.q, in.k, in.v, seqs, dims, dense, dense_lse);

    // The cache is larger than the sequence: positions past it must never be read.
    const int64_t capacity = in.tokens + 37;
    const size_t row = size_t(dims.kv_heads * dims.head_dim), qrow = size_t(dims.q_heads * dims.head_dim);
    std::vector<float> kc = test::poisoned(size_t(capacity) * row), vc = test::poisoned(size_t(capacity) * row);
    CachedAttention attention(dims, capacity);
    std::vector<float> out = test::poisoned(in.q.size());
    for (int64_t first = 0; first < in.tokens; first += chunk) {
      const int64_t n = std::min(chunk, in.tokens - first);
      std::copy_n(in.k.begin() + first * int64_t(row), n * int64_t(row), kc.begin() + first * int64_t(row));
      std::copy_n(in.v.begin() + first * int64_t(row), n * int64_t(row), vc.begin() + first * int64_t(row));
      attention.run(std::span<const float>(in.q).subspan(size_t(first) * qrow, size_t(n) * qrow), first, kc.data(),
                    vc.data(), nullptr, std::span<float>(out).subspan(size_t(first) * qrow, size_t(n) * qrow));
    }
    EXPECT_LT(test::max_abs_error(out, ref), 2e-5)
        << "H_q " << dims.q_heads << " H_kv " << dims.kv_heads << " d " << dims.head_dim;
    EXPECT_LT(test::max_abs_error(out, dense), 2e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Chunks, CachedAttentionChunks, ::testing::Values(300, 128, 100, 64, 17, 1));

// One-token steps over a long cache split its keys across items and merge the partial softmaxes.
TEST(CachedAttention, DecodeOverALongCache) {
  for (const HeadDims dims : {HeadDims{6, 2, 32}, HeadDims{9, 3, 64}, HeadDims{2, 1, 8}}) {
    const Inputs in = random_inputs(dims, 1500);
    const Sequences seqs = Sequences::single(in.tokens);
    std::vector<float> dense(in.q.size()), lse(size_t(in.tokens * dims.q_heads));
    dense_attention_cpu<float>(in.q, in.k, in.v, seqs, dims, dense, lse);
    CachedAttention attention(dims, in.tokens);
    const size_t qrow = size_t(dims.q_heads * dims.head_dim);
    for (const int64_t pos : {int64_t(255), int64_t(700), in.tokens - 1}) {
      std::vector<float> out = test::poisoned(qrow);
      attention.run(std::span<const float>(in.q).subspan(size_t(pos) * qrow, qrow), pos, in.k.data(), in.v.data(),
                    nullptr, out);
      const std::vector<float> expected(dense.begin() + std::ptrdiff_t(size_t(pos) * qrow),
                                        dense.begin() + std::ptrdiff_t(size_t(pos + 1) * qrow));
      EXPECT_LT(test::max_abs_error(out, expected), 2e-5) << "position " << pos << ", H_kv " << dims.kv_heads;
    }
  }
}

TEST(CachedAttention, BlockMaskEqualsBlockSparseAttention) {
  const HeadDims dims{6, 2, 32};
  const Inputs in = random_inputs(dims, 450);
  const Sequences seqs = Sequences::single(in.tokens);
  const BlockLayout layout(seqs, CachedAttention::kTile, dims.q_heads);
  const std::vector<float> logits = test::random_values<float>(size_t(layout.map_elements()));
  for (const double density : {0.2, 0.5, 1.0}) {
    const BlockMask mask = select_blocks(logits, layout, SelectionOptions{.density = density});
    std::vector<double> ref, lse;
    test::reference_attention<float>(in.q, in.k, in.v, seqs, dims, ref, lse, &mask);
    std::vector<float> sparse(in.q.size()), sparse_lse(size_t(in.tokens * dims.q_heads));
    block_sparse_attention_cpu<float>(in.q, in.k, in.v, seqs, dims, mask, sparse, sparse_lse);

    CachedAttention attention(dims, in.tokens);
    std::vector<float> out = test::poisoned(in.q.size());
    attention.run(in.q, 0, in.k.data(), in.v.data(), &mask, out);
    EXPECT_LT(test::max_abs_error(out, ref), 2e-5) << "density " << density;
    EXPECT_LT(test::max_abs_error(out, sparse), 2e-5) << "density " << density;
  }
}

TEST(CachedAttention, RejectsWhatItCannotDo) {
  const HeadDims dims{4, 2, 16};
  const Inputs in = random_inputs(dims, 128);
  CachedAttention attention(dims, 128);
  std::vector<float> out(in.q.size());
  // Past the capacity.
  EXPECT_THROW(attention.run(std::span<const float>(in.q).first(64 * 64), 100, in.k.data(), in.v.data(), nullptr,
                             std::span<float>(out).first(64 * 64)),
               Error);
  // A mask covers whole sequences only.
  const BlockLayout layout(Sequences::single(64), CachedAttention::kTile, dims.q_heads);
  const BlockMask mask = full_causal_mask(layout);
  EXPECT_THROW(attention.run(std::span<const float>(in.q).first(64 * 64), 64, in.k.data(), in.v.data(), &mask,
                             std::span<float>(out).first(64 * 64)),
               Error);
  // q that is not whole tokens.
  EXPECT_THROW(attention.run(std::span<const float>(in.q).first(70), 0, in.k.data(), in.v.data(), nullptr,
                             std::span<float>(out).first(70)),
               Error);
}

}  // namespace
}  // namespace seer
