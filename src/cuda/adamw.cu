#include "cuda/adamw.h"

#include <algorithm>

#include "core/error.h"
#include "cuda/cuda_check.h"

namespace seer::cuda {
namespace {

// blockIdx.y: the tensor; a grid-stride loop over its elements. The arithmetic is train/adamw.h's
// in double, each operation rounded on its own (the _rn intrinsics: no fused multiply-adds) and
// subnormals kept (src/cuda/CMakeLists.txt), as the CPU's is: the same bits.
__global__ void adamw_kernel(const AdamWTensor* tensors, AdamWStep s) {
  const AdamWTensor t = tensors[blockIdx.y];
  const double lr = __dmul_rn(s.lr, t.lr_scale);
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < t.n; e += int64_t(gridDim.x) * blockDim.x) {
    const double g = t.g[e];
    const float m = __double2float_rn(__dadd_rn(__dmul_rn(s.beta1, t.m[e]), __dmul_rn(1 - s.beta1, g)));
    const float v = __double2float_rn(__dadd_rn(__dmul_rn(s.beta2, t.v[e]), __dmul_rn(__dmul_rn(1 - s.beta2, g), g)));
    const double step =
        __ddiv_rn(__ddiv_rn(m, s.correction1), __dadd_rn(__dsqrt_rn(__ddiv_rn(v, s.correction2)), s.eps));
    const double w = t.w[e];
    t.w[e] = __double2float_rn(__dsub_rn(w, __dmul_rn(lr, __dadd_rn(step, __dmul_rn(s.weight_decay, w)))));
    t.m[e] = m;
    t.v[e] = v;
    t.g[e] = 0.0f;
  }
}

}  // namespace

DeviceAdamW::DeviceAdamW(std::span<const AdamWTensor> tensors) {
  SEER_CHECK(!tensors.empty() && tensors.size() <= 65535, "AdamW: ", tensors.size(), " tensors in one launch");
  for (const AdamWTensor& t : tensors) {
    SEER_CHECK(t.n > 0 && t.w && t.g && t.m && t.v, "AdamW: an empty tensor");
    largest_ = std::max(largest_, t.n);
  }
  tensors_ = DeviceBuffer<AdamWTensor>::upload(tensors);
}

void DeviceAdamW::step(const AdamWStep& s, cudaStream_t stream) const {
  constexpr int kThreads = 256;
  // Enough blocks per tensor to fill the GPU on the largest; a grid-stride loop does the rest.
  const int64_t blocks = std::min<int64_t>((largest_ + kThreads - 1) / kThreads, 1024);
  const dim3 grid(unsigned(blocks), unsigned(tensors_.size()));
  adamw_kernel<<<grid, kThreads, 0, stream>>>(tensors_.data(), s);
  SEER_CUDA_CHECK(cudaGetLastError());
}

}  // namespace seer::cuda
