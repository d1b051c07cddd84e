// CUDA attention kernels against the CPU operators on fresh random inputs, outputs poisoned first.
// Needs a GPU: run by bench/gpu/run_device.sh; prints the measured errors.
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "attention/attention_cpu.h"
#include "cuda/attention_cuda.h"
#include "cuda/device_tensor.h"
#include "reference.h"

namespace seer {
namespace {

using cuda::DeviceBuffer;
using cuda::DType;

using Shape = test::AttentionShape;

// Odd lengths, one-token and one-block sequences, unequal batches, GQA 1/3/4/8, head dims 64/128.
const std::vector<Shape> kShapes = {
    {{1}, 2, 2, 64},           {{64}, 4, 4, 128},        {{100}, 3, 1, 64},       {{130, 1, 64, 200}, 8, 2, 64},
    {{257}, 8, 1, 128},        {{65, 190}, 4, 4, 128},   {{1000}, 9, 3, 64},      {{777, 5, 300}, 32, 8, 128},
    {{2048}, 4, 1, 128},       {{129, 17, 63}, 6, 2, 64},
};

template <typename T>
void poison(DeviceBuffer<T>& buffer) {
  SEER_CUDA_CHECK(cudaMemset(buffer.data(), 0xff, buffer.size() * sizeof(T)));  // NaN in bf16, fp16, fp32
}

struct Problem {
  Sequences seqs;
  HeadDims dims;
  DType dtype;
  test::DeviceTensor q, k, v;
  cuda::DeviceLayout layout;
  DeviceBuffer<uint16_t> out;
  DeviceBuffer<float> lse;
  Problem(const Shape& s, DType dt)
      : seqs(Sequences::from_lengths(s.lengths)),
        dims{s.q_heads, s.kv_heads, s.head_dim},
        dtype(dt),
        q(size_t(seqs.tokens() * s.q_heads * s.head_dim), dt, 1.5f),
        k(size_t(seqs.tokens() * s.kv_heads * s.head_dim), dt, 1.5f),
        v(size_t(seqs.tokens() * s.kv_heads * s.head_dim), dt, 1.0f),
        layout(cuda::DeviceLayout::create(seqs, s.q_heads)),
        out(q.host.size()),
        lse(size_t(seqs.tokens() * s.q_heads)) {
    poison(out);
    poison(lse);
  }
  cuda::AttentionArgs args() {
    return {q.device.data(), k.device.data(), v.device.data(), out.data(), lse.data(), dtype, dims};
  }
  std::vector<float> out_host() const { return test::to_float(out.download(), dtype); }
};

// Dense and the ground truth (each pooling) against the CPU on p's inputs, outputs poisoned before
// each launch; `what` names the case in failures.
void expect_dense_and_ground_truth_match(Problem& p, std::initializer_list<GtPooling> poolings,
                                         const std::string& what) {
  std::vector<float> ref(p.q.host.size()), ref_lse(p.lse.size());
  dense_attention_cpu<float>(p.q.host, p.k.host, p.v.host, p.seqs, p.dims, ref, ref_lse);
  poison(p.out);
  poison(p.lse);
  cuda::dense_forward(p.args(), p.layout, nullptr);
  SEER_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LT(test::relative_error(p.out_host(), ref), 1e-2) << "dense, " << what;
  EXPECT_LT(test::max_abs_error(p.lse.download(), ref_lse), 1e-2) << "dense, " << what;
  for (const GtPooling pooling : poolings) {
    DeviceBuffer<float> gt(size_t(p.layout.host.map_elements())), scratch(size_t(p.layout.scratch_elements));
    poison(gt);
    poison(scratch);
    poison(p.out);
    poison(p.lse);
    cuda::ground_truth_forward(p.args(), p.layout, gt.data(), scratch.data(), nullptr, pooling);
    SEER_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<double> ref_gt(gt.size());
    ground_truth_bruteforce_cpu<float>(p.q.host, p.k.host, p.seqs, p.dims, 64, ref_gt, pooling);
    EXPECT_LT(test::relative_error(gt.download(), ref_gt), 1e-2)
        << "ground truth (" << gt_pooling_name(pooling) << "), " << what;
    EXPECT_LT(test::relative_error(p.out_host(), ref), 1e-2) << "ground truth, " << what;
    EXPECT_LT(test::max_abs_error(p.lse.download(), ref_lse), 1e-2) << "ground truth, " << what;
  }
}

const char* name(DType d) { return d == DType::bf16 ? "bf16" : "fp16"; }

class CudaAttention : public ::testing::TestWithParam<DType> {};

TEST_P(CudaAttention, DenseMatchesCpu) {
  double worst = 0, worst_lse = 0;
  for (const Shape& shape : kShapes) {
    Problem p(shape, GetParam());
    cuda::dense_forward(p.args(), p.layout, nullptr);
    SEER_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> ref(p.q.host.size()), ref_lse(p.lse.size());
    dense_attention_cpu<float>(p.q.host, p.k.host, p.v.host, p.seqs, p.dims, ref, ref_lse);
    const double err = test::relative_error(p.out_host(), ref), lse_err = test::max_abs_error(p.lse.download(), ref_lse);
    EXPECT_LT(err, 1e-2) << p.seqs.tokens() << " tokens, d " << p.dims.head_dim;
    EXPECT_LT(lse_err, 1e-2);
    worst = std::max(worst, err);
    worst_lse = std::max(worst_lse, lse_err);
  }
  std::printf("[measured] dense %s: max rel error %.2e, max |lse error| %.2e\n", name(GetParam()), worst, worst_lse);
}

TEST_P(CudaAttention, GroundTruthMatchesCpu) {
  for (const GtPooling pooling : {GtPooling::max, GtPooling::mass, GtPooling::peak_mass}) {
    double worst = 0, worst_gt = 0;
    for (const Shape& shape : kShapes) {
      Problem p(shape, GetParam());
      DeviceBuffer<float> gt(size_t(p.layout.host.map_elements())), scratch(size_t(p.layout.scratch_elements));
      poison(gt);
      poison(scratch);
      cuda::ground_truth_forward(p.args(), p.layout, gt.data(), scratch.data(), nullptr, pooling);
      SEER_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<double> ref_gt(gt.size());
      ground_truth_bruteforce_cpu<float>(p.q.host, p.k.host, p.seqs, p.dims, 64, ref_gt, pooling);
      std::vector<float> ref(p.q.host.size()), ref_lse(p.lse.size());
      dense_attention_cpu<float>(p.q.host, p.k.host, p.v.host, p.seqs, p.dims, ref, ref_lse);
      const auto got_gt = gt.download();
      const double gt_err = test::relative_error(got_gt, ref_gt), err = test::relative_error(p.out_host(), ref);
      EXPECT_LT(gt_err, 1e-2) << p.seqs.tokens() << " tokens, " << gt_pooling_name(pooling);
      EXPECT_LT(test::max_abs_error(got_gt, ref_gt), 1e-2);
      EXPECT_LT(err, 1e-2);
      worst = std::max(worst, err);
      worst_gt = std::max(worst_gt, gt_err);
    }
    std::printf("[measured] ground truth (%s) %s: max rel error out %.2e, gt map %.2e\n", gt_pooling_name(pooling),
                name(GetParam()), worst, worst_gt);
  }
}


TEST_P(CudaAttention, BlockSparseMatchesCpu) {
  double worst = 0;
  for (const Shape& shape : kShapes)
    for (double keep : {0.1, 0.5, 1.0}) {
      Problem p(shape, GetParam());
      const BlockMask mask = keep == 1.0 ? full_causal_mask(p.layout.host) : test::random_mask(p.layout.host, keep, false);
      const cuda::DeviceMask dmask = cuda::DeviceMask::upload(mask, p.layout.host);
      cuda::block_sparse_forward(p.args(), p.layout, dmask, nullptr);
      SEER_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<float> ref(p.q.host.size()), ref_lse(p.lse.size());
      block_sparse_attention_cpu<float>(p.q.host, p.k.host, p.v.host, p.seqs, p.dims, mask, ref, ref_lse);
      const double err = test::relative_error(p.out_host(), ref);
      EXPECT_LT(err, 1e-2) << p.seqs.tokens() << " tokens, keep " << keep;
      EXPECT_LT(test::max_abs_error(p.lse.download(), ref_lse), 1e-2);  // empty rows: -inf on both
      worst = std::max(worst, err);
    }
  std::printf("[measured] block-sparse %s: max rel error %.2e\n", name(GetParam()), worst);
}

// The dense and ground-truth grids run the heads fastest up to 16 waves of thread blocks and head by
// head beyond (flash_fwd.cu); kShapes are all short. Many short sequences give a long grid cheaply:
// 120 sequences of 300 tokens are 360 query tiles, x 16 heads = 5,760 thread blocks, over 16 waves on
// GPUs of up to 360 SMs. Outputs poisoned first.
TEST_P(CudaAttention, LongGridsMatchCpu) {
  for (const int head_dim : {64, 128}) {
    Problem p(Shape{std::vector<int64_t>(120, 300), 16, 4, head_dim}, GetParam());
    expect_dense_and_ground_truth_match(p, {GtPooling::max, GtPooling::mass, GtPooling::peak_mass},
                                        "d " + std::to_string(head_dim));
  }
}

// Longer two-sequence problems: about 900-1800 (head, query block) items of every length, empty rows
// included, so thread blocks run in many waves, at both head dims (their pipelines differ in depth);
// two launches on one layout, each on poisoned outputs.
TEST_P(CudaAttention, BlockSparseManyItems) {
  for (const Shape& shape : {Shape{{4096, 3000}, 16, 4, 64}, Shape{{4096, 3000}, 8, 2, 128}}) {
    Problem p(shape, GetParam());
    for (double keep : {0.1, 0.5}) {
      const BlockMask mask = test::random_mask(p.layout.host, keep, false);
      const cuda::DeviceMask dmask = cuda::DeviceMask::upload(mask, p.layout.host);
      std::vector<float> ref(p.q.host.size()), ref_lse(p.lse.size());
      block_sparse_attention_cpu<float>(p.q.host, p.k.host, p.v.host, p.seqs, p.dims, mask, ref, ref_lse);
      for (int launch = 0; launch < 2; ++launch) {
        poison(p.out);
        poison(p.lse);
        cuda::block_sparse_forward(p.args(), p.layout, dmask, nullptr);
        SEER_CUDA_CHECK(cudaDeviceSynchronize());
        EXPECT_LT(test::relative_error(p.out_host(), ref), 1e-2)
            << "d " << shape.head_dim << ", keep " << keep << ", launch " << launch;
        EXPECT_LT(test::max_abs_error(p.lse.download(), ref_lse), 1e-2);
      }
    }
  }
}

// An attention sink: the keys of each sequence's first block scaled by 6, so that their largest score
// leads every other block's by about 12 in base 2 (scores spread by about 1 elsewhere, 6.5 there).
// The kernels visit key blocks from the diagonal down, so a row that keeps block 0 meets its max
// last, past the rescale slack (kRescaleSlack<D> of step_row_max, at d = 128: the d = 64 shape checks
// the plain online softmax): O and the row sums are rescaled after most of the row (a review
// simulated this for 95-97% of such rows). Were the max never to move, fp16's P would overflow; were
// O not rescaled when it moves, both dtypes would fail. Block-sparse with and without the diagonal,
// dense and ground truth against the CPU, outputs poisoned.
TEST_P(CudaAttention, SinkKeysMatchCpu) {
  for (const Shape& shape : {Shape{{1500, 400}, 8, 2, 128}, Shape{{1500, 400}, 9, 3, 64}}) {
    Problem p(shape, GetParam());
    std::vector<float> k = p.k.host;
    const int64_t row = int64_t(shape.kv_heads) * shape.head_dim;
    for (int64_t s = 0; s < p.seqs.count(); ++s)
      for (int64_t e = p.seqs.start(s) * row; e < (p.seqs.start(s) + 64) * row; ++e) k[size_t(e)] *= 6.f;
    p.k = test::DeviceTensor(std::move(k), GetParam());
    std::vector<float> ref(p.q.host.size()), ref_lse(p.lse.size());
    for (const bool keep_diagonal : {false, true}) {
      const BlockMask mask = test::random_mask(p.layout.host, 0.3, keep_diagonal);
      const cuda::DeviceMask dmask = cuda::DeviceMask::upload(mask, p.layout.host);
      block_sparse_attention_cpu<float>(p.q.host, p.k.host, p.v.host, p.seqs, p.dims, mask, ref, ref_lse);
      poison(p.out);
      poison(p.lse);
      cuda::block_sparse_forward(p.args(), p.layout, dmask, nullptr);
      SEER_CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_LT(test::relative_error(p.out_host(), ref), 1e-2) << "block-sparse, d " << shape.head_dim;
      EXPECT_LT(test::max_abs_error(p.lse.download(), ref_lse), 1e-2);
    }
    expect_dense_and_ground_truth_match(p, {GtPooling::max, GtPooling::peak_mass},
                                        "sink keys, d " + std::to_string(shape.head_dim));
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaAttention, ::testing::Values(DType::bf16, DType::f16));

TEST(CudaAttentionErrors, RejectsUnsupportedShapesAndBadMasks) {
  Problem p({{300}, 4, 2, 128}, DType::bf16);
  cuda::AttentionArgs args = p.args();
  args.dims.head_dim = 96;
  EXPECT_THROW(cuda::dense_forward(args, p.layout, nullptr), Error);
  args = p.args();
  args.dims.q_heads = 8;  // layout built for 4
  EXPECT_THROW(cuda::dense_forward(args, p.layout, nullptr), Error);
  args = p.args();
  args.q = nullptr;
  EXPECT_THROW(cuda::dense_forward(args, p.layout, nullptr), Error);
  BlockMask bad = full_causal_mask(p.layout.host);
  bad.indices[1] = 3;  // row 1 lists key block 3 > 1
  EXPECT_THROW(cuda::DeviceMask::upload(bad, p.layout.host), Error);
  const BlockLayout other(Sequences::single(100), 64, 4);
  const cuda::DeviceMask wrong_rows = cuda::DeviceMask::upload(full_causal_mask(other), other);
  EXPECT_THROW(cuda::block_sparse_forward(p.args(), p.layout, wrong_rows, nullptr), Error);
}

}  // namespace
}  // namespace seer
