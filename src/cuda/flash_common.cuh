// Shared pieces of the FlashAttention forward kernels: parameters, the three variants, warp
// reductions over the 4 threads that share an accumulator row, and the ground-truth epilogue.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/hopper.cuh"

namespace seer::cuda::detail {

// Dense visits key blocks 0..i; GroundTruth also records each row's max score per key block and
// reduces the block map at the end; Sparse visits the key blocks of its CSR mask row.
enum class Variant { Dense, GroundTruth, Sparse };

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
  int* work_counter;  // block-sparse: the next work item, zeroed before the launch
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

// Ground-truth epilogue of query block i, head h, run by one warpgroup (thread `tid` of 128,
// synchronizing on named barrier `barrier`) once every row's base-2 log-sum-exp is in row_lse2
// (+inf for rows past the end) and the rows' max scores per key block are in the scratch ([H, nb,
// len] per sequence: a key block's 64 rows are contiguous):
// gt[i, j] = max_r 2^(max_j(r) - L_r), normalized over j <= i. Each warp takes 8 key blocks at a
// time, a lane two rows of each.
template <typename T>
__device__ void reduce_ground_truth_row(const FlashParams<T>& p, int seq, int i, int h, int len, int nb,
                                        const float* row_lse2, float* gt_row, int tid, int barrier) {
  constexpr int kWarps = 4, kUnroll = 8;  // 8 key blocks per warp at a time: 16 loads in flight per lane
  const int warp = tid / 32, lane = tid % 32;
  const float* scr = p.scratch + p.seq_scratch_offset[seq] + int64_t(h) * nb * len + int64_t(i) * kTile;
  const int rows = min(kTile, len - i * kTile);
  const float lse_lo = row_lse2[lane], lse_hi = row_lse2[lane + 32];  // +inf past the end
  float partial = 0.f;
  for (int j0 = warp * kUnroll; j0 <= i; j0 += kWarps * kUnroll) {
    float best[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const float* col = scr + int64_t(j0 + u) * len;
      const bool valid = j0 + u <= i;
      const float lo = valid && lane < rows ? exp2f(col[lane] - lse_lo) : 0.f;
      const float hi = valid && lane + 32 < rows ? exp2f(col[lane + 32] - lse_hi) : 0.f;
      best[u] = fmaxf(lo, hi);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      for (int off = 16; off > 0; off /= 2) best[u] = fmaxf(best[u], __shfl_xor_sync(0xffffffffu, best[u], off));
      if (lane == 0 && j0 + u <= i) gt_row[j0 + u] = best[u];
      partial += best[u];  // identical in every lane; 0 for blocks past i
    }
  }
  // The four warps' partial sums meet in shared memory just past the row (the caller reserves them).
  float* const warp_sums = gt_row + nb;
  if (lane == 0) warp_sums[warp] = partial;
  named_barrier_sync(barrier, 128);
  float total = 0.f;
  for (int w = 0; w < kWarps; ++w) total += warp_sums[w];
  float* dst = p.gt + p.seq_map_offset[seq] + (int64_t(h) * nb + i) * nb;
  for (int jj = tid; jj < nb; jj += 128) dst[jj] = jj <= i ? gt_row[jj] / total : 0.f;
}

}  // namespace seer::cuda::detail
