// The C interface (src/capi/seer_attention.h) on the GPU: the same bits as the C++ calls it wraps,
// dense and block-sparse, and its failures as return values and messages. The checks that need no
// GPU are in tests/test_capi.cpp, which CI runs.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "capi/seer_attention.h"
#include "cuda/attention_cuda.h"
#include "cuda/device_tensor.h"

namespace seer {
namespace {

// Fresh inputs, and outputs for the C call (poisoned) and for the C++ call it is compared with.
struct Problem {
  Sequences seqs;
  HeadDims dims;
  cuda::DType dtype;
  test::DeviceTensor q, k, v;
  cuda::DeviceBuffer<uint16_t> out_c, out_cpp;
  cuda::DeviceBuffer<float> lse_c, lse_cpp;
  Problem(const std::vector<int64_t>& lengths, int q_heads, int kv_heads, int head_dim, cuda::DType dtype_)
      : seqs(Sequences::from_lengths(lengths)),
        dims{q_heads, kv_heads, head_dim},
        dtype(dtype_),
        q(size_t(seqs.tokens() * q_heads * head_dim), dtype, 1.5f),
        k(size_t(seqs.tokens() * kv_heads * head_dim), dtype, 1.5f),
        v(k.host.size(), dtype, 1.0f),
        out_c(q.host.size()),
        out_cpp(q.host.size()),
        lse_c(size_t(seqs.tokens() * q_heads)),
        lse_cpp(lse_c.size()) {
    SEER_CUDA_CHECK(cudaMemset(out_c.data(), 0xff, out_c.size() * 2));  // NaN in bf16 and fp16
    SEER_CUDA_CHECK(cudaMemset(lse_c.data(), 0xff, lse_c.size() * 4));
  }
  // The C++ call's arguments, writing out_cpp and lse_cpp.
  cuda::AttentionArgs cpp_args() {
    return {q.device.data(), k.device.data(), v.device.data(), out_cpp.data(), lse_cpp.data(), dtype, dims};
  }
  void expect_same_outputs() {
    SEER_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(out_c.download(), out_cpp.download());
    EXPECT_EQ(lse_c.download(), lse_cpp.download());
  }
};

TEST(CudaCapi, DenseForwardEqualsTheCppCall) {
  const std::vector<int64_t> lengths = {300, 1, 129};
  const int q_heads = 8, kv_heads = 2, head_dim = 128;
  Problem pr(lengths, q_heads, kv_heads, head_dim, cuda::DType::bf16);

  char error[256] = "untouched";
  seer_layout* layout = seer_layout_create(lengths.data(), int(lengths.size()), q_heads, error, sizeof error);
  ASSERT_NE(layout, nullptr) << error;
  ASSERT_EQ(seer_dense_forward(layout, pr.q.device.data(), pr.k.device.data(), pr.v.device.data(), pr.out_c.data(),
                               pr.lse_c.data(), SEER_BF16, q_heads, kv_heads, head_dim, nullptr, error, sizeof error),
            0)
      << error;
  const cuda::DeviceLayout cpp_layout = cuda::DeviceLayout::create(pr.seqs, q_heads);
  cuda::dense_forward(pr.cpp_args(), cpp_layout, nullptr);
  pr.expect_same_outputs();

  // Refusals name their reason and launch nothing.
  const auto refusal = [&](int dtype, int heads, int dim) {
    error[0] = '\0';
    const int rc =
        seer_dense_forward(layout, pr.q.device.data(), pr.k.device.data(), pr.v.device.data(), pr.out_c.data(),
                           pr.lse_c.data(), dtype, heads, kv_heads, dim, nullptr, error, sizeof error);
    return rc == -1 ? std::string(error) : std::string("accepted");
  };
  EXPECT_NE(refusal(7, q_heads, head_dim).find("dtype"), std::string::npos);
  EXPECT_NE(refusal(SEER_BF16, 4, head_dim).find("query heads"), std::string::npos);
  EXPECT_NE(refusal(SEER_BF16, q_heads, 96).find("head dims 64 and 128"), std::string::npos);
  seer_layout_destroy(layout);
}

TEST(CudaCapi, BlockSparseForwardEqualsTheCppCall) {
  const std::vector<int64_t> lengths = {1000, 65};
  const int q_heads = 4, kv_heads = 1, head_dim = 64;
  Problem pr(lengths, q_heads, kv_heads, head_dim, cuda::DType::f16);

  const cuda::DeviceLayout cpp_layout = cuda::DeviceLayout::create(pr.seqs, q_heads);
  const BlockMask mask = test::random_mask(cpp_layout.host, 0.3, false);  // empty rows too
  char error[256] = "untouched";
  seer_layout* layout = seer_layout_create(lengths.data(), int(lengths.size()), q_heads, error, sizeof error);
  ASSERT_NE(layout, nullptr) << error;
  seer_mask* c_mask =
      seer_mask_create(layout, mask.indptr.data(), mask.rows(), mask.indices.data(), error, sizeof error);
  ASSERT_NE(c_mask, nullptr) << error;
  const auto c_call = [&](const seer_layout* with) {
    return seer_block_sparse_forward(with, c_mask, pr.q.device.data(), pr.k.device.data(), pr.v.device.data(),
                                     pr.out_c.data(), pr.lse_c.data(), SEER_FP16, q_heads, kv_heads, head_dim, nullptr,
                                     error, sizeof error);
  };
  ASSERT_EQ(c_call(layout), 0) << error;
  const cuda::DeviceMask cpp_mask = cuda::DeviceMask::upload(mask, cpp_layout.host);
  cuda::block_sparse_forward(pr.cpp_args(), cpp_layout, cpp_mask, nullptr);
  pr.expect_same_outputs();

  // A mask is checked against its layout, and used only with it.
  BlockMask past_diagonal = mask;
  past_diagonal.indices.back() = 2;  // the last row, query block 1 of the 65-token sequence, keeps key block 2
  EXPECT_EQ(seer_mask_create(layout, past_diagonal.indptr.data(), past_diagonal.rows(), past_diagonal.indices.data(),
                             error, sizeof error),
            nullptr);
  EXPECT_GT(std::strlen(error), 0u);
  EXPECT_EQ(seer_mask_create(layout, mask.indptr.data(), mask.rows() - 1, mask.indices.data(), error, sizeof error),
            nullptr);
  EXPECT_NE(std::string(error).find("rows"), std::string::npos) << error;
  seer_layout* other = seer_layout_create(lengths.data(), int(lengths.size()), q_heads, error, sizeof error);
  ASSERT_NE(other, nullptr) << error;
  EXPECT_EQ(c_call(other), -1);
  EXPECT_NE(std::string(error).find("another layout"), std::string::npos) << error;
  seer_layout_destroy(other);
  seer_mask_destroy(c_mask);
  seer_layout_destroy(layout);
}

}  // namespace
}  // namespace seer
