// Decode attention on the GPU against the CPU decode (CachedAttention) on fresh random caches,
// the output poisoned first. Needs a GPU: run by bench/gpu/run_device.sh.
#include <gtest/gtest.h>

#include <cstdio>

#include "cuda/decode_attention.h"
#include "cuda/device_tensor.h"
#include "model/cached_attention.h"

namespace seer {
namespace {

struct DecodeShape {
  int q_heads, kv_heads, head_dim;
  int64_t length, capacity;
};

// One key, a partial tile, tile boundaries, lengths that need one and many key ranges, GQA 1 to 8.
const std::vector<DecodeShape> kShapes = {
    {9, 3, 64, 1, 8192},      {9, 3, 64, 100, 8192},    {4, 4, 64, 64, 65},        {4, 4, 64, 65, 65},
    {8, 1, 128, 4097, 5000},  {32, 8, 128, 1000, 1000}, {32, 8, 128, 33000, 33000}, {6, 2, 64, 8191, 8192},
    {16, 2, 128, 300, 131072},
};

TEST(CudaDecode, MatchesCpuDecode) {
  double worst = 0;
  for (const DecodeShape& s : kShapes) {
    const HeadDims dims{s.q_heads, s.kv_heads, s.head_dim};
    const size_t row = size_t(s.kv_heads) * s.head_dim;
    // The whole capacity is random: keys past `length` must not be read (they would change the result).
    test::DeviceTensor q(size_t(s.q_heads) * s.head_dim, cuda::DType::bf16, 1.5f);
    test::DeviceTensor k(size_t(s.capacity) * row, cuda::DType::bf16, 1.5f);
    test::DeviceTensor v(size_t(s.capacity) * row, cuda::DType::bf16, 1.0f);
    cuda::DeviceBuffer<uint16_t> out(q.host.size());
    SEER_CUDA_CHECK(cudaMemset(out.data(), 0xff, out.size() * sizeof(uint16_t)));  // NaN
    cuda::DecodeWorkspace workspace = cuda::DecodeWorkspace::create(dims, s.capacity);
    const cuda::DeviceBuffer<int32_t> length = cuda::DeviceBuffer<int32_t>::upload(std::vector{int32_t(s.length)});
    // The grid is sized for the capacity, the length read on the device (as a captured decode step).
    cuda::decode_attention(q.device.data(), k.device.data(), v.device.data(), length.data(), s.capacity, out.data(),
                           workspace, nullptr);
    SEER_CUDA_CHECK(cudaDeviceSynchronize());

    CachedAttention cpu(dims, s.capacity);
    std::vector<float> ref(q.host.size());
    cpu.run(q.host, s.length - 1, k.host.data(), v.host.data(), nullptr, ref);
    const double err = test::relative_error(test::to_float(out.download(), cuda::DType::bf16), ref);
    EXPECT_LT(err, 1e-2) << "H_q " << s.q_heads << " H_kv " << s.kv_heads << " d " << s.head_dim << " length "
                         << s.length << " (" << cuda::decode_splits(dims, s.length, workspace.max_splits)
                         << " key ranges)";
    worst = std::max(worst, err);
  }
  std::printf("[measured] decode bf16: max rel error %.2e against the CPU decode\n", worst);
}

TEST(CudaDecode, RejectsBadShapes) {
  EXPECT_THROW(cuda::DecodeWorkspace::create({18, 2, 64}, 100), Error);  // group 9
  EXPECT_THROW(cuda::DecodeWorkspace::create({8, 8, 96}, 100), Error);   // head dim 96
  EXPECT_THROW(cuda::DecodeWorkspace::create({8, 8, 64}, 0), Error);
  cuda::DecodeWorkspace w = cuda::DecodeWorkspace::create({8, 8, 64}, 100);
  cuda::DeviceBuffer<uint16_t> buffer(8 * 64 * 100);
  const cuda::DeviceBuffer<int32_t> length = cuda::DeviceBuffer<int32_t>::upload(std::vector{int32_t(50)});
  EXPECT_THROW(cuda::decode_attention(buffer.data(), buffer.data(), buffer.data(), length.data(), 0, buffer.data(), w,
                                      nullptr),
               Error);  // no length fits
  EXPECT_THROW(cuda::decode_attention(buffer.data(), buffer.data(), buffer.data(), nullptr, 100, buffer.data(), w,
                                      nullptr),
               Error);
}

}  // namespace
}  // namespace seer
