#include <cub/device/device_scan.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/gate_cuda.h"
#include "cuda/warp_mma.cuh"
#include "gate/mass_weight.h"

namespace seer::cuda {
namespace {

constexpr int kPoolThreads = 128;
constexpr int kTile = 64, kTileK = 16;  // the projection's and the scores' output tiles, k per step


// The sequence owning global block row `row` (sequences are few; a linear scan is enough).
__device__ __forceinline__ int sequence_of(const int32_t* row_offset, int sequences, int64_t row) {
  int s = 0;
  while (s + 1 < sequences && row_offset[s + 1] <= row) ++s;
  return s;
}

// Two consecutive 16-bit elements as floats (the pair intrinsics differ by type).
__device__ __forceinline__ float2 pair_to_float2(const __nv_bfloat16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}
__device__ __forceinline__ float2 pair_to_float2(const __half* p) {
  return __half22float2(*reinterpret_cast<const __half2*>(p));
}

// The RoPE rotation of one pair (x, x + d_g/2) by (cos, sin)·attention_scaling.
__device__ __forceinline__ float2 rotate(float lo, float hi, float2 cs) {
  return make_float2(lo * cs.x - hi * cs.y, hi * cs.x + lo * cs.y);
}

// One thread block (128 threads) per (global block row, head), in two launches: kKeys = false pools
// the H_q heads of q, kKeys = true the H_kv heads of k; kExtremes: by max, min and mean (always for
// k; for q in Qmaxminavg gates), else by mean alone (apart, such a q launch needs no max and min:
// fewer registers, more thread blocks per SM). A token's head vector is read as d/8 16-byte loads
// by d/8 threads, 128/(d/8) tokens at a time, up to 8 such loads in flight per thread before any is
// used (one at a time: 135 instead of 119 µs at 32k tokens, 32/8 heads, d = 128 on the H200); the
// partial results meet in shared memory. Without W_q (d_g == d, mean only) the q mean is the gate's
// q before RoPE, so it is rotated here and written to q_gate [H_q, rows, d]; with W_q it goes to
// q_pool [rows, H_q, d or 3d].
template <typename T, bool kKeys, bool kExtremes>
__global__ void pool_kernel(const T* q, const T* k, const int32_t* seq_start, const int32_t* seq_len,
                            const int32_t* row_offset, int sequences, int64_t rows, int hq, int hkv, int d,
                            const float2* rope, float* q_pool, float* q_gate, float* k_pool) {
  static_assert(kExtremes || !kKeys, "k is always pooled by max, min and mean");
  constexpr int kLoads = 8;
  constexpr bool is_q = !kKeys;
  __shared__ float partial[kExtremes ? 3 : 1][kPoolThreads * 8];  // sum (, max, min) of each thread's 8 channels
  const int64_t row = blockIdx.x;
  const int head = int(blockIdx.y) + (kKeys ? hq : 0);
  const int s = sequence_of(row_offset, sequences, row);
  const int i = int(row - row_offset[s]);
  const int64_t first = seq_start[s] + int64_t(i) * 64;
  const int count = min(64, seq_len[s] - i * 64);
  const int lanes = d / 8, groups = kPoolThreads / lanes;
  const int lane = threadIdx.x % lanes, group = threadIdx.x / lanes;
  const T* src = is_q ? q + (first * hq + head) * d + lane * 8 : k + (first * hkv + head - hq) * d + lane * 8;
  const int64_t token_stride = int64_t(is_q ? hq : hkv) * d;
  float sum[8], mx[8], mn[8];
#pragma unroll
  for (int v = 0; v < 8; ++v) sum[v] = 0.f, mx[v] = -INFINITY, mn[v] = INFINITY;
  if (group < groups)
    for (int t0 = group; t0 < count; t0 += kLoads * groups) {
      uint4 raw[kLoads];
#pragma unroll
      for (int u = 0; u < kLoads; ++u)
        if (t0 + u * groups < count) raw[u] = *reinterpret_cast<const uint4*>(src + (t0 + u * groups) * token_stride);
#pragma unroll
      for (int u = 0; u < kLoads; ++u)
        if (t0 + u * groups < count) {
          const T* elems = reinterpret_cast<const T*>(&raw[u]);
#pragma unroll
          for (int v = 0; v < 8; v += 2) {
            const float2 x = pair_to_float2(elems + v);
            sum[v] += x.x, sum[v + 1] += x.y;
            if constexpr (kExtremes) {
              mx[v] = fmaxf(mx[v], x.x), mn[v] = fminf(mn[v], x.x);
              mx[v + 1] = fmaxf(mx[v + 1], x.y), mn[v + 1] = fminf(mn[v + 1], x.y);
            }
          }
        }
    }
#pragma unroll
  for (int v = 0; v < 8; ++v) {
    partial[0][threadIdx.x * 8 + v] = sum[v];
    if constexpr (kExtremes) {
      partial[1][threadIdx.x * 8 + v] = mx[v];
      partial[2][threadIdx.x * 8 + v] = mn[v];
    }
  }
  __syncthreads();
  // Channel c of group g sits at (g * lanes + c / 8) * 8 + c % 8 = g * d + c.
  const auto mean_of = [&](int c) {
    float total = 0.f;
    for (int g = 0; g < groups; ++g) total += partial[0][g * d + c];
    return total / float(count);
  };
  if constexpr (kExtremes) {
    float* dst = is_q ? q_pool + (row * hq + head) * 3 * d : k_pool + (row * hkv + head - hq) * 3 * d;
    for (int c = threadIdx.x; c < d; c += kPoolThreads) {
      float hi = -INFINITY, lo = INFINITY;
      for (int g = 0; g < groups; ++g) {
        hi = fmaxf(hi, partial[1][g * d + c]);
        lo = fminf(lo, partial[2][g * d + c]);
      }
      dst[c] = hi;
      dst[d + c] = lo;
      dst[2 * d + c] = mean_of(c);
    }
  } else {
    if (!q_gate) {
      for (int c = threadIdx.x; c < d; c += kPoolThreads) q_pool[(row * hq + head) * d + c] = mean_of(c);
      return;
    }
    const int half = d / 2;
    for (int x = threadIdx.x; x < half; x += kPoolThreads) {
      const float2 r = rotate(mean_of(x), mean_of(x + half), rope[int64_t(i) * half + x]);
      float* dst = q_gate + (int64_t(head) * rows + row) * d;
      dst[x] = r.x;
      dst[x + half] = r.y;
    }
  }
}

// ---- the projection and the scores: small fp32 GEMMs in 64x64 tiles on the tensor cores -------

// fp32 products in three TF32 passes (detail::split_tf32): the logits stay within 2e-6 of the
// largest against the CPU in double (4e-7 with fp32 FMAs); two blocks' order can flip only where
// their logits are that close.

// A warp's part of the 64x64 output tile: rows 16·(warp % 4) + [0, 16) and four 8-column n-tiles,
// tile_ntile(warp, n) for n < 4: 2h, 2h + 1, 2h + 4, 2h + 5 with h = warp / 4. So the projection's
// RoPE pairs, tile columns c and c + 32, meet in one lane: acc[n] and acc[n + 2].
__device__ __forceinline__ int tile_ntile(int warp, int n) { return 2 * (warp / 4) + (n % 2) + 4 * (n / 2); }

// acc += A[a_rows x K] · B over one 64x64 output tile: A row-major with K contiguous (lda); B is
// [K, N] row-major (ldb) or, kBTransposed, [N, K] row-major, its tile column c being B's column
// b_column(c); rows past a_rows and tile columns whose b_column is -1 read as zero. 256 threads, 8
// warps (tile_ntile). Operands reach shared memory by cp.async, kTileK k per stage, kStages - 1
// stages in flight while one is multiplied: each thread copies one 16-byte chunk of A and one of B
// per stage, so b_column must map each aligned run of 4 tile columns to 4 consecutive columns of B
// or to -1 (the gate's dims are multiples of 8, DeviceGate::upload). Layouts that make the fragment
// reads conflict-free: A and a transposed B as [64][kTileK + 4] (rows 20 floats apart: lanes g, t
// hit banks 20g + t mod 32, all different), B as [kTileK][64 + 8] (banks 8t + g).
// (Staged through registers one step ahead, the product on the FMA units was bound by its shared-
// memory reads, and on the tensor cores by the loads' latency: the projection and the scores took
// 61 and 54 µs at 32k tokens either way; now 51 and 52. bench/RESULTS.md, "The gate's products".)
template <bool kBTransposed, class BColumn>
__device__ __forceinline__ void tile_product(const float* A, int64_t lda, int a_rows, const float* B, int64_t ldb,
                                             int K, BColumn&& b_column, float (&acc)[4][4]) {
  constexpr int kStages = 4, kRowStride = kTileK + 4, kColStride = kTile + 8;
  constexpr int kBStage = kBTransposed ? kTile * kRowStride : kTileK * kColStride;
  __shared__ __align__(16) float as[kStages][kTile * kRowStride];
  __shared__ __align__(16) float bs[kStages][kBStage];
  static_assert(kTileK == 16 && kTile * kTileK / 4 == 256, "one 16-byte chunk of each operand per thread");
  const int tid = threadIdx.x, warp = tid / 32, g = tid % 32 / 4, t = tid % 4;
  // This thread's chunks: A's row tid / 4 at k 4·(tid % 4); B's the same (transposed) or row (k)
  // tid / 16 at tile columns 4·(tid % 16)..+3.
  const int a_row = tid / 4, a_k = 4 * (tid % 4);
  const bool a_in = a_row < a_rows;
  const float* const a_src = A + (a_in ? a_row * lda : 0) + a_k;
  const int b_k = kBTransposed ? a_k : tid / 16, b_c = kBTransposed ? a_row : 4 * (tid % 16);
  const int b_col = b_column(b_c);
  const float* const b_src = kBTransposed ? B + (b_col >= 0 ? b_col * ldb : 0) + b_k : B + b_k * ldb + max(b_col, 0);
  const uint32_t a_dst = detail::smem_u32(&as[0][a_row * kRowStride + a_k]);
  const uint32_t b_dst = detail::smem_u32(&bs[0][kBTransposed ? b_c * kRowStride + b_k : b_k * kColStride + b_c]);
  const int steps = (K + kTileK - 1) / kTileK;
  // Stage `step` into its buffer; past K, and for rows or columns out of range, the chunk is zeros.
  const auto issue = [&](int step) {
    const int k0 = step * kTileK, buf = step % kStages;
    detail::cp_async_16(a_dst + buf * sizeof(as[0]), a_src + k0, a_in && k0 + a_k < K ? 16 : 0);
    if constexpr (kBTransposed)
      detail::cp_async_16(b_dst + buf * sizeof(bs[0]), b_src + k0, b_col >= 0 && k0 + b_k < K ? 16 : 0);
    else
      detail::cp_async_16(b_dst + buf * sizeof(bs[0]), b_src + k0 * ldb, b_col >= 0 && k0 + b_k < K ? 16 : 0);
    detail::cp_async_commit();
  };
#pragma unroll
  for (int step = 0; step < kStages - 1; ++step) issue(step);
  const int m0 = 16 * (warp % 4);
  float fix[4][4] = {};  // the correction terms, accumulated apart: two short chains of mmas, not one long
  for (int step = 0; step < steps; ++step) {
    detail::cp_async_wait<kStages - 2>();
    __syncthreads();  // every thread's chunks of this stage have landed; the buffer refilled next was read last step
    issue(step + kStages - 1);  // (a step past the last issues zeros, keeping the group count)
    const float* const a_stage = as[step % kStages] + m0 * kRowStride;
    const float* const b_stage = bs[step % kStages];
#pragma unroll
    for (int k = 0; k < kTileK; k += 8) {
      detail::Tf32Split a_split[4];
#pragma unroll
      for (int r = 0; r < 4; ++r)
        a_split[r] = detail::split_tf32(a_stage[(g + 8 * (r % 2)) * kRowStride + k + t + 4 * (r / 2)]);
      const uint32_t a_big[4] = {a_split[0].big, a_split[1].big, a_split[2].big, a_split[3].big};
      const uint32_t a_small[4] = {a_split[0].small, a_split[1].small, a_split[2].small, a_split[3].small};
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        const int col = 8 * tile_ntile(warp, n) + g;
        detail::Tf32Split b[2];
#pragma unroll
        for (int r = 0; r < 2; ++r)
          b[r] = detail::split_tf32(kBTransposed ? b_stage[col * kRowStride + k + t + 4 * r]
                                                 : b_stage[(k + t + 4 * r) * kColStride + col]);
        detail::mma_1688_tf32(fix[n], a_small, b[0].big, b[1].big);
        detail::mma_1688_tf32(fix[n], a_big, b[0].small, b[1].small);
        detail::mma_1688_tf32(acc[n], a_big, b[0].big, b[1].big);
      }
    }
  }
  detail::cp_async_wait<0>();  // nothing may land in shared memory after the block exits
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[n][r] += fix[n][r];
}

// grid (row tiles, pair tiles, H_q or 2·H_q): z < H_q projects k_pool (of z's KV head) by
// W_k[z / wk_group] (wk_group: the query heads sharing a W_k, 1 or g), z >= H_q projects q_pool
// ([rows, H_q, q_in]) by W_q[z - H_q], then rotates by RoPE at each block's first position. Output
// [H_q, rows, d_g]. A tile covers 32 RoPE pairs (x, x + d_g/2): its columns 0..31 are the x, 32..63
// the x + d_g/2.
__global__ void __launch_bounds__(256, 4)
    project_kernel(const float* q_pool, const float* k_pool, const float* wq, const float* wk, const float2* rope,
                   const int32_t* row_offset, int sequences, int64_t rows, int hq, int hkv, int wk_group, int d,
                   int q_in, int dg, float* q_gate, float* k_gate) {
  const bool is_k = int(blockIdx.z) < hq;
  const int h = is_k ? int(blockIdx.z) : int(blockIdx.z) - hq;
  const int64_t row0 = int64_t(blockIdx.x) * kTile;
  const int half = dg / 2, pair0 = int(blockIdx.y) * 32;
  const int pairs = min(32, half - pair0);
  const int in_dim = is_k ? 3 * d : q_in;
  const float* a = is_k ? k_pool + row0 * hkv * 3 * d + int64_t(h / (hq / hkv)) * 3 * d
                        : q_pool + row0 * hq * q_in + int64_t(h) * q_in;
  const float* w = is_k ? wk + int64_t(h / wk_group) * 3 * d * dg : wq + int64_t(h) * q_in * dg;
  const int a_rows = int(rows - row0 < kTile ? rows - row0 : kTile);
  float acc[4][4] = {};
  const auto column = [&](int c) {  // pair pair0 + c % 32, its first or second half
    const int pair = c % 32;
    return pair < pairs ? pair0 + pair + (c / 32) * half : -1;
  };
  tile_product<false>(a, is_k ? int64_t(hkv) * 3 * d : int64_t(hq) * q_in, a_rows, w, dg, in_dim, column, acc);
  float* out = (is_k ? k_gate : q_gate) + int64_t(h) * rows * dg;
  const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
#pragma unroll
  for (int half_row = 0; half_row < 2; ++half_row) {
    const int64_t row = row0 + 16 * (warp % 4) + g + 8 * half_row;
    if (row >= rows) break;
    const int s = sequence_of(row_offset, sequences, row);
    const int64_t position = row - row_offset[s];
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        // acc[n] holds pairs c (tile columns < 32), acc[n + 2] their second halves, c + 32.
        const int c = 8 * tile_ntile(warp, n) + 2 * t + e, r = 2 * half_row + e;
        if (c >= pairs) continue;
        const int x = pair0 + c;
        const float2 v = rotate(acc[n][r], acc[n + 2][r], rope[position * half + x]);
        out[row * dg + x] = v.x;
        out[row * dg + x + half] = v.y;
      }
  }
}

