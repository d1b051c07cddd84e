// Block-sparse FlashAttention forward on Hopper: TMA loads and wgmma, one warpgroup (128 threads)
// per (64-row query block, query head), visiting the key blocks of its CSR mask row. Q, K and V tiles arrive by TMA in the 128-byte swizzle,
// completing on mbarriers; K/V are double-buffered and the next tiles' loads run during the current
// tile's math. S = Q K^T is wgmma with both operands in shared memory; O += P V takes P straight from
// the score registers (the accumulator layout of S is wgmma's register-A layout) and V from shared
// memory as an MN-major operand. The online softmax runs in base 2 (log2(e)/sqrt(d) folded into
// the scale). Two thread blocks share a multiprocessor, so one's softmax overlaps the other's MMAs.
// A key block's index is simply the TMA coordinate, so the gather costs nothing extra.
#pragma once
#include "cuda/flash_common.cuh"
#include "cuda/hopper.cuh"

namespace seer::cuda::detail {

template <int D>
struct SparseSmem {
  static constexpr int kChunk = 64 * 64;  // one [64 rows][64 cols] swizzled sub-tile, 8 KB in 16-bit
  static constexpr int kTileElems = kChunk * (D / 64);
  static constexpr int kTileBytes = kTileElems * 2;
  // Q, two K stages, two V stages, then the barriers.
  static constexpr int kBytes = 5 * kTileBytes + 64 + 1024;  // + barriers + alignment slack
};

template <typename T, int D>
__global__ void __launch_bounds__(128) flash_fwd_sparse_kernel(const __grid_constant__ CUtensorMap q_map,
                                                             const __grid_constant__ CUtensorMap k_map,
                                                             const __grid_constant__ CUtensorMap v_map,
                                                             const FlashParams<T> p) {
  using Smem = SparseSmem<D>;
  constexpr int kChunks = D / 64;
  extern __shared__ unsigned char smem_raw[];
  // TMA's 128-byte swizzle and wgmma's descriptors both assume 1024-byte-aligned tiles.
  unsigned char* base = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  T* const q_tile = reinterpret_cast<T*>(base);
  T* const k_tiles = q_tile + Smem::kTileElems;
  T* const v_tiles = k_tiles + 2 * Smem::kTileElems;
  uint64_t* const bars = reinterpret_cast<uint64_t*>(base + 5 * Smem::kTileBytes);
  uint64_t* const q_full = bars;
  uint64_t* const k_full = bars + 1;  // [2]
  uint64_t* const v_full = bars + 3;  // [2]

  const int2 item = p.work[blockIdx.x];
  const int seq = item.x, i = item.y, h = blockIdx.y;
  const int start = p.seq_start[seq], len = p.seq_len[seq];
  const int nb = (len + kTile - 1) / kTile;
  const int hk = h / p.group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t q_stride = int64_t(p.q_heads) * D;

  const int64_t mask_row = int64_t(p.seq_row_offset[seq]) * p.q_heads + int64_t(h) * nb + i;
  const int32_t* const keys = p.mask_indices + p.mask_indptr[mask_row];
  const int n_keys = p.mask_indptr[mask_row + 1] - p.mask_indptr[mask_row];

  // Thread 0 issues every TMA load; each tile is kChunks boxes of [64 tokens][64 columns].
  const auto load_kv = [&](int idx) {
    const int stage = idx & 1, token = start + keys[idx] * kTile;
    mbarrier_expect_tx(&k_full[stage], Smem::kTileBytes);
    for (int c = 0; c < kChunks; ++c)
      tma_load_3d(k_tiles + stage * Smem::kTileElems + c * Smem::kChunk, &k_map, &k_full[stage], c * 64, hk, token);
    mbarrier_expect_tx(&v_full[stage], Smem::kTileBytes);
    for (int c = 0; c < kChunks; ++c)
      tma_load_3d(v_tiles + stage * Smem::kTileElems + c * Smem::kChunk, &v_map, &v_full[stage], c * 64, hk, token);
  };
  if (threadIdx.x == 0) {
    for (int b = 0; b < 5; ++b) mbarrier_init(&bars[b], 1);
    fence_barrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    mbarrier_expect_tx(q_full, Smem::kTileBytes);
    for (int c = 0; c < kChunks; ++c) tma_load_3d(q_tile + c * Smem::kChunk, &q_map, q_full, c * 64, h, start + i * kTile);
    for (int idx = 0; idx < min(n_keys, 2); ++idx) load_kv(idx);
  }

  float row_max[2] = {-INFINITY, -INFINITY};  // rows 16*warp + g and + 8, base-2 scaled scores
  float row_sum[2] = {0.f, 0.f};              // this thread's part of the row sums
  float acc[D / 2];                           // O: wgmma m64nD accumulator layout
#pragma unroll
  for (int e = 0; e < D / 2; ++e) acc[e] = 0.f;

  mbarrier_wait(q_full, 0);
  for (int idx = 0; idx < n_keys; ++idx) {
    const int stage = idx & 1;
    const uint32_t phase = (idx >> 1) & 1;
    const int j = keys[idx];
    const T* k_tile = k_tiles + stage * Smem::kTileElems;
    const T* v_tile = v_tiles + stage * Smem::kTileElems;

    // S = Q K^T: D/16 k-steps of 16 columns; +32 bytes per step inside a 64-column chunk.
    float s[32];
    mbarrier_wait(&k_full[stage], phase);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int chunk = kk / 4, step = kk % 4;
      wgmma_m64n64_ss<T>(s, desc_k_major(q_tile + chunk * Smem::kChunk + step * 16),
                         desc_k_major(k_tile + chunk * Smem::kChunk + step * 16), kk > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(s);

    // Accumulator element s[4n + e]: row 16*warp + g + 8*(e >> 1), column 8n + 2t + (e & 1).
    const bool diagonal = (j == i);
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[4 * n + e] * p.scale_log2;
        if (diagonal) {
          const int col = n * 8 + 2 * t + (e & 1), row = warp * 16 + g + (e >> 1) * 8;
          if (col > row || j * kTile + col >= len) x = -INFINITY;
        }
        s[4 * n + e] = x;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
      }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      tile_max[half] = quad_max(tile_max[half]);
      const float m_new = fmaxf(row_max[half], tile_max[half]);
      const float base_exp = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: 2^-inf = 0, not NaN
      const float alpha = exp2f(row_max[half] - base_exp);
      row_max[half] = m_new;
      row_sum[half] *= alpha;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        acc[4 * n + 2 * half] *= alpha;
        acc[4 * n + 2 * half + 1] *= alpha;
      }
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        s[4 * n + 2 * half] = exp2f(s[4 * n + 2 * half] - base_exp);
        s[4 * n + 2 * half + 1] = exp2f(s[4 * n + 2 * half + 1] - base_exp);
        row_sum[half] += s[4 * n + 2 * half] + s[4 * n + 2 * half + 1];
      }
    }

    // O += P V: 4 k-steps of 16 keys; V is MN-major (+2048 bytes per 16 rows, chunks 8 KB apart).
    // P is packed to 16 bits before the fence so that no register feeding the MMAs changes after it.
    uint32_t a[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) a[kk][r] = pack2<T>(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
    mbarrier_wait(&v_full[stage], phase);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wgmma_rs<T, D>(acc, a[kk], desc_mn_major(v_tile + kk * 16 * 64, Smem::kChunk * 2));
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(acc);
    // Every warp is done reading this stage; refill it with the tile two steps ahead.
    asm volatile("bar.sync 1, 128;\n" ::: "memory");
    if (threadIdx.x == 0 && idx + 2 < n_keys) load_kv(idx + 2);
  }

  // Epilogue: normalize, write out and the natural-log LSE.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const float l = quad_sum(row_sum[half]);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int row = i * kTile + warp * 16 + g + half * 8;
    const float lse2 = l > 0.f ? row_max[half] + log2f(l) : -INFINITY;
    if (row < len) {
      T* dst = p.out + int64_t(start + row) * q_stride + int64_t(h) * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(dst + n * 8 + 2 * t) =
            pack2<T>(acc[4 * n + 2 * half] * inv, acc[4 * n + 2 * half + 1] * inv);
      if (t == 0) p.lse[int64_t(h) * p.tokens + start + row] = lse2 * 0.69314718055994531f;
    }
  }
}

}  // namespace seer::cuda::detail
