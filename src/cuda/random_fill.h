// Deterministic pseudo-random device tensors (benchmarks and the synthetic models): element e
// of a tensor with seed s is a function of (s, e) alone, so any launch shape gives the same values.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/attention_cuda.h"

namespace seer::cuda {

// Fills n values with approximately normal(0, stddev) samples (sum of uniforms), in `dtype`.
void fill_random(void* data, int64_t n, DType dtype, uint64_t seed, float stddev, cudaStream_t stream);

}  // namespace seer::cuda