// grid (tile pairs of the longest sequence, H_q, sequences): logits = q_g·k_gᵀ/√d_g (+ the block
// bias when `bias` [H_q, kBiasColumns] is given) on 64x64 tiles, -inf above the diagonal (whole
// tiles above it only write -inf). 3 blocks per SM: the transposed operand's addressing takes 80
// registers (at 64, ptxas spills).
__global__ void __launch_bounds__(256, 3)
    scores_kernel(const float* q_gate, const float* k_gate, const float* bias, const int32_t* seq_len,
                  const int32_t* row_offset, const int64_t* map_offset, int64_t rows, int dg, float scale,
                  float* logits) {
  const int s = blockIdx.z, h = blockIdx.y;
  const int nb = (seq_len[s] + 63) / 64;
  const int tiles = (nb + kTile - 1) / kTile;
  const int ti = blockIdx.x / tiles, tj = blockIdx.x % tiles;
  if (ti >= tiles) return;
  float* map = logits + map_offset[s] + int64_t(h) * nb * nb;
  const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
  float acc[4][4] = {};
  if (tj <= ti) {
    const float* q = q_gate + (int64_t(h) * rows + row_offset[s] + int64_t(ti) * kTile) * dg;
    const float* k = k_gate + (int64_t(h) * rows + row_offset[s] + int64_t(tj) * kTile) * dg;
    const int keys = min(kTile, nb - tj * kTile);
    tile_product<true>(q, dg, min(kTile, nb - ti * kTile), k, dg, dg, [&](int c) { return c < keys ? c : -1; }, acc);
  }
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int bi = ti * kTile + 16 * (warp % 4) + g + 8 * (r / 2);
      const int bj = tj * kTile + 8 * tile_ntile(warp, n) + 2 * t + r % 2;
      if (bi < nb && bj < nb)
        map[int64_t(bi) * nb + bj] =
            bj <= bi ? acc[n][r] * scale + (bias ? block_bias(bias + h * kBiasColumns, bi, bj) : 0.f) : -INFINITY;
    }
}

