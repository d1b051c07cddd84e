#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/random_fill.h"

namespace seer::cuda {
namespace {

// splitmix64: a full-period 64-bit mix, good enough for benchmark inputs.
__device__ __forceinline__ uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Element e of the [n / cols, cols] output is element offset + (e / cols) · full_cols + e % cols of
// the whole tensor.
template <typename T>
__global__ void fill_kernel(T* data, int64_t n, int64_t cols, int64_t full_cols, int64_t offset, uint64_t seed,
                            float stddev) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t whole = offset + (e / cols) * full_cols + e % cols;
    const uint64_t bits = mix(seed * 0x2545f4914f6cdd1dull + uint64_t(whole));
    // Sum of four 16-bit uniforms: mean 2, variance 4/12, rescaled to unit variance.
    float sum = 0.f;
    for (int part = 0; part < 4; ++part) sum += float((bits >> (16 * part)) & 0xffff) * (1.f / 65536.f);
    const float x = (sum - 2.f) * 1.7320508f * stddev;
    if constexpr (std::is_same_v<T, __half>)
      data[e] = __float2half_rn(x);
    else
      data[e] = __float2bfloat16_rn(x);
  }
}

}  // namespace

void fill_random_block(void* data, int64_t rows, int64_t cols, int64_t full_cols, int64_t row0, int64_t col0,
                       DType dtype, uint64_t seed, float stddev, cudaStream_t stream) {
  SEER_CHECK(rows >= 0 && cols >= 0 && row0 >= 0 && col0 >= 0 && col0 + cols <= full_cols,
             "fill_random_block: columns [", col0, ", ", col0 + cols, ") outside a tensor of ", full_cols);
  const int64_t n = rows * cols;
  if (n == 0) return;
  const int blocks = int(std::min<int64_t>((n + 255) / 256, 132 * 16));
  const int64_t offset = row0 * full_cols + col0;
  if (dtype == DType::bf16)
    fill_kernel<<<blocks, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(data), n, cols, full_cols, offset, seed,
                                            stddev);
  else
    fill_kernel<<<blocks, 256, 0, stream>>>(static_cast<__half*>(data), n, cols, full_cols, offset, seed, stddev);
  SEER_CUDA_CHECK_LAUNCH();
}

void fill_random(void* data, int64_t n, DType dtype, uint64_t seed, float stddev, cudaStream_t stream) {
  fill_random_block(data, 1, n, n, 0, 0, dtype, seed, stddev, stream);
}

}  // namespace seer::cuda
