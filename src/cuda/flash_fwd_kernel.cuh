// FlashAttention-2-style forward on tensor cores (mma.sync), one thread block per
// (64-row query block, query head): 4 warps x 16 rows, key/value tiles of 64 tokens double-buffered
// in shared memory through cp.async, online softmax in registers (base-2: scores carry
// log2(e)/sqrt(d) so exp2 is one instruction).
//
// The three variants differ only in the key tiles they visit and what they record:
//   Dense        key blocks 0..i
//   GroundTruth  key blocks 0..i, and each row's max score per key block into a scratch buffer; at
//                the end the block knows every row's log-sum-exp L_r and reduces
//                gt[i, j] = max_r 2^(max_j(r) - L_r), then normalizes the row to sum 1
//   Sparse       the CSR mask row's key blocks
// Causal masking is needed only in the diagonal tile j == i (the only tile that can also be partial).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/mma_sm80.cuh"

namespace seer::cuda::detail {

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
};

constexpr int kTile = 64;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

template <int D>
constexpr int flash_smem_elements() {
  return kTile * D * 5;  // Q, two K buffers, two V buffers
}

// Row r, 16-byte chunk c of a [64][D] tile: chunks XOR-swizzled by the row so that the 8 rows an
// ldmatrix reads at one column hit 8 different bank groups.
template <int D>
__device__ __forceinline__ int swizzle(int r, int c) {
  return r * D + ((c ^ (r & 7)) << 3);
}