// ---- selection -------------------------------------------------------------------------------

// Order-preserving map of floats to unsigned keys (-0 folded into +0 so that they tie, as on the CPU).
__device__ __forceinline__ uint32_t order_key(float x) {
  const uint32_t u = __float_as_uint(x + 0.0f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// The float an order key came from (+0 for a folded -0, which weighs the same).
__device__ __forceinline__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

struct Cut {
  uint32_t key;        // order key of the cut
  uint64_t remaining;  // what the keys equal to it still supply
};

struct SelectArgs {
  const float* logits;
  const int32_t* seq_len;
  const int32_t* row_offset;
  const int64_t* map_offset;
  int sequences, hq;
  int64_t total_rows;  // mask rows = block rows x H_q
  int method;          // 0 top-k, 1 threshold, 2 top-p
  double density, threshold, mass;
  int dense_last, keep_sink, local_blocks;
  int4* row_cut;
  int32_t* counts;
  const int32_t* indptr;
  int32_t* indices;
};

struct RowView {
  const float* values;
  int i, nb;
};

__device__ RowView row_view(const SelectArgs& a, int64_t row) {
  int s = 0;
  while (s + 1 < a.sequences && int64_t(a.row_offset[s + 1]) * a.hq <= row) ++s;
  const int nb = (a.seq_len[s] + 63) / 64;
  const int64_t local = row - int64_t(a.row_offset[s]) * a.hq;
  const int h = int(local / nb), i = int(local % nb);
  return {a.logits + a.map_offset[s] + (int64_t(h) * nb + i) * nb, i, nb};
}

// A warp's 256-bin histogram for the radix select. Top-k counts in 32-bit bins. Top-p sums 64-bit
// masses, but sm_90 has no 64-bit shared-memory atomic add: ptxas makes it a compare-and-swap loop
// (ATOMS.CAST.SPIN.64), which the many lanes of a warp adding to one bin (a row's logits share their
// top key bits) retry one after another. So a 64-bit bin is two 32-bit words, and an add that wraps
// the low word carries into the high one: exact in any order, like the sums it replaces.
struct Bins32 {
  uint32_t* bins;  // [256]
  __device__ void clear(int lane) const {
    for (int b = lane; b < 256; b += 32) bins[b] = 0;
  }
  __device__ void add(int b, uint32_t w) const { atomicAdd(&bins[b], w); }
  __device__ uint32_t operator[](int b) const { return bins[b]; }
};
struct Bins64 {
  uint32_t* lo;  // [256]
  uint32_t* hi;  // [256]
  __device__ void clear(int lane) const {
    for (int b = lane; b < 256; b += 32) lo[b] = hi[b] = 0;
  }
  __device__ void add(int b, uint64_t w) const {
    const uint32_t low = uint32_t(w);
    uint32_t high = uint32_t(w >> 32);
    if (low != 0 && atomicAdd(&lo[b], low) + low < low) ++high;  // the low word wrapped
    if (high != 0) atomicAdd(&hi[b], high);
  }
  __device__ uint64_t operator[](int b) const { return uint64_t(hi[b]) << 32 | lo[b]; }
};

// Warp-wide weighted radix select over the order keys of values[0..n), 8 bits per pass from the top:
// the key K at which the summed weights of the keys >= K, taken from the largest down, first reach
// the goal, goal_of(total weight) (the first pass counts every key, so it has the total). Returns K
// and how much of the goal the keys equal to K must still supply. Top-k weighs every key 1 (the
// rest: how many ties to keep); top-p weighs each by its quantized probability mass. Integer
// weights make the sums exact, so the cut does not depend on the order of the adds.
// W: 32-bit counts for top-k (Bins32), 64-bit masses for top-p (Bins64).
template <typename W, class Bins, class WeightOf, class GoalOf>
__device__ Cut weighted_radix_select(const float* values, int n, GoalOf goal_of, const Bins& hist,
                                     WeightOf weight_of) {
  const int lane = threadIdx.x % 32;
  uint32_t prefix = 0, mask = 0;
  W remaining = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    hist.clear(lane);
    __syncwarp();
    for (int j = lane; j < n; j += 32) {
      const uint32_t key = order_key(values[j]);
      if ((key & mask) == prefix) hist.add((key >> shift) & 255, W(weight_of(j)));
    }
    __syncwarp();
    // Lane L owns bins 255-8L .. 248-8L; find, from the top, the bin where the weight reaches `remaining`.
    W mine[8], lane_total = 0;
#pragma unroll
    for (int b = 0; b < 8; ++b) lane_total += (mine[b] = hist[255 - 8 * lane - b]);
    W before = lane_total;  // inclusive scan over lanes, then made exclusive
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
      const W x = __shfl_up_sync(0xffffffffu, before, off);
      if (lane >= off) before += x;
    }
    if (shift == 24) remaining = goal_of(W(__shfl_sync(0xffffffffu, before, 31)));
    before -= lane_total;
    const bool here = before < remaining && remaining <= before + lane_total;
    const int owner = __ffs(__ballot_sync(0xffffffffu, here)) - 1;
    int bin = 0;
    W above = 0;
    if (lane == owner) {
      W cum = before;
      for (int b = 0; b < 8; ++b) {
        if (cum + mine[b] >= remaining) {
          bin = 255 - 8 * lane - b;
          break;
        }
        cum += mine[b];
      }
      above = cum;
    }
    bin = __shfl_sync(0xffffffffu, bin, owner);
    above = __shfl_sync(0xffffffffu, above, owner);
    remaining -= above;
    prefix |= uint32_t(bin) << shift;
    mask |= 0xffu << shift;
    __syncwarp();
  }
  return {prefix, remaining};
}

