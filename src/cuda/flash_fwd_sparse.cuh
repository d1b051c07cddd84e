// Block-sparse FlashAttention forward on Hopper, warp-specialized. A thread block has three
// warpgroups: warpgroup 0 gives its registers away and two of its threads act as producers, one per
// consumer warpgroup; each consumer takes its own (64-row query block, query head) and visits the
// key blocks of its CSR mask row from the last (the diagonal, when kept) down, a 64-key K/V tile per
// block. A key block's index is simply the
// TMA coordinate, so the gather costs nothing extra. Work items are (head, query block) pairs, head
// by head (thread blocks running together then share one KV head's K/V in L2), query blocks in the
// work list's longest-first order, two per thread block;
// each consumer has its own Q tile, its own K/V pipeline (flash_pipeline.cuh) and its own
// producer, so the two never wait on each other.
#pragma once
#include "cuda/flash_pipeline.cuh"

namespace seer::cuda::detail {

constexpr int kSparseThreads = 384;

// One consumer warpgroup: 64 query rows against its own stream of 64-key blocks, the pipeline of
// flash_fwd_dense.cuh's consumers (S_n issued, then P_{n-1} V_{n-1}; the softmax of S_n under that
// product) written as a struct rather than lambdas: here ptxas keeps the wgmma sequence whole.
template <typename T, int D, int kStages>
struct SparseConsumer {
  static constexpr int kKeys = kTile;
  static constexpr int kS = kKeys / 2;  // S accumulators per thread (m64 x kKeys)
  using Stage = KvStage<D, kKeys>;

  int warp, lane, g, t;
  float row_max[2] = {-INFINITY, -INFINITY};  // rows 16*warp + g and + 8, base-2 scores
  float row_sum[2] = {0.f, 0.f};              // this thread's part of the row sums
  float acc[D / 2];                           // O: wgmma m64nD accumulator layout
  float s[kS];  // s[4n + e]: row 16*warp + g + 8*(e >> 1), key 8n + 2t + (e & 1)
  uint32_t pa[kKeys / 16][4];  // P as wgmma's register A operand, 16 keys per k-step

  __device__ explicit SparseConsumer(int tid) {
    warp = tid / 32;
    lane = tid % 32;
    g = lane / 4;
    t = lane % 4;
#pragma unroll
    for (int e = 0; e < D / 2; ++e) acc[e] = 0.f;
  }