// Copies tokens [row0, row0 + 64) of one head (rows past `len` zero-filled) into a swizzled tile.
template <typename T, int D>
__device__ __forceinline__ void load_tile(T* tile, const T* base, int64_t token_stride, int row0, int len) {
  constexpr int kChunks = D / 8;
  for (int c = threadIdx.x; c < kTile * kChunks; c += kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const bool valid = row0 + r < len;
    const T* src = base + int64_t(valid ? row0 + r : 0) * token_stride + ch * 8;
    cp_async_16(smem_addr(tile + swizzle<D>(r, ch)), src, valid ? 16 : 0);
  }
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Ground-truth epilogue of query block i, head h, run by the whole thread block once every row's
// base-2 log-sum-exp is in row_lse2 (+inf for rows past the end) and the rows' per-key-block max
// scores are in the scratch: gt[i, j] = max_r 2^(max_j(r) - L_r), normalized over j <= i.
template <typename T>
__device__ void reduce_ground_truth_row(const FlashParams<T>& p, int seq, int i, int h, int len, int nb,
                                        const float* row_lse2, float* gt_row) {
  __shared__ float warp_sums[32];
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* scr = p.scratch + p.seq_scratch_offset[seq] + (int64_t(h) * len + int64_t(i) * kTile) * nb;
  const int rows = min(kTile, len - i * kTile);
  float partial = 0.f;
  for (int jj = threadIdx.x; jj <= i; jj += blockDim.x) {
    float best = 0.f;
    for (int r = 0; r < rows; ++r) best = fmaxf(best, exp2f(scr[int64_t(r) * nb + jj] - row_lse2[r]));
    gt_row[jj] = best;
    partial += best;
  }
  for (int off = 16; off > 0; off /= 2) partial += __shfl_xor_sync(0xffffffffu, partial, off);
  if (lane == 0) warp_sums[warp] = partial;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += warp_sums[w];
  float* dst = p.gt + p.seq_map_offset[seq] + (int64_t(h) * nb + i) * nb;
  for (int jj = threadIdx.x; jj < nb; jj += blockDim.x) dst[jj] = jj <= i ? gt_row[jj] / total : 0.f;
}

template <typename T, int D, Variant V>
__global__ void __launch_bounds__(kThreads) flash_fwd_kernel(const FlashParams<T> p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* const q_tile = reinterpret_cast<T*>(smem_raw);
  T* const k_tiles = q_tile + kTile * D;
  T* const v_tiles = k_tiles + 2 * kTile * D;

  const int2 item = p.work[blockIdx.x];
  const int seq = item.x, i = item.y, h = blockIdx.y;
  const int start = p.seq_start[seq], len = p.seq_len[seq];
  const int nb = (len + kTile - 1) / kTile;
  const int hk = h / p.group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4, l8 = lane / 8, r8 = lane % 8;
  const int64_t q_stride = int64_t(p.q_heads) * D, kv_stride = int64_t(p.kv_heads) * D;

  int n_keys = i + 1;
  const int32_t* keys = nullptr;
  if constexpr (V == Variant::Sparse) {
    const int64_t row = int64_t(p.seq_row_offset[seq]) * p.q_heads + int64_t(h) * nb + i;
    const int32_t begin = p.mask_indptr[row];
    n_keys = p.mask_indptr[row + 1] - begin;
    keys = p.mask_indices + begin;
  }
  const auto key_block = [&](int idx) {
    if constexpr (V == Variant::Sparse) {
      return keys[idx];
    } else {
      return idx;
    }
  };

  const T* q_base = p.q + int64_t(start) * q_stride + int64_t(h) * D;
  const T* k_base = p.k + int64_t(start) * kv_stride + int64_t(hk) * D;
  const T* v_base = p.v + int64_t(start) * kv_stride + int64_t(hk) * D;

  load_tile<T, D>(q_tile, q_base, q_stride, i * kTile, len);
  if (n_keys > 0) {
    load_tile<T, D>(k_tiles, k_base, kv_stride, key_block(0) * kTile, len);
    load_tile<T, D>(v_tiles, v_base, kv_stride, key_block(0) * kTile, len);
  }
  cp_async_commit();

  float row_max[2] = {-INFINITY, -INFINITY};  // rows g and g+8 of this warp, base-2 scaled scores
  float row_sum[2] = {0.f, 0.f};              // this thread's part of the row sums
  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  uint32_t q_frag[D / 16][4];

  for (int idx = 0; idx < n_keys; ++idx) {
    const int buf = idx & 1;
    if (idx + 1 < n_keys) {
      const int next = key_block(idx + 1) * kTile;
      load_tile<T, D>(k_tiles + (buf ^ 1) * kTile * D, k_base, kv_stride, next, len);
      load_tile<T, D>(v_tiles + (buf ^ 1) * kTile * D, v_base, kv_stride, next, len);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (idx == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(q_frag[kk], smem_addr(q_tile + swizzle<D>(warp * 16 + (l8 % 2) * 8 + r8, kk * 2 + l8 / 2)));
    }
    const int j = key_block(idx);
    const T* k_tile = k_tiles + buf * kTile * D;
    const T* v_tile = v_tiles + buf * kTile * D;

    // S = Q K^T for this warp's 16 rows and the tile's 64 keys.
    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int jp = 0; jp < 4; ++jp) {
        uint32_t kf[4];
        ldmatrix_x4(kf, smem_addr(k_tile + swizzle<D>(jp * 16 + (l8 / 2) * 8 + r8, kk * 2 + (l8 % 2))));
        mma_16816<T>(s[2 * jp], q_frag[kk], kf[0], kf[1]);
        mma_16816<T>(s[2 * jp + 1], q_frag[kk], kf[2], kf[3]);
      }
    const bool diagonal = (j == i);
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * p.scale_log2;
        if (diagonal) {
          const int col = n * 8 + 2 * t + (e & 1), row = warp * 16 + g + (e >> 1) * 8;
          if (col > row || j * kTile + col >= len) x = -INFINITY;
        }
        s[n][e] = x;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
      }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      tile_max[half] = quad_max(tile_max[half]);
      if constexpr (V == Variant::GroundTruth) {
        const int row = i * kTile + warp * 16 + g + half * 8;
        if (t == 0 && row < len)
          p.scratch[p.seq_scratch_offset[seq] + (int64_t(h) * len + row) * nb + j] = tile_max[half];
      }
      const float m_new = fmaxf(row_max[half], tile_max[half]);
      // A row with nothing visible yet keeps exponent base 0 so that 2^(-inf - 0) = 0, not NaN.
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = exp2f(row_max[half] - base);
      row_max[half] = m_new;
      row_sum[half] *= alpha;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        acc[n][2 * half] *= alpha;
        acc[n][2 * half + 1] *= alpha;
      }
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        s[n][2 * half] = exp2f(s[n][2 * half] - base);
        s[n][2 * half + 1] = exp2f(s[n][2 * half + 1] - base);
        row_sum[half] += s[n][2 * half] + s[n][2 * half + 1];
      }
    }

    // O += P V, P straight from the score registers (C layout of two n-tiles = A layout of one k-step).
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t a[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                             pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, smem_addr(v_tile + swizzle<D>(kk * 16 + (l8 % 2) * 8 + r8, dp * 2 + l8 / 2)));
        mma_16816<T>(acc[2 * dp], a, vf[0], vf[1]);
        mma_16816<T>(acc[2 * dp + 1], a, vf[2], vf[3]);
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();

  // Epilogue: normalize, write out and the natural-log LSE.
  float* const row_lse2 = reinterpret_cast<float*>(smem_raw);  // tiles are free now
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const float l = quad_sum(row_sum[half]);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int local = warp * 16 + g + half * 8;
    const int row = i * kTile + local;
    const float lse2 = l > 0.f ? row_max[half] + log2f(l) : -INFINITY;
    if (row < len) {
      T* dst = p.out + int64_t(start + row) * q_stride + int64_t(h) * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(dst + n * 8 + 2 * t) = pack2<T>(acc[n][2 * half] * inv, acc[n][2 * half + 1] * inv);
      if (t == 0) p.lse[int64_t(h) * p.tokens + start + row] = lse2 * 0.69314718055994531f;
    }
    if constexpr (V == Variant::GroundTruth)
      if (t == 0) row_lse2[local] = row < len ? lse2 : INFINITY;
  }

  if constexpr (V == Variant::GroundTruth) {
    __syncthreads();  // row_lse2 and this block's scratch writes are visible to all its threads
    reduce_ground_truth_row(p, seq, i, h, len, nb, row_lse2, row_lse2 + kTile);
  }
}

}  // namespace seer::cuda::detail