// Softmax statistics of values[0..n) in double, reduced in a fixed order (both phases agree).
__device__ double2 row_softmax_stats(const float* values, int n, int* best) {
  const int lane = threadIdx.x % 32;
  float m = -INFINITY;
  int arg = n;
  for (int j = lane; j < n; j += 32)
    if (values[j] > m) m = values[j], arg = j;
  for (int off = 16; off > 0; off /= 2) {
    const float om = __shfl_xor_sync(0xffffffffu, m, off);
    const int oa = __shfl_xor_sync(0xffffffffu, arg, off);
    if (om > m || (om == m && oa < arg)) m = om, arg = oa;
  }
  double sum = 0;
  for (int j = lane; j < n; j += 32) sum += exp(double(values[j]) - double(m));
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  *best = arg;
  return make_double2(double(m), sum);
}

// Top-p cut of values[0..n): the weighted select with goal ceil(mass · total weight); the ties at the
// cut all weigh the same, so the ones needed are the rest of the goal over that weight.
// Weights as on the CPU: gate/mass_weight.h.
__device__ int2 mass_cut(const float* values, int n, float max_value, double mass, const Bins64& hist) {
  const Cut cut = weighted_radix_select<uint64_t>(
      values, n, [&](uint64_t total) { return uint64_t(ceil(mass * double(total))); }, hist,
      [&](int j) { return mass_weight(values[j], max_value); });
  const uint64_t each = mass_weight(key_value(cut.key), max_value);
  return make_int2(int(cut.key), int((cut.remaining + each - 1) / each));
}

