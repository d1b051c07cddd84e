// Block-sparse FlashAttention forward on Hopper, warp-specialized and persistent. A thread block has
// three warpgroups: warpgroup 0 gives its registers away, and per consumer warpgroup one of its
// threads schedules and one produces. Work items are (head, query block) pairs, head by head (thread blocks
// running together then share one KV head's K/V in L2), query blocks in the work list's
// longest-first order. A consumer's scheduler draws its next item from a global counter and resolves
// it (head, query block, sequence, CSR row, the first tile's key blocks) into one of two shared
// slots, one item ahead, so that neither the producer nor the consumer waits on the draw's atomic or
// its chain of dependent loads (bench/RESULTS.md, v18-v20). The producer loads the item's Q tile, then
// the K/V tiles of its CSR mask row from the last block (the diagonal, when kept) down, one block per
// tile at d = 128 and two at d = 64 (SparseSmem); a key block's index is simply the TMA coordinate,
// so the gather costs nothing extra. Its consumer reads Q into registers, which frees the Q tile at
// once, and runs the item. The K/V pipeline (flash_pipeline.cuh) runs on across items, so the next
// item's Q and first tiles load while the consumer finishes the current one; the consumer, too, runs
// on: it issues the next item's first S before the current item's last P V (v19), and writes the
// current output while the next item's second S runs (v23). The two consumers never wait for each
// other: one that draws short mask rows takes more of them (bench/RESULTS.md, v10, v12).
#pragma once
#include <cstddef>

#include "cuda/flash_pipeline.cuh"

