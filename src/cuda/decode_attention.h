// Decode attention on the GPU: one new query token of one sequence against its KV cache
// (flash-decoding). The CPU operator beside it is CachedAttention's decode
// (model/cached_attention.h); tests/cuda compares the two.
//
// q [H_q, d] (RoPE applied), k_cache and v_cache [capacity, H_kv, d], all bf16; the query attends to
// cache positions [0, length). out [H_q, d] bf16. Head dims 64 and 128, query heads per KV head
// (the GQA group) at most 8. The length is read on the device and the grid is sized for
// max_length, so one captured launch (a CUDA graph of a decode step) serves every length up to it.
//
// Decode is memory-bound: every key and value is read once per step. One thread block takes a
// (KV head, key range) item; its warps stream 16-key tiles through shared memory (cp.async) and
// score the GQA group's query heads together on tensor cores (mma.sync, the heads as the rows of a
// 16-row tile), so each key is read once per group. Ranges are sized so that the grid fills the GPU
// several times over at any length. Each item keeps a partial softmax (row max, sum, unnormalized
// output) in fp32; a second kernel merges a head's partials by their maxima.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "attention/head_dims.h"
#include "cuda/device_buffer.h"

namespace seer::cuda {

// Partial results of the key ranges, sized once for a cache capacity (allocates; reused by every
// step and layer).
struct DecodeWorkspace {
  HeadDims dims;
  int max_splits = 0;
  DeviceBuffer<float> partial_out;   // [splits, H_q, d]
  DeviceBuffer<float2> partial_max_sum;  // [splits, H_q]: (max of the base-2 scores, sum of 2^(s - max))

  static DecodeWorkspace create(const HeadDims& dims, int64_t capacity);
};

// Key ranges (thread blocks per KV head) that decode_attention uses at this length: enough items
// for several waves over the GPU's SMs, each range a multiple of 64 keys.
int decode_splits(const HeadDims& dims, int64_t length, int max_splits);

// length: a device int32 in [1, max_length].
void decode_attention(const void* q, const void* k_cache, const void* v_cache, const int32_t* length,
                      int64_t max_length, void* out, DecodeWorkspace& workspace, cudaStream_t stream);

}  // namespace seer::cuda