// Phase 0 (kEmit = false): decide each row's cut and count its blocks. Phase 1: write the indices.
// One warp per mask row; indices come out sorted because j is scanned in order.
template <bool kEmit>
__global__ void select_kernel(const SelectArgs a) {
  __shared__ uint32_t counts[4][256];  // top-k's histograms
  __shared__ uint32_t masses[4][2][256];  // top-p's (Bins64)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 4 + warp;
  if (!kEmit && row == 0 && lane == 0) a.counts[a.total_rows] = 0;
  if (row >= a.total_rows) return;
  const RowView r = row_view(a, row);
  const int n = r.i + 1;
  const bool dense_row = r.i >= r.nb - a.dense_last;
  int2 cut = make_int2(0, 0);
  double2 stats = make_double2(0, 0);
  int best = 0;
  if (!dense_row) {
    if (a.method != 1) {
      if constexpr (kEmit) {
        cut = make_int2(a.row_cut[row].x, a.row_cut[row].y);
      } else if (a.method == 0) {
        const int k = max(1, int(floor((1.0 - sqrt(1.0 - a.density)) * double(r.nb))));
        const Cut c = weighted_radix_select<uint32_t>(
            r.values, n, [&](uint32_t) { return uint32_t(min(k, n)); }, Bins32{counts[warp]}, [](int) { return 1u; });
        cut = make_int2(int(c.key), int(c.remaining));
      } else {
        float m = -INFINITY;
        for (int j = lane; j < n; j += 32) m = fmaxf(m, r.values[j]);
        for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
        cut = mass_cut(r.values, n, m, a.mass, Bins64{masses[warp][0], masses[warp][1]});
      }
    } else {
      stats = row_softmax_stats(r.values, n, &best);
    }
  }
  int written = 0, ties_seen = 0;
  const int64_t out = kEmit ? a.indptr[row] : 0;
  for (int j0 = 0; j0 < n; j0 += 32) {
    const int j = j0 + lane;
    bool keep = false, tie = false;
    if (j < n) {
      if (dense_row || (a.keep_sink && j == 0) || j > r.i - a.local_blocks) keep = true;
      if (a.method != 1) {
        const uint32_t key = order_key(r.values[j]);
        keep |= key > uint32_t(cut.x);
        tie = key == uint32_t(cut.x);
      } else {
        keep |= j == best || exp(double(r.values[j]) - stats.x) / stats.y > a.threshold;
      }
    }
    // Ties at the cut: the lowest indices, up to the number the cut left over.
    const uint32_t tie_mask = __ballot_sync(0xffffffffu, tie);
    const int tie_rank = ties_seen + __popc(tie_mask & ((1u << lane) - 1));
    if (!dense_row && a.method != 1 && tie && tie_rank < cut.y) keep = true;
    ties_seen += __popc(tie_mask);
    const uint32_t keep_mask = __ballot_sync(0xffffffffu, keep);
    if (kEmit && keep) a.indices[out + written + __popc(keep_mask & ((1u << lane) - 1))] = j;
    written += __popc(keep_mask);
  }
  if (!kEmit && lane == 0) {
    a.counts[row] = written;
    if (a.method != 1) a.row_cut[row] = make_int4(cut.x, cut.y, 0, written);
  }
}

