// Block-sparse FlashAttention forward on Hopper, warp-specialized and persistent. A thread block has
// three warpgroups: warpgroup 0 gives its registers away and two of its threads act as producers, one
// per consumer warpgroup. Work items are (head, query block) pairs, head by head (thread blocks
// running together then share one KV head's K/V in L2), query blocks in the work list's
// longest-first order. Each producer draws its next item from a global counter, loads the item's Q
// tile, then the K/V tiles of its CSR mask row from the last block (the diagonal, when kept) down,
// one block per tile at d = 128 and two at d = 64 (SparseSmem); a key block's index is simply the
// TMA coordinate, so the gather costs nothing extra. Its consumer reads Q into registers, which
// frees the Q tile at once, and runs the item. The K/V pipeline (flash_pipeline.cuh) runs on across
// items, so the next item's Q and first tiles load while the consumer finishes the current one, and
// the two consumers never wait for each other: one that draws short mask rows takes more of them
// (bench/RESULTS.md, v10, v12).
#pragma once
#include "cuda/flash_pipeline.cuh"

namespace seer::cuda::detail {

constexpr int kSparseThreads = 384;
constexpr int kMaxPersistentBlocks = 1024;  // more than any GPU's multiprocessors

// Per consumer: Q, then kStages K and kStages V tiles; then per consumer the K/V barriers, Q's full
// and empty barriers, and two item slots. A tile is one 64-key block of the mask row at d = 128; at
// d = 64 it pairs two (128 keys, as in the dense kernel: half the barrier waits, wgmma groups and
// softmax reductions per key), which three stages per consumer still fit.
template <int D>
struct SparseSmem {
  static constexpr int kKeys = D == 128 ? 64 : 128;
  using Stage = KvStage<D, kKeys>;
  static constexpr int kStages = 3;
  // setmaxnreg moves registers within the 168 per thread allocated at launch (384 threads): what the
  // producer warpgroup gives away must cover what the consumers take, or setmaxnreg.inc waits
  // forever. The producer needs more than 24 for its loop over items without spilling.
  static constexpr int kProducerRegisters = D == 128 ? 32 : 48;
  static constexpr int kConsumerRegisters = D == 128 ? 232 : 216;
  static_assert((168 - kProducerRegisters) * 128 >= (kConsumerRegisters - 168) * 256, "setmaxnreg budget");
  using Barriers = KvBarriers<kStages>;
  static constexpr int kQElems = 64 * D;
  static constexpr int kConsumerElems = kQElems + 2 * kStages * Stage::kElems;
  static constexpr int kTileBytes = 2 * kConsumerElems * 2;  // two consumers, 16-bit
  static constexpr int kConsumerBarriers = Barriers::kCount + 2;  // + Q full, Q empty
  static constexpr int kBytes = kTileBytes + 2 * kConsumerBarriers * 8 + 2 * 2 * 4 + 1024;  // + slots, alignment
  static_assert(kBytes <= kMaxSharedBytes, "shared memory of one thread block on sm_90");
};

// A mask row of n key blocks, visited from the last (the diagonal, when kept) down, in tiles of
// kKeys / 64 blocks. With pairs and n odd, tile 0 holds the last block and a padding half (the same
// block again, its scores masked), so that only tile 0 needs the mask.
template <int kKeys>
__device__ __forceinline__ int tiles_of_row(int n) {
  return kKeys == 128 ? (n + 1) / 2 : n;
}
// Position, counted from the row's last block, of the block in half `half` of tile `tile`.
template <int kKeys>
__device__ __forceinline__ int key_of(int n, int tile, int half) {
  if (kKeys == 64) return tile;
  const int odd = n & 1;
  if (tile == 0) return odd ? 0 : half;  // padding: block 0 again
  return 2 * tile + half - odd;
}

template <typename T, int D>
__global__ void __launch_bounds__(kSparseThreads, 1) flash_fwd_sparse_kernel(const __grid_constant__ CUtensorMap q_map,
                                                                           const __grid_constant__ CUtensorMap k_map,
                                                                           const __grid_constant__ CUtensorMap v_map,
                                                                           const FlashParams<T> p, int items) {
  using Smem = SparseSmem<D>;
  using Barriers = typename Smem::Barriers;
  extern __shared__ unsigned char smem_raw[];
  // TMA's 128-byte swizzle and wgmma's descriptors both assume 1024-byte-aligned tiles.
  unsigned char* base = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint64_t* const all_bars = reinterpret_cast<uint64_t*>(base + Smem::kTileBytes);
  int* const all_slots = reinterpret_cast<int*>(all_bars + 2 * Smem::kConsumerBarriers);
  // Warp-uniform in the compiler's eyes too (a shuffle from lane 0), so that the consumer's wgmma
  // sequence is not treated as divergent code and serialized.
  const int warpgroup = __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);
  // Consumer c (warpgroup 1 + c) and its producer (lane 0 of warp c) share these.
  const auto barriers_of = [&](int c) { return all_bars + Smem::kConsumerBarriers * c; };
  const auto q_full_of = [&](int c) { return barriers_of(c) + Barriers::kCount; };
  const auto q_empty_of = [&](int c) { return barriers_of(c) + Barriers::kCount + 1; };
  const auto tiles_of = [&](int c) { return reinterpret_cast<T*>(base) + c * Smem::kConsumerElems; };
  if (threadIdx.x < 2) {
    Barriers::at(barriers_of(threadIdx.x)).init(4);
    mbarrier_init(q_full_of(threadIdx.x), 1);
    mbarrier_init(q_empty_of(threadIdx.x), 128);  // every consumer thread, once its Q is in registers
    fence_barrier_init();
  }
  __syncthreads();