namespace seer::cuda::detail {

constexpr int kSparseThreads = 384;
// Tiles before the end of an item's loads at which its scheduler draws the next item: a tile takes
// about 1 us, the draw and its chain of dependent loads about 2 (bench/RESULTS.md, v20).
constexpr int kDrawAhead = 4;
constexpr int kMaxPersistentBlocks = 1024;  // more than any GPU's multiprocessors

// A work item as the scheduler resolves it into a shared slot, a 32-bit word per field: item >=
// items says there is no more work.
struct ItemSlot {
  int item;
  int h, i;        // head, query block
  int start, len;  // the sequence's first token and length
  int keys_begin, n_keys;  // its CSR mask row: mask_indices[keys_begin, keys_begin + n_keys)
  int first_blocks[2];  // the key blocks of the first tile visited: its first half's, its second's
};

// Per consumer: Q, then kStages K and kStages V tiles; then per consumer the K/V barriers, Q's full
// and empty barriers, and the two item slots' full and empty barriers; then the item slots. A tile
// is one 64-key block of the mask row at d = 128; at d = 64 it pairs two (128 keys, as in the dense
// kernel: half the barrier waits, wgmma groups and softmax reductions per key). Two stages per
// consumer, not three: at d = 128 the kernel runs at the speed of its K/V loads from L2 alone
// (bench/gpu/kv_stream.cu), and those ran 1.5% faster with two stages in flight than with three; so
// did the kernel, by 1% at d = 128 and 1.5-2% at d = 64 (bench/RESULTS.md, v23).
template <int D>
struct SparseSmem {
  static constexpr int kKeys = D == 128 ? 64 : 128;
  using Stage = KvStage<D, kKeys>;
  static constexpr int kStages = 2;
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
  static constexpr int kConsumerBarriers = Barriers::kCount + 2 + 4;  // + Q full, Q empty, 2 slots full, 2 empty
  static constexpr int kSlots = 2;  // items resolved ahead, per consumer
  static constexpr int kSlotWords = int(sizeof(ItemSlot) / 4);
  static constexpr int kBytes = kTileBytes + 2 * kConsumerBarriers * 8 + 2 * kSlots * kSlotWords * 4 + 1024;
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
  constexpr int kKeys = Smem::kKeys;
  extern __shared__ unsigned char smem_raw[];
  // TMA's 128-byte swizzle and wgmma's descriptors both assume 1024-byte-aligned tiles.
  unsigned char* base = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint64_t* const all_bars = reinterpret_cast<uint64_t*>(base + Smem::kTileBytes);
  const uint32_t all_slots = smem_u32(all_bars + 2 * Smem::kConsumerBarriers);  // [consumer][slot] ItemSlot
  // Warp-uniform in the compiler's eyes too (a shuffle from lane 0), so that the consumer's wgmma
  // sequence is not treated as divergent code and serialized.
  const int warpgroup = __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);
  // Consumer c (warpgroup 1 + c), its producer (lane 0 of warp c) and its scheduler (lane 0 of warp
  // 2 + c) share these. Item n goes through slot n % 2, whose barriers are then in phase n / 2.
  const auto barriers_of = [&](int c) { return all_bars + Smem::kConsumerBarriers * c; };
  const auto q_full_of = [&](int c) { return barriers_of(c) + Barriers::kCount; };
  const auto q_empty_of = [&](int c) { return barriers_of(c) + Barriers::kCount + 1; };
  const auto slot_full_of = [&](int c, int n) { return barriers_of(c) + Barriers::kCount + 2 + (n & 1); };
  const auto slot_empty_of = [&](int c, int n) { return barriers_of(c) + Barriers::kCount + 4 + (n & 1); };
  const auto slot_word = [&](int c, int n, int word) {
    return all_slots + uint32_t(((c * Smem::kSlots + (n & 1)) * Smem::kSlotWords + word) * 4);
  };
  const auto slot_parity = [](int n) { return uint32_t(n >> 1) & 1u; };
  const auto tiles_of = [&](int c) { return reinterpret_cast<T*>(base) + c * Smem::kConsumerElems; };
  if (threadIdx.x < 2) {
    Barriers::at(barriers_of(threadIdx.x)).init(4);
    mbarrier_init(q_full_of(threadIdx.x), 1);
    mbarrier_init(q_empty_of(threadIdx.x), 128);  // every consumer thread, once its Q is in registers
    for (int s = 0; s < Smem::kSlots; ++s) {
      mbarrier_init(slot_full_of(threadIdx.x, s), 1);          // the scheduler, once it wrote the slot
      // The producer (kDrawAhead tiles before the end of its loads) and every consumer thread (once read)
      mbarrier_init(slot_empty_of(threadIdx.x, s), 1 + 128);
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (warpgroup == 0) {
    setmaxnreg_dec<Smem::kProducerRegisters>();
    if (threadIdx.x % 32 != 0) return;
    const int warp = int(threadIdx.x / 32);
    if (warp >= 2) {  // scheduler of consumer warp - 2
      const int c = warp - 2;
      const int rows = items / p.q_heads;
      for (int n = 0;; ++n) {
        // Item n is drawn once the consumer has read item n - 1 and the producer's loads of it are
        // kDrawAhead tiles from their end (which also frees slot n % 2 of item n - 2). Drawn as
        // item n - 1 starts, it cost 3% at d = 64, density 0.5; two items ahead, 6%: the items held
        // back unbalance the end.
        if (n >= 1) mbarrier_wait(slot_empty_of(c, n - 1), slot_parity(n - 1));
        const int item = atomicAdd(p.work_counter, 1);
        ItemSlot it{};
        it.item = item;
        if (item < items) {
          it.h = item / rows;
          const int2 work = p.work[item % rows];
          it.i = work.y;
          it.start = p.seq_start[work.x];
          it.len = p.seq_len[work.x];
          const int nb = (it.len + kTile - 1) / kTile;
          const int64_t mask_row = int64_t(p.seq_row_offset[work.x]) * p.q_heads + int64_t(it.h) * nb + it.i;
          it.keys_begin = p.mask_indptr[mask_row];
          it.n_keys = p.mask_indptr[mask_row + 1] - it.keys_begin;
          if (it.n_keys > 0)
#pragma unroll
            for (int half = 0; half < kKeys / 64; ++half)
              it.first_blocks[half] =
                  p.mask_indices[it.keys_begin + it.n_keys - 1 - key_of<kKeys>(it.n_keys, 0, half)];
        }
        const int* words = reinterpret_cast<const int*>(&it);
#pragma unroll
        for (int w = 0; w < Smem::kSlotWords; ++w) sts_u32(slot_word(c, n, w), uint32_t(words[w]));
        mbarrier_arrive(slot_full_of(c, n));  // release: the slot's words before the arrival
        if (item >= items) {
          // Every scheduler draws exactly one item past the end, its last draw: the last of them to
          // get here resets the counters for the next launch (the fence orders each draw before its
          // count).
          __threadfence();
          if (atomicAdd(p.work_counter + 1, 1) == 2 * int(gridDim.x) - 1) {
            atomicExch(p.work_counter, 0);
            atomicExch(p.work_counter + 1, 0);
          }
          return;
        }
      }
    }
    // producer of consumer `warp`
    const int c = warp;
    T* const q_tile = tiles_of(c);
    T* const k_tiles = q_tile + Smem::kQElems;
    T* const v_tiles = k_tiles + Smem::kStages * Smem::Stage::kElems;
    int first = 0;  // K/V tiles loaded so far for this consumer
    for (int n = 0;; ++n) {
      mbarrier_wait(slot_full_of(c, n), slot_parity(n));
      ItemSlot it;
      int* words = reinterpret_cast<int*>(&it);
#pragma unroll
      for (int w = 0; w < Smem::kSlotWords; ++w) words[w] = int(lds_u32(slot_word(c, n, w)));
      if (it.item >= items) return;
      if (n > 0) mbarrier_wait(q_empty_of(c), uint32_t(n - 1) & 1u);  // item n - 1's Q is in registers
      mbarrier_expect_tx(q_full_of(c), Smem::kQElems * int(sizeof(T)));
      for (int chunk = 0; chunk < D / 64; ++chunk)
        tma_load_3d(q_tile + chunk * Smem::Stage::kBox, &q_map, q_full_of(c), chunk * 64, it.h,
                    it.start + it.i * kTile, l2_evict_first());
      const int32_t* const keys = p.mask_indices + it.keys_begin;
      const auto block_of = [&](int tile, int half) {
        return tile == 0 ? it.first_blocks[half] : keys[it.n_keys - 1 - key_of<kKeys>(it.n_keys, tile, half)];
      };
      const int n_tiles = tiles_of_row<kKeys>(it.n_keys);
      // The scheduler draws the next item once this one's loads are kDrawAhead tiles from their end
      // (and the consumer has read it): in time to resolve it, late enough to keep the end balanced.
      const int draw_at = max(0, n_tiles - kDrawAhead);
      if (n_tiles == 0) mbarrier_arrive(slot_empty_of(c, n));
      produce_kv<T, D, kKeys>(n_tiles, &k_map, &v_map, it.h / p.group, it.start, k_tiles, v_tiles,
                              Barriers::at(barriers_of(c)), block_of, first, [&](int tile) {
                                if (tile == draw_at) mbarrier_arrive(slot_empty_of(c, n));
                              });
      first += n_tiles;
    }
  } else {
    setmaxnreg_inc<Smem::kConsumerRegisters>();
    const int c = warpgroup - 1;
    const T* const q_tile = tiles_of(c);
    const T* const k_tiles = q_tile + Smem::kQElems;
    const T* const v_tiles = k_tiles + Smem::kStages * Smem::Stage::kElems;
    const Barriers bars = Barriers::at(barriers_of(c));
    struct Item {
      int item, h, i, start, len, n_tiles, j0, upper_shift;
    };
    // Item n from its slot. Warp-uniform in the compiler's eyes (shuffles from lane 0): a per-thread
    // value here makes ptxas serialize the wgmmas (C7520, "in divergent path").
    const auto read_item = [&](int n) {
      mbarrier_wait(slot_full_of(c, n), slot_parity(n));
      // The ItemSlot field at byte `offset`.
      const auto read = [&](size_t offset) {
        return __shfl_sync(0xffffffffu, int(lds_u32(slot_word(c, n, int(offset / 4)))), 0);
      };
      Item it{};
      it.item = read(offsetof(ItemSlot, item));
      if (it.item < items) {
        it.h = read(offsetof(ItemSlot, h));
        it.i = read(offsetof(ItemSlot, i));
        it.start = read(offsetof(ItemSlot, start));
        it.len = read(offsetof(ItemSlot, len));
        const int n_keys = read(offsetof(ItemSlot, n_keys));
        it.n_tiles = tiles_of_row<kKeys>(n_keys);
        it.j0 = read(offsetof(ItemSlot, first_blocks));
        // Tile 0's second half at d = 64: the row's next block down, or (n_keys odd) block j0 again as
        // padding that starts at key len, so that the length test masks all of it.
        if (kKeys == 128)
          it.upper_shift = (n_keys & 1) ? it.len - (it.j0 + 1) * kTile
                                        : (read(offsetof(ItemSlot, first_blocks) + 4) - it.j0 - 1) * kTile;
        mbarrier_arrive(slot_empty_of(c, n));
      }
      return it;
    };
    // Only tile 0 is masked (i's diagonal block, when kept, comes first); the others need no info.
    const auto first_info = [](const Item& it) {
      TileInfo info{it.j0 * kTile, it.j0, (it.j0 - it.i) * kTile};
      info.upper_shift = it.upper_shift;
      return info;
    };
    const auto load_q = [&](FlashConsumer<T, D, kKeys, Smem::kStages>& consumer, int n) {
      mbarrier_wait(q_full_of(c), uint32_t(n) & 1u);
      consumer.load_q(q_tile);
      mbarrier_arrive(q_empty_of(c));
    };
    FlashConsumer<T, D, kKeys, Smem::kStages> consumer(threadIdx.x - 128 * warpgroup, 0);
    int first = 0;  // the pipeline's index of the current item's tile 0
    int n = 0;
    Item cur = read_item(0);
    while (cur.item < items) {
      load_q(consumer, n);
      if (cur.n_tiles == 0) {  // an empty row writes zeros and LSE -inf
        consumer.clear();
        consumer.store(p, cur.start, cur.i, cur.h, cur.len);
        cur = read_item(++n);
        continue;
      }
      consumer.issue_first(k_tiles, bars, first);
      wgmma_wait<0>();
      consumer.first_softmax(bars, first, p.scale_log2, first_info(cur), cur.len, NoRecord{}, NoRecord{});
      int next_tile = 1;  // the current item's first tile still to step through
      for (;;) {  // items that each begin while the one before ends
        for (int it = next_tile; it < cur.n_tiles; ++it)
          consumer.step(k_tiles, v_tiles, bars, first, it, p.scale_log2, TileInfo{}, cur.len, NoRecord{}, NoRecord{});
        const int last = first + cur.n_tiles - 1;
        first = last + 1;
        const Item next = read_item(++n);
        if (next.item >= items || next.n_tiles == 0) {
          consumer.issue_last_pv(v_tiles, bars, last, cur.n_tiles > 1);
          wgmma_wait<0>();
          consumer.finish_last_pv(bars, last);
          consumer.store(p, cur.start, cur.i, cur.h, cur.len);
          cur = next;
          break;
        }
        // As in step(): the next item's first S (its Q into registers, which the last S has freed),
        // then this item's last P V; the next item's masked softmax runs while that P V does, and
        // this item's output is written once it lands, under the next item's second S if it has one.
        load_q(consumer, n);
        consumer.issue_first(k_tiles, bars, first);
        consumer.issue_last_pv(v_tiles, bars, last, cur.n_tiles > 1);
        wgmma_wait<1>();
        const float cur_max[2] = {consumer.row_max[0], consumer.row_max[1]};
        const float cur_sum[2] = {consumer.row_sum[0], consumer.row_sum[1]};
        consumer.first_scores(bars, first, p.scale_log2, first_info(next), next.len, NoRecord{}, NoRecord{});
        wgmma_wait<0>();
        consumer.finish_last_pv(bars, last);
        consumer.pack();
        next_tile = 1;
        if (next.n_tiles > 1) {
          // The next item's second S runs while this item's output is written.
          consumer.issue_first(k_tiles, bars, first + 1);
          consumer.store(p, cur.start, cur.i, cur.h, cur.len, cur_max, cur_sum);
          consumer.template finish_step<true>(v_tiles, bars, first, 1, p.scale_log2, TileInfo{}, next.len, NoRecord{},
                                              NoRecord{});
          next_tile = 2;
        } else {
          consumer.store(p, cur.start, cur.i, cur.h, cur.len, cur_max, cur_sum);
        }
        cur = next;
      }
    }
  }
}

}  // namespace seer::cuda::detail