__global__ void log_kernel(float* values, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    values[i] = logf(values[i]);
}

template <typename T>
void launch_pool(const void* q_pre, const void* k_pre, const DeviceLayout& layout, const DeviceGate& gate,
                 GateWorkspace& w, cudaStream_t stream) {
  const GateConfig& c = gate.config;
  const auto launch = [&]<bool kKeys, bool kExtremes>() {
    const dim3 grid(unsigned(layout.total_rows), unsigned(kKeys ? c.heads.kv_heads : c.heads.q_heads));
    pool_kernel<T, kKeys, kExtremes><<<grid, kPoolThreads, 0, stream>>>(
        static_cast<const T*>(q_pre), static_cast<const T*>(k_pre), layout.seq_start.data(), layout.seq_len.data(),
        layout.seq_row_offset.data(), layout.sequences, layout.total_rows, c.heads.q_heads, c.heads.kv_heads,
        c.heads.head_dim, gate.rope.data(), w.q_pool.data(), c.has_q_proj() ? nullptr : w.q_gate.data(),
        w.k_pool.data());
    SEER_CUDA_CHECK_LAUNCH();
  };
  if (c.q_pools == 3)
    launch.template operator()<false, true>();
  else
    launch.template operator()<false, false>();
  launch.template operator()<true, true>();
}

}  // namespace

