// Block-sparse FlashAttention forward on Hopper, warp-specialized. A thread block has three
// warpgroups: warpgroup 0 gives its registers away and two of its threads act as producers, one per
// consumer warpgroup; each consumer takes its own (64-row query block, query head) and visits the
// key blocks of its CSR mask row from the last (the diagonal, when kept) down, a 64-key K/V tile per
// block. A key block's index is simply the TMA coordinate, so the gather costs nothing extra. Work
// items are (head, query block) pairs, head by head (thread blocks running together then share one
// KV head's K/V in L2), query blocks in the work list's longest-first order, two per thread block;
// each consumer has its own Q tile, its own K/V pipeline (flash_pipeline.cuh) and its own producer,
// so the two never wait on each other.
#pragma once
#include "cuda/flash_pipeline.cuh"

namespace seer::cuda::detail {

constexpr int kSparseThreads = 384;

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
  static constexpr int kBytes = kTileBytes + 2 * kConsumerBarriers * 8 + 1024;  // + alignment slack
  static_assert(kBytes <= kMaxSharedBytes, "shared memory of one thread block on sm_90");
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
    FlashConsumer<T, D, kTile, Smem::kStages> consumer(threadIdx.x - 128 * warpgroup, 0);
    if (it.n_keys > 0) {
      mbarrier_wait(barriers_of(c) + Barriers::kCount, 0);
      consumer.run(
          it.n_keys, q_tile, q_tile + Smem::kQElems, q_tile + Smem::kQElems + Smem::kStages * Smem::Stage::kElems,
          Barriers::at(barriers_of(c)), p.scale_log2, it.len,
          [&](int n) {
            const int j = it.keys[it.n_keys - 1 - n];
            return TileInfo{j * kTile, j == it.i, j};
          },
          [](const TileInfo&, float (&)[1][2], int) {});
    }
    consumer.store(p, it.start, it.i, it.h, it.len, nullptr);  // an empty row writes zeros and LSE -inf
  }
}

}  // namespace seer::cuda::detail
