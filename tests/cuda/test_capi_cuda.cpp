// The C interface (src/capi/seer_attention.h) on the GPU: the same bits as the C++ call it wraps,
// and its failures as return values and messages. The checks that need no GPU are in
// tests/test_capi.cpp, which CI runs.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace seer