DeviceGate DeviceGate::upload(const GateWeights<float>& weights, const RopeConfig& rope_config, int64_t max_blocks) {
  weights.validate();
  const GateConfig& c = weights.config;
  SEER_CHECK(c.block == kBlock, "the CUDA gate supports block size ", kBlock, ", got ", c.block);
  SEER_CHECK(c.gate_dim <= 256 && c.gate_dim % 8 == 0,
             "the CUDA gate supports gate dims that are multiples of 8 up to 256, got ", c.gate_dim);
  DeviceGate g{c};
  g.wk = DeviceBuffer<float>::upload(weights.wk);
  if (!weights.wq.empty()) g.wq = DeviceBuffer<float>::upload(weights.wq);
  if (!weights.bias.empty()) g.bias = DeviceBuffer<float>::upload(weights.bias);
  const Rope rope(rope_config, c.gate_dim);
  const int half = c.gate_dim / 2;
  std::vector<float2> table(size_t(max_blocks * half));
  for (int64_t i = 0; i < max_blocks; ++i)
    for (int x = 0; x < half; ++x) {
      const double angle = double(i * kBlock) * rope.inv_freq()[size_t(x)];
      table[size_t(i * half + x)] = make_float2(float(std::cos(angle) * rope.attention_scaling()),
                                                float(std::sin(angle) * rope.attention_scaling()));
    }
  g.rope = DeviceBuffer<float2>::upload(table);
  g.rope_blocks = max_blocks;
  return g;
}

GateWorkspace GateWorkspace::create(const DeviceLayout& layout, const GateConfig& c) {
  const size_t rows = size_t(layout.total_rows);
  return GateWorkspace{DeviceBuffer<float>(rows * c.heads.q_heads * c.q_in_dim()),
                       DeviceBuffer<float>(rows * c.heads.kv_heads * 3 * c.heads.head_dim),
                       DeviceBuffer<float>(rows * c.heads.q_heads * c.gate_dim),
                       DeviceBuffer<float>(rows * c.heads.q_heads * c.gate_dim)};
}