  __device__ void issue_qk(const T* q_tile, const T* k_tile) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int chunk = kk / 4, step = kk % 4;  // +32 bytes per 16 columns inside a 64-column chunk
      const uint64_t a = desc_k_major(q_tile + chunk * Stage::kBox + step * 16);
      const uint64_t b = desc_k_major(k_tile + chunk * Stage::kChunkElems + step * 16);
      wgmma_m64n64_ss<T>(s, a, b, kk > 0);
    }
    wgmma_commit();
  }
  __device__ void issue_pv(const T* v_tile) {  // V is MN-major: +2048 bytes per 16 keys
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk)
      wgmma_rs<T, D>(acc, pa[kk], desc_mn_major(v_tile + kk * 16 * 64, Stage::kChunkElems * int(sizeof(T))));
    wgmma_commit();
  }
  __device__ void release(uint64_t* bar) const {
    if (lane == 0) mbarrier_arrive(bar);
  }

  // Online softmax of key block j in s: scale, mask when j is the diagonal block (kMayMask: only the
  // first block visited can be, so only it pays for the test), update the running max and sum, and
  // s <- 2^(s - max). Returns in alpha the factor by which O must be rescaled.
  template <bool kMayMask>
  __device__ void softmax(float scale_log2, bool diagonal, int key_base, int len, float (&alpha)[2]) {
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < kS / 4; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[4 * n + e] * scale_log2;
        if (kMayMask && diagonal) {
          const int key = n * 8 + 2 * t + (e & 1), row = warp * 16 + g + (e >> 1) * 8;
          if (key > row || key_base + key >= len) x = -INFINITY;
        }
        s[4 * n + e] = x;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(row_max[r], quad_max(tile_max[r]));
      const float base_exp = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: 2^-inf = 0, not NaN
      alpha[r] = exp2f(row_max[r] - base_exp);
      row_max[r] = m_new;
      row_sum[r] *= alpha[r];
#pragma unroll
      for (int n = 0; n < kS / 4; ++n) {
        s[4 * n + 2 * r] = exp2f(s[4 * n + 2 * r] - base_exp);
        s[4 * n + 2 * r + 1] = exp2f(s[4 * n + 2 * r + 1] - base_exp);
        row_sum[r] += s[4 * n + 2 * r] + s[4 * n + 2 * r + 1];
      }
    }
  }

  __device__ void rescale_and_pack(const float (&alpha)[2]) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[4 * n + e] *= alpha[e >> 1];
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) pa[kk][r] = pack2<T>(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
  }

  // The whole pipeline over the n_tiles >= 1 key blocks block_of(0..n_tiles): tile `it` sits in
  // stage it % kStages. Only tile 0 may be the diagonal block i: blocks are visited from the last
  // (largest) down.
  template <class BlockOf>
  __device__ void run(int n_tiles, int i, const T* q_tile, const T* k_tiles, const T* v_tiles,
                      const KvBarriers<kStages>& bar, float scale_log2, int len, BlockOf&& block_of) {
    float alpha[2];
    mbarrier_wait(&bar.k_full[0], 0);
    wgmma_fence();
    issue_qk(q_tile, k_tiles);
    wgmma_wait<0>();
    fence_registers(s);
    release(&bar.k_empty[0]);
    softmax<true>(scale_log2, block_of(0) == i, block_of(0) * kTile, len, alpha);
    rescale_and_pack(alpha);
    for (int it = 1; it < n_tiles; ++it) {
      const int stage = bar.stage(it), prev = bar.stage(it - 1);
      mbarrier_wait(&bar.k_full[stage], bar.parity(it));
      wgmma_fence();
      issue_qk(q_tile, k_tiles + stage * Stage::kElems);
      mbarrier_wait(&bar.v_full[prev], bar.parity(it - 1));
      issue_pv(v_tiles + prev * Stage::kElems);
      wgmma_wait<1>();  // S of tile `it` has landed; P V of tile it - 1 may still run
      fence_registers(s);
      release(&bar.k_empty[stage]);
      softmax<false>(scale_log2, false, 0, len, alpha);
      // Pin the softmax before the wait: otherwise the compiler sinks part of it past the wait,
      // where it no longer overlaps the P V product.
      fence_registers(s);
      fence_registers(row_sum);
      wgmma_wait<0>();
      fence_registers(acc);
      fence_registers(pa);
      release(&bar.v_empty[prev]);
      rescale_and_pack(alpha);
    }
    const int last = bar.stage(n_tiles - 1);
    mbarrier_wait(&bar.v_full[last], bar.parity(n_tiles - 1));
    wgmma_fence();
    issue_pv(v_tiles + last * Stage::kElems);
    wgmma_wait<0>();
    fence_registers(acc);
    fence_registers(pa);
  }

  // Normalizes O and writes rows qblock*64.. of head h (those < len) and their natural-log LSE.
  __device__ void store(const FlashParams<T>& p, int start, int qblock, int h, int len) const {
    const int64_t q_stride = int64_t(p.q_heads) * D;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float l = quad_sum(row_sum[r]);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int row = qblock * kTile + warp * 16 + g + r * 8;
      const float lse2 = l > 0.f ? row_max[r] + log2f(l) : -INFINITY;
      if (row < len) {
        T* dst = p.out + int64_t(start + row) * q_stride + int64_t(h) * D;
#pragma unroll
        for (int n = 0; n < D / 8; ++n)
          *reinterpret_cast<uint32_t*>(dst + n * 8 + 2 * t) =
              pack2<T>(acc[4 * n + 2 * r] * inv, acc[4 * n + 2 * r + 1] * inv);
        if (t == 0) p.lse[int64_t(h) * p.tokens + start + row] = lse2 * 0.69314718055994531f;
      }
    }
  }
};

// Per consumer: Q, then kStages K and kStages V tiles of 64 keys; as many stages as fit next to the
// other consumer's (a gathered tile usually comes from L2 or memory, not from a neighbour's load).
template <int D>
struct SparseSmem {
  using Stage = KvStage<D, kTile>;
  static constexpr int kStages = D == 128 ? 3 : 4;
  using Barriers = KvBarriers<kStages>;
  static constexpr int kQElems = 64 * D;
  static constexpr int kConsumerElems = kQElems + 2 * kStages * Stage::kElems;
  static constexpr int kTileBytes = 2 * kConsumerElems * 2;  // two consumers, 16-bit
  static constexpr int kConsumerBarriers = Barriers::kCount + 1;  // + Q
  static constexpr int kBytes = kTileBytes + 2 * kConsumerBarriers * 8 + 1024;  // + alignment slack  static_assert(kBytes <= 227 * 1024, "shared memory of one thread block on sm_90");
};

