// The C interface (src/capi/seer_attention.h) on the GPU: the same bits as the C++ calls it wraps,
// dense and block-sparse, and its failures as return values and messages. The checks that need no GPU are in
// tests/test_capi.cpp, which CI runs.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "capi/seer_attention.h"
#include "cuda/attention_cuda.h"
#include "cuda/device_tensor.h"

namespace seer {
namespace {

TEST(CudaCapi, DenseForwardEqualsTheCppCall) {
  const std::vector<int64_t> lengths = {300, 1, 129};
  const int q_heads = 8, kv_heads = 2, head_dim = 128;
  const Sequences seqs = Sequences::from_lengths(lengths);
  const size_t q_elems = size_t(seqs.tokens() * q_heads * head_dim), kv_elems = size_t(seqs.tokens() * kv_heads * head_dim);
  const test::DeviceTensor q(q_elems, cuda::DType::bf16, 1.5f), k(kv_elems, cuda::DType::bf16, 1.5f),
      v(kv_elems, cuda::DType::bf16, 1.0f);
  cuda::DeviceBuffer<uint16_t> out_c(q_elems), out_cpp(q_elems);
  cuda::DeviceBuffer<float> lse_c(size_t(seqs.tokens() * q_heads)), lse_cpp(lse_c.size());
  for (void* p : {static_cast<void*>(out_c.data()), static_cast<void*>(lse_c.data())})
    SEER_CUDA_CHECK(cudaMemset(p, 0xff, p == out_c.data() ? q_elems * 2 : lse_c.size() * 4));

  char error[256] = "untouched";
  seer_layout* layout = seer_layout_create(lengths.data(), int(lengths.size()), q_heads, error, sizeof error);
  ASSERT_NE(layout, nullptr) << error;
  ASSERT_EQ(seer_dense_forward(layout, q.device.data(), k.device.data(), v.device.data(), out_c.data(),
                               lse_c.data(), SEER_BF16, q_heads, kv_heads, head_dim, nullptr, error, sizeof error),
            0)
      << error;
  const cuda::DeviceLayout cpp_layout = cuda::DeviceLayout::create(seqs, q_heads);
  cuda::dense_forward({q.device.data(), k.device.data(), v.device.data(), out_cpp.data(), lse_cpp.data(),
                       cuda::DType::bf16, {q_heads, kv_heads, head_dim}},
                      cpp_layout, nullptr);
  SEER_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(out_c.download(), out_cpp.download());
  EXPECT_EQ(lse_c.download(), lse_cpp.download());

  // Refusals name their reason and launch nothing.
  const auto refusal = [&](int dtype, int heads, int dim) {
    error[0] = '\0';
    const int rc = seer_dense_forward(layout, q.device.data(), k.device.data(), v.device.data(), out_c.data(),
                                      lse_c.data(), dtype, heads, kv_heads, dim, nullptr, error, sizeof error);
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
  const Sequences seqs = Sequences::from_lengths(lengths);
  const size_t q_elems = size_t(seqs.tokens() * q_heads * head_dim), kv_elems = size_t(seqs.tokens() * kv_heads * head_dim);
  const test::DeviceTensor q(q_elems, cuda::DType::f16, 1.5f), k(kv_elems, cuda::DType::f16, 1.5f),
      v(kv_elems, cuda::DType::f16, 1.0f);
  cuda::DeviceBuffer<uint16_t> out_c(q_elems), out_cpp(q_elems);
  cuda::DeviceBuffer<float> lse_c(size_t(seqs.tokens() * q_heads)), lse_cpp(lse_c.size());
  SEER_CUDA_CHECK(cudaMemset(out_c.data(), 0xff, q_elems * 2));
  SEER_CUDA_CHECK(cudaMemset(lse_c.data(), 0xff, lse_c.size() * 4));

  const cuda::DeviceLayout cpp_layout = cuda::DeviceLayout::create(seqs, q_heads);
  const BlockMask mask = test::random_mask(cpp_layout.host, 0.3, false);  // empty rows too
  char error[256] = "untouched";
  seer_layout* layout = seer_layout_create(lengths.data(), int(lengths.size()), q_heads, error, sizeof error);
  ASSERT_NE(layout, nullptr) << error;
  seer_mask* c_mask = seer_mask_create(layout, mask.indptr.data(), mask.rows(), mask.indices.data(), error, sizeof error);
  ASSERT_NE(c_mask, nullptr) << error;
  ASSERT_EQ(seer_block_sparse_forward(layout, c_mask, q.device.data(), k.device.data(), v.device.data(), out_c.data(),
                                      lse_c.data(), SEER_FP16, q_heads, kv_heads, head_dim, nullptr, error,
                                      sizeof error),
            0)
      << error;
  const cuda::DeviceMask cpp_mask = cuda::DeviceMask::upload(mask, cpp_layout.host);
  cuda::block_sparse_forward({q.device.data(), k.device.data(), v.device.data(), out_cpp.data(), lse_cpp.data(),
                              cuda::DType::f16, {q_heads, kv_heads, head_dim}},
                             cpp_layout, cpp_mask, nullptr);
  SEER_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(out_c.download(), out_cpp.download());
  EXPECT_EQ(lse_c.download(), lse_cpp.download());

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
  EXPECT_EQ(seer_block_sparse_forward(other, c_mask, q.device.data(), k.device.data(), v.device.data(), out_c.data(),
                                      lse_c.data(), SEER_FP16, q_heads, kv_heads, head_dim, nullptr, error,
                                      sizeof error),
            -1);
  EXPECT_NE(std::string(error).find("another layout"), std::string::npos) << error;
  seer_layout_destroy(other);
  seer_mask_destroy(c_mask);
  seer_layout_destroy(layout);
}

}  // namespace
}  // namespace seer