void gate_forward(const void* q_pre, const void* k_pre, DType dtype, const DeviceLayout& layout,
                  const DeviceGate& gate, GateWorkspace& work, float* logits, cudaStream_t stream) {
  const GateConfig& c = gate.config;
  SEER_CHECK(q_pre && k_pre && logits, "gate: null pointer");
  SEER_CHECK(layout.host.heads == c.heads.q_heads, "gate: layout built for ", layout.host.heads,
             " heads, gate has ", c.heads.q_heads);
  SEER_CHECK(layout.max_blocks <= gate.rope_blocks, "gate: sequence of ", layout.max_blocks,
             " blocks exceeds the RoPE table (", gate.rope_blocks, " blocks)");
  SEER_CHECK(work.q_gate.size() == size_t(layout.total_rows) * c.heads.q_heads * c.gate_dim,
             "gate: workspace was built for another layout");
  if (layout.total_rows == 0) return;
  SEER_CHECK(c.heads.head_dim % 8 == 0 && c.heads.head_dim <= 8 * kPoolThreads,
             "gate: the CUDA pooling needs a head dim that is a multiple of 8 up to ", 8 * kPoolThreads, ", got ",
             c.heads.head_dim);
  // Pooling rotates q itself when it has no projection; the projection rotates what it projects.
  if (dtype == DType::bf16)
    launch_pool<__nv_bfloat16>(q_pre, k_pre, layout, gate, work, stream);
  else
    launch_pool<__half>(q_pre, k_pre, layout, gate, work, stream);

  const int d = c.heads.head_dim, dg = c.gate_dim;
  const int64_t rows = layout.total_rows;
  const int hq = c.heads.q_heads;
  const dim3 pgrid(unsigned((rows + kTile - 1) / kTile), unsigned((dg / 2 + 31) / 32),
                   unsigned(c.has_q_proj() ? 2 * hq : hq));
  project_kernel<<<pgrid, 256, 0, stream>>>(work.q_pool.data(), work.k_pool.data(),
                                            c.has_q_proj() ? gate.wq.data() : nullptr, gate.wk.data(),
                                            gate.rope.data(), layout.seq_row_offset.data(), layout.sequences, rows,
                                            hq, c.heads.kv_heads, hq / c.k_proj_heads(), d, c.q_in_dim(), dg,
                                            work.q_gate.data(), work.k_gate.data());
  SEER_CUDA_CHECK_LAUNCH();

  const int tiles = int((layout.max_blocks + kTile - 1) / kTile);
  const dim3 sgrid(unsigned(tiles * tiles), unsigned(hq), unsigned(layout.sequences));
  scores_kernel<<<sgrid, 256, 0, stream>>>(work.q_gate.data(), work.k_gate.data(),
                                           c.has_block_bias ? gate.bias.data() : nullptr, layout.seq_len.data(),
                                           layout.seq_row_offset.data(), layout.seq_map_offset.data(), rows, dg,
                                           float(1.0 / std::sqrt(double(dg))), logits);
  SEER_CUDA_CHECK_LAUNCH();
}

SelectionWorkspace SelectionWorkspace::create(const DeviceLayout& layout, int q_heads) {
  const int64_t rows = layout.total_rows * q_heads;
  SelectionWorkspace w{DeviceBuffer<int4>(size_t(rows)), DeviceBuffer<int32_t>(size_t(rows + 1)), {}};
  size_t temp_bytes = 0;
  SEER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, temp_bytes, w.counts.data(), w.counts.data(), int(rows + 1)));
  w.scan_temp = DeviceBuffer<unsigned char>(temp_bytes);
  return w;
}

void select_blocks(const float* logits, const DeviceLayout& layout, int q_heads, const SelectionOptions& options,
                   SelectionWorkspace& work, DeviceMask& mask, cudaStream_t stream) {
  options.validate();
  SEER_CHECK(options.layer_mass.empty(), "select_blocks chooses for one layer: pass options.for_layer(layer)");
  const int64_t rows = layout.total_rows * q_heads;
  SEER_CHECK(mask.rows == rows, "selection: mask has ", mask.rows, " rows, expected ", rows);
  SEER_CHECK(mask.indices.size() >= size_t(layout.host.causal_pairs()),
             "selection: mask capacity below the causal block count");
  SEER_CHECK(work.counts.size() == size_t(rows + 1), "selection: workspace was built for another layout");
  if (rows == 0) return;
  SelectArgs a{logits,
               layout.seq_len.data(),
               layout.seq_row_offset.data(),
               layout.seq_map_offset.data(),
               layout.sequences,
               q_heads,
               rows,
               options.method == SelectionOptions::Method::top_k       ? 0
               : options.method == SelectionOptions::Method::threshold ? 1
                                                                       : 2,
               options.density,
               options.threshold,
               options.mass,
               options.dense_last_blocks,
               int(options.keep_sink),
               options.local_blocks,
               work.row_cut.data(),
               work.counts.data(),
               mask.indptr.data(),
               mask.indices.data()};
  const unsigned blocks = unsigned((rows + 3) / 4);
  select_kernel<false><<<blocks, 128, 0, stream>>>(a);
  SEER_CUDA_CHECK_LAUNCH();
  size_t temp_bytes = work.scan_temp.size();
  SEER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(work.scan_temp.data(), temp_bytes, work.counts.data(),
                                                mask.indptr.data(), int(rows + 1), stream));
  select_kernel<true><<<blocks, 128, 0, stream>>>(a);
  SEER_CUDA_CHECK_LAUNCH();
}

void probabilities_to_logits(float* values, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  const unsigned blocks = unsigned(std::min<int64_t>((count + 255) / 256, 4096));
  log_kernel<<<blocks, 256, 0, stream>>>(values, count);
  SEER_CUDA_CHECK_LAUNCH();
}

}  // namespace seer::cuda
