// Shared pieces of the FlashAttention forward kernels: parameters, the three variants, warp
// reductions over the 4 threads that share an accumulator row, and the ground-truth epilogue kernel.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/hopper.cuh"

namespace seer::cuda::detail {

// Dense visits key blocks 0..i; GroundTruth also records each row's max score per key block, and
// GroundTruthMass each row's log-sum-exp per key block, which ground_truth_reduce_kernel turns into
// the block map (attention/gt_pooling.h); Sparse visits the key blocks of its CSR mask row.
enum class Variant { Dense, GroundTruth, GroundTruthMass, Sparse };

constexpr bool is_ground_truth(Variant v) { return v == Variant::GroundTruth || v == Variant::GroundTruthMass; }

template <typename T>
struct FlashParams {
  const T* q;
  const T* k;
  const T* v;
  T* out;
  float* lse;
  int q_heads, kv_heads, group;
  int64_t tokens;
  float scale_log2;  // log2(e) / sqrt(d)
  const int32_t* seq_start;
  const int32_t* seq_len;
  const int32_t* seq_row_offset;
  const int64_t* seq_map_offset;
  const int64_t* seq_scratch_offset;
  const int2* work;
  const int32_t* mask_indptr;
  const int32_t* mask_indices;
  float* gt;
  float* scratch;
  int* work_counter;  // block-sparse: the next work item and the finished producers (DeviceLayout)
  bool gt_sum_rows;  // ground truth: the block map sums its rows' shares (GtPooling::mass), else maxes them
};

constexpr int kTile = 64;

// Two floats -> one register of two 16-bit values (low half = first).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Ground-truth epilogue, a kernel of its own after the forward (which leaves the tensor cores idle
// while its last rows reduce: 5-6% of the forward at 32k, bench/RESULTS.md, v11). One 128-thread
// block per (query block i of a sequence: work item blockIdx.x, head blockIdx.y), once the forward has
// written every row's natural-log LSE and its max score or log-sum-exp per key block to the scratch
// ([H, nb, len] per sequence, base-2 scaled: a key block's 64 rows are contiguous):
// gt[i, j] = max_r 2^(x_j(r) - L_r), normalized over j <= i, where x_j(r) is the row's max score in
// key block j (GtPooling::max) or its log-sum-exp there (peak_mass); with kSumRows (mass) the sum
// over rows instead of the max (the mean, as the 1/rows cancels in the normalization). Each warp
// takes 8 key blocks at a time, a lane two rows of each. Dynamic shared memory: nb + 4 floats.
template <typename T, bool kSumRows>
__global__ void __launch_bounds__(128) ground_truth_reduce_kernel(const FlashParams<T> p) {
  constexpr int kWarps = 4, kUnroll = 8;  // 8 key blocks per warp at a time: 16 loads in flight per lane
  extern __shared__ float gt_row[];       // [nb] pooled block scores, then the 4 warp sums
  const int2 item = p.work[blockIdx.x];
  const int seq = item.x, i = item.y, h = blockIdx.y;
  const int start = p.seq_start[seq], len = p.seq_len[seq];
  const int nb = (len + kTile - 1) / kTile;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const float* scr = p.scratch + p.seq_scratch_offset[seq] + int64_t(h) * nb * len + int64_t(i) * kTile;
  const int rows = min(kTile, len - i * kTile);
  // The rows' base-2 log-sum-exps (+inf past the end: those rows contribute 0).
  const float* lse = p.lse + int64_t(h) * p.tokens + start + i * kTile;
  constexpr float kLog2e = 1.4426950408889634f;
  const float lse_lo = lane < rows ? lse[lane] * kLog2e : INFINITY;
  const float lse_hi = lane + 32 < rows ? lse[lane + 32] * kLog2e : INFINITY;
  float partial = 0.f;
  for (int j0 = warp * kUnroll; j0 <= i; j0 += kWarps * kUnroll) {
    float pooled[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const float* col = scr + int64_t(j0 + u) * len;
      const bool valid = j0 + u <= i;
      const float lo = valid && lane < rows ? exp2f(col[lane] - lse_lo) : 0.f;
      const float hi = valid && lane + 32 < rows ? exp2f(col[lane + 32] - lse_hi) : 0.f;
      pooled[u] = kSumRows ? lo + hi : fmaxf(lo, hi);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      for (int off = 16; off > 0; off /= 2) {
        const float other = __shfl_xor_sync(0xffffffffu, pooled[u], off);
        pooled[u] = kSumRows ? pooled[u] + other : fmaxf(pooled[u], other);
      }
      if (lane == 0 && j0 + u <= i) gt_row[j0 + u] = pooled[u];
      partial += pooled[u];  // identical in every lane; 0 for blocks past i
    }
  }
  float* const warp_sums = gt_row + nb;
  if (lane == 0) warp_sums[warp] = partial;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < kWarps; ++w) total += warp_sums[w];
  float* dst = p.gt + p.seq_map_offset[seq] + (int64_t(h) * nb + i) * nb;
  for (int jj = tid; jj < nb; jj += 128) dst[jj] = jj <= i ? gt_row[jj] / total : 0.f;
}

}  // namespace seer::cuda::detail