  struct Item {
    int h, i, start, len, n_keys;
    const int32_t* keys;
  };
  const auto item_of = [&](int item) {
    const int rows = items / p.q_heads;
    Item it{};
    it.h = item / rows;
    const int2 work = p.work[item % rows];
    it.i = work.y;
    it.start = p.seq_start[work.x];
    it.len = p.seq_len[work.x];
    const int nb = (it.len + kTile - 1) / kTile;
    const int64_t mask_row = int64_t(p.seq_row_offset[work.x]) * p.q_heads + int64_t(it.h) * nb + it.i;
    it.keys = p.mask_indices + p.mask_indptr[mask_row];
    it.n_keys = p.mask_indptr[mask_row + 1] - p.mask_indptr[mask_row];
    return it;
  };

  if (warpgroup == 0) {
    setmaxnreg_dec<Smem::kProducerRegisters>();
    const int c = int(threadIdx.x / 32);
    if (c >= 2 || threadIdx.x % 32 != 0) return;
    T* const q_tile = tiles_of(c);
    T* const k_tiles = q_tile + Smem::kQElems;
    T* const v_tiles = k_tiles + Smem::kStages * Smem::Stage::kElems;
    int first = 0;  // K/V tiles loaded so far for this consumer
    for (int n = 0;; ++n) {
      const int item = atomicAdd(p.work_counter, 1);
      if (n > 0) mbarrier_wait(q_empty_of(c), uint32_t(n - 1) & 1u);  // item n - 1's Q is in registers
      // Published by the arrival on Q's full barrier (volatile: kept before that asm).
      *reinterpret_cast<volatile int*>(&all_slots[2 * c + (n & 1)]) = item;
      if (item >= items) {
        mbarrier_arrive(q_full_of(c));  // no more work
        // Every producer draws exactly one item past the end, its last draw: the last of them to get
        // here resets the counters for the next launch (the fence orders each draw before its count).
        __threadfence();
        if (atomicAdd(p.work_counter + 1, 1) == 2 * int(gridDim.x) - 1) {
          atomicExch(p.work_counter, 0);
          atomicExch(p.work_counter + 1, 0);
        }
        return;
      }
      const Item it = item_of(item);
      mbarrier_expect_tx(q_full_of(c), Smem::kQElems * int(sizeof(T)));
      for (int chunk = 0; chunk < D / 64; ++chunk)
        tma_load_3d(q_tile + chunk * Smem::Stage::kBox, &q_map, q_full_of(c), chunk * 64, it.h,
                    it.start + it.i * kTile);
      const int n_tiles = tiles_of_row<Smem::kKeys>(it.n_keys);
      const auto block_of = [&](int tile, int half) {
        return it.keys[it.n_keys - 1 - key_of<Smem::kKeys>(it.n_keys, tile, half)];
      };
      produce_kv<T, D, Smem::kKeys>(n_tiles, &k_map, &v_map, it.h / p.group, it.start, k_tiles, v_tiles,
                                    Barriers::at(barriers_of(c)), block_of, first);
      first += n_tiles;
    }
  } else {
    setmaxnreg_inc<Smem::kConsumerRegisters>();
    const int c = warpgroup - 1;
    const T* const q_tile = tiles_of(c);
    const T* const k_tiles = q_tile + Smem::kQElems;
    const T* const v_tiles = k_tiles + Smem::kStages * Smem::Stage::kElems;
    int first = 0;
    for (int n = 0;; ++n) {
      mbarrier_wait(q_full_of(c), uint32_t(n) & 1u);
      // Warp-uniform in the compiler's eyes (a shuffle from lane 0): a per-thread value here makes
      // ptxas serialize the wgmmas (C7520, "in divergent path").
      const int item = __shfl_sync(0xffffffffu, *reinterpret_cast<volatile int*>(&all_slots[2 * c + (n & 1)]), 0);
      if (item >= items) return;
      const Item it = item_of(item);
      FlashConsumer<T, D, Smem::kKeys, Smem::kStages> consumer(threadIdx.x - 128 * warpgroup, 0);
      consumer.load_q(q_tile);
      mbarrier_arrive(q_empty_of(c));
      const int n_tiles = tiles_of_row<Smem::kKeys>(it.n_keys);
      if (n_tiles > 0)
        consumer.run(
            n_tiles, k_tiles, v_tiles, Barriers::at(barriers_of(c)), p.scale_log2, it.len,
            [&](int tile) {
              // Only tile 0 is masked (it.i's diagonal block, when kept, comes first): the shifts
              // serve only it, and ptxas drops the load of j0 for the other tiles.
              const int j0 = it.keys[it.n_keys - 1 - key_of<Smem::kKeys>(it.n_keys, tile, 0)];
              TileInfo info{j0 * kTile, j0, (j0 - it.i) * kTile};
              if (Smem::kKeys == 128 && tile == 0) {
                const int upper = key_of<Smem::kKeys>(it.n_keys, 0, 1);
                // The padding half starts at key len: the length test masks all of it.
                info.upper_shift = upper == 0 ? it.len - (j0 + 1) * kTile
                                              : (it.keys[it.n_keys - 1 - upper] - j0 - 1) * kTile;
              }
              return info;
            },
            NoRecord{}, NoRecord{}, first);
      first += n_tiles;
      consumer.store(p, it.start, it.i, it.h, it.len);  // an empty row writes zeros and LSE -inf
    }
  }
}

}  // namespace seer::cuda::detail
