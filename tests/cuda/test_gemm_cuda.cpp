// The runtime's cuBLASLt GEMM (y = x · wᵀ, bf16 operands, fp32 accumulation) against a double
// product of the same rounded inputs, in its three output modes, outputs poisoned (or, to
// accumulate into, random) first; each shape twice, so the cached plan is exercised too.
// Needs a GPU: run by bench/gpu/run_device.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "cuda/device_tensor.h"
#include "cuda/gemm.h"

namespace seer {
namespace {

struct GemmShape {
  int64_t rows;
  int out, in;
};

TEST(CudaGemm, MatchesDoubleProductInEveryMode) {
  // One row (decode), odd row counts, the built-in model's and the 8B shape's widths.
  const std::vector<GemmShape> shapes = {{1, 576, 576}, {37, 1536, 576}, {300, 1000, 320}, {5, 4096, 14336}};
  cudaStream_t stream = nullptr;
  SEER_CUDA_CHECK(cudaStreamCreate(&stream));
  cuda::Gemm gemm(stream);
  double worst_fp32 = 0, worst_bf16 = 0;
  for (const GemmShape& s : shapes)
    for (int repeat = 0; repeat < 2; ++repeat)
      for (const cuda::GemmOut mode : {cuda::GemmOut::bf16, cuda::GemmOut::fp32, cuda::GemmOut::fp32_accumulate}) {
        const size_t ny = size_t(s.rows) * s.out;
        const test::DeviceTensor w(size_t(s.out) * s.in, cuda::DType::bf16, 0.05f);
        const test::DeviceTensor x(size_t(s.rows) * s.in, cuda::DType::bf16, 1.0f);
        std::vector<double> ref(ny, 0.0);
        for (int64_t r = 0; r < s.rows; ++r)
          for (int o = 0; o < s.out; ++o) {
            double acc = 0;
            for (int i = 0; i < s.in; ++i)
              acc += double(x.host[size_t(r) * s.in + i]) * double(w.host[size_t(o) * s.in + i]);
            ref[size_t(r) * s.out + o] = acc;
          }
        std::vector<float> got(ny);
        if (mode == cuda::GemmOut::bf16) {
          cuda::DeviceBuffer<uint16_t> y(ny);
          SEER_CUDA_CHECK(cudaMemset(y.data(), 0xff, ny * sizeof(uint16_t)));  // NaN
          gemm(reinterpret_cast<const __nv_bfloat16*>(w.device.data()),
               reinterpret_cast<const __nv_bfloat16*>(x.device.data()), y.data(), s.rows, s.out, s.in, mode);
          SEER_CUDA_CHECK(cudaStreamSynchronize(stream));
          got = test::to_float(y.download(), cuda::DType::bf16);
        } else {
          std::vector<float> start = mode == cuda::GemmOut::fp32_accumulate ? test::random_values<float>(ny)
                                                                            : test::poisoned(ny);
          if (mode == cuda::GemmOut::fp32_accumulate)
            for (size_t e = 0; e < ny; ++e) ref[e] += start[e];
          cuda::DeviceBuffer<float> y = cuda::DeviceBuffer<float>::upload(start);
          gemm(reinterpret_cast<const __nv_bfloat16*>(w.device.data()),
               reinterpret_cast<const __nv_bfloat16*>(x.device.data()), y.data(), s.rows, s.out, s.in, mode);
          SEER_CUDA_CHECK(cudaStreamSynchronize(stream));
          got = y.download();
        }
        double scale = 0;
        for (double v : ref) scale = std::max(scale, std::abs(v));
        const double err = test::max_abs_error(got, ref) / scale;
        double& worst = mode == cuda::GemmOut::bf16 ? worst_bf16 : worst_fp32;
        worst = std::max(worst, err);
        EXPECT_LT(err, mode == cuda::GemmOut::bf16 ? 8e-3 : 1e-4)
            << s.rows << " x " << s.out << " x " << s.in << " mode " << int(mode);
      }
  SEER_CUDA_CHECK(cudaStreamDestroy(stream));
  std::printf("[measured] cuBLASLt GEMM vs double: max |error| / max |ref| fp32 out %.2e, bf16 out %.2e\n", worst_fp32,
              worst_bf16);
}

}  // namespace
}  // namespace seer
