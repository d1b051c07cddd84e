// The model runtime's matrix products through cuBLASLt: y[rows, out] = x[rows, in] · w[out, in]^T
// with bf16 operands and fp32 accumulation (the layout of every projection: weights row-major
// [out, in], activations row-major [rows, in]). One plan per shape — operation and matrix
// descriptors plus the heuristic's best algorithm for the workspace — made on first use and kept,
// so a call does no heuristic search and no allocation (safe inside CUDA graph capture once warm,
// and host-only work even when cold).
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "cuda/device_buffer.h"

namespace seer::cuda {

enum class GemmOut {
  bf16,             // y bf16, overwritten
  fp32,             // y fp32, overwritten
  fp32_accumulate,  // y fp32, y += x · w^T (the residual stream)
};

class Gemm {
 public:
  // Allocates `workspace_bytes` of device memory for the algorithms that want it.
  Gemm(cudaStream_t stream, size_t workspace_bytes = size_t(32) << 20);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  void operator()(const __nv_bfloat16* w, const __nv_bfloat16* x, void* y, int64_t rows, int out, int in,
                  GemmOut mode);

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t w = nullptr, x = nullptr, y = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  const Plan& plan(int64_t rows, int out, int in, GemmOut mode);

  cudaStream_t stream_;
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<unsigned char> workspace_;
  std::map<std::tuple<int64_t, int, int, GemmOut>, Plan> plans_;
};

}  // namespace seer::cuda