template <typename T, int D>
__global__ void __launch_bounds__(kSparseThreads, 1) flash_fwd_sparse_kernel(const __grid_constant__ CUtensorMap q_map,
                                                                           const __grid_constant__ CUtensorMap k_map,
                                                                           const __grid_constant__ CUtensorMap v_map,
                                                                           const FlashParams<T> p,
                                                                           int64_t items) {
  using Smem = SparseSmem<D>;
  extern __shared__ unsigned char smem_raw[];
  // TMA's 128-byte swizzle and wgmma's descriptors both assume 1024-byte-aligned tiles.
  unsigned char* base = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint64_t* const all_bars = reinterpret_cast<uint64_t*>(base + Smem::kTileBytes);
  // Warp-uniform in the compiler's eyes too (a shuffle from lane 0), so that the consumer's wgmma
  // sequence is not treated as divergent code and serialized.
  const int warpgroup = __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);
  using Barriers = typename Smem::Barriers;
  const auto barriers_of = [&](int c) { return all_bars + Smem::kConsumerBarriers * c; };  // Q's is last
  if (threadIdx.x < 2) {
    uint64_t* const bars = barriers_of(threadIdx.x);
    mbarrier_init(bars + Barriers::kCount, 1);
    Barriers::at(bars).init(4);
    fence_barrier_init();
  }
  __syncthreads();

  // Consumer c (warpgroup 1 + c) and its producer (lane 0 of warp c) take item 2 * blockIdx.x + c.
  struct Item {
    int h, seq, i, start, len, n_keys;
    const int32_t* keys;
  };
  const auto item_of = [&](int c) {
    const int64_t item = int64_t(blockIdx.x) * 2 + c, rows = items / p.q_heads;
    Item it{};
    if (item >= items) return it;  // n_keys = 0: nothing to do
    it.h = int(item / rows);
    const int2 work = p.work[item % rows];
    it.seq = work.x;
    it.i = work.y;
    it.start = p.seq_start[it.seq];
    it.len = p.seq_len[it.seq];
    const int nb = (it.len + kTile - 1) / kTile;
    const int64_t mask_row = int64_t(p.seq_row_offset[it.seq]) * p.q_heads + int64_t(it.h) * nb + it.i;
    it.keys = p.mask_indices + p.mask_indptr[mask_row];
    it.n_keys = p.mask_indptr[mask_row + 1] - p.mask_indptr[mask_row];
    return it;
  };
  const auto tiles_of = [&](int c) { return reinterpret_cast<T*>(base) + c * Smem::kConsumerElems; };

  if (warpgroup == 0) {
    setmaxnreg_dec<24>();
    const int c = int(threadIdx.x / 32);
    if (c < 2 && threadIdx.x % 32 == 0) {
      const Item it = item_of(c);
      if (it.n_keys > 0) {
        T* const q_tile = tiles_of(c);
        uint64_t* const q_full = barriers_of(c) + Barriers::kCount;
        mbarrier_expect_tx(q_full, Smem::kQElems * int(sizeof(T)));
        for (int chunk = 0; chunk < D / 64; ++chunk)
          tma_load_3d(q_tile + chunk * Smem::Stage::kBox, &q_map, q_full, chunk * 64, it.h, it.start + it.i * kTile);
        produce_kv<T, D, kTile>(it.n_keys, &k_map, &v_map, it.h / p.group, it.start, q_tile + Smem::kQElems,
                                q_tile + Smem::kQElems + Smem::kStages * Smem::Stage::kElems,
                                Barriers::at(barriers_of(c)),
                                [&](int n, int) { return it.keys[it.n_keys - 1 - n]; });
      }
    }
  } else {
    setmaxnreg_inc<240>();
    const int c = warpgroup - 1;
    const int64_t item = int64_t(blockIdx.x) * 2 + c;
    if (item >= items) return;
    const Item it = item_of(c);
    T* const q_tile = tiles_of(c);
    SparseConsumer<T, D, Smem::kStages> consumer(threadIdx.x - 128 * warpgroup);
    if (it.n_keys > 0) {
      mbarrier_wait(barriers_of(c) + Barriers::kCount, 0);
      consumer.run(it.n_keys, it.i, q_tile, q_tile + Smem::kQElems,
                   q_tile + Smem::kQElems + Smem::kStages * Smem::Stage::kElems, Barriers::at(barriers_of(c)),
                   p.scale_log2, it.len, [&](int n) { return it.keys[it.n_keys - 1 - n]; });
    }
    consumer.store(p, it.start, it.i, it.h, it.len);  // an empty row writes zeros and LSE -inf
  }
}

}  // namespace seer::cuda::detail
