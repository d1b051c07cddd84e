// Deterministic pseudo-random device tensors (benchmarks and the synthetic models): element e
// of a tensor with seed s is a function of (s, e) alone, so any launch shape gives the same values.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/attention_cuda.h"

namespace seer::cuda {

// Fills n values with approximately normal(0, stddev) samples (sum of uniforms), in `dtype`.
void fill_random(void* data, int64_t n, DType dtype, uint64_t seed, float stddev, cudaStream_t stream);

// The block of rows [row0, row0 + rows) and columns [col0, col0 + cols) of the row-major tensor of
// `full_cols` columns that fill_random(seed) fills, into a dense [rows, cols] buffer: a shard of a
// synthetic weight (model/tensor_shard.h) without making the whole tensor.
void fill_random_block(void* data, int64_t rows, int64_t cols, int64_t full_cols, int64_t row0, int64_t col0,
                       DType dtype, uint64_t seed, float stddev, cudaStream_t stream);

}  // namespace seer::cuda
