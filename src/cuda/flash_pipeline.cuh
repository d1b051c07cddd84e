// The K/V pipeline of the warp-specialized FlashAttention kernels: a producer thread loads K/V tiles
// of kKeys keys (128 for dense: two 64-key blocks; 64 for block-sparse: one block) by TMA into
// kStages shared-memory stages on full/empty mbarriers, for consumer warpgroups of 64 query rows.
#pragma once
#include "cuda/flash_common.cuh"
#include "cuda/hopper.cuh"

namespace seer::cuda::detail {

// Shared-memory geometry of one K or V stage: D/64 column chunks of [kKeys rows][64 columns],
// each filled by kKeys/64 TMA boxes of [64 tokens][64 columns] in the 128-byte swizzle.
template <int D, int kKeys>
struct KvStage {
  static constexpr int kBox = 64 * 64;
  static constexpr int kChunkElems = kKeys * 64;
  static constexpr int kElems = kKeys * D;
};

// The pipeline's barriers for one consumer (or two consumers sharing the tiles): full barriers
// complete on the producer's transaction bytes, empty ones on one arrival per consumer warp.
// init() is run by one thread before the block-wide barrier.
template <int kStages>
struct KvBarriers {
  static constexpr int kCount = 4 * kStages;
  uint64_t* k_full;   // [kStages]
  uint64_t* v_full;   // [kStages]
  uint64_t* k_empty;  // [kStages]
  uint64_t* v_empty;  // [kStages]

  // Carves the barriers out of bars[0..kCount); `consumer_warps` arrivals release a stage.
  __device__ static KvBarriers at(uint64_t* bars) {
    return {bars, bars + kStages, bars + 2 * kStages, bars + 3 * kStages};
  }
  // Tile `it` sits in stage it % kStages; its barriers are in their (it / kStages)-th phase.
  __device__ static int stage(int it) { return it % kStages; }
  __device__ static uint32_t parity(int it) { return uint32_t(it / kStages) & 1u; }
  __device__ void init(int consumer_warps) const {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&k_full[s], 1);
      mbarrier_init(&v_full[s], 1);
      mbarrier_init(&k_empty[s], consumer_warps);
      mbarrier_init(&v_empty[s], consumer_warps);
    }
  }
};

// Producer side, one thread: tile `it` of n_tiles goes to stage it % kStages once every consumer
// warp has released that stage's previous tile (it - kStages); block_of(it, half) is the sequence-local 64-key
// block in half `half` of tile `it`. K and V complete on separate barriers, so S = Q K^T can start
// before V lands.
template <typename T, int D, int kKeys, int kStages, class BlockOf>
__device__ void produce_kv(int n_tiles, const CUtensorMap* k_map, const CUtensorMap* v_map, int kv_head, int start,
                           T* k_tiles, T* v_tiles, const KvBarriers<kStages>& bar, BlockOf&& block_of) {
  using Stage = KvStage<D, kKeys>;
  const auto load = [&](const CUtensorMap* map, T* stage_tiles, uint64_t* full, int it) {
    mbarrier_expect_tx(full, Stage::kElems * int(sizeof(T)));
    for (int c = 0; c < D / 64; ++c)
      for (int half = 0; half < kKeys / 64; ++half)
        tma_load_3d(stage_tiles + c * Stage::kChunkElems + half * Stage::kBox, map, full, c * 64, kv_head,
                    start + block_of(it, half) * kTile);
  };
  for (int it = 0; it < n_tiles; ++it) {
    const int stage = bar.stage(it);
    const uint32_t empty_parity = bar.parity(it) ^ 1u;  // the release of tile it - kStages
    if (it >= kStages) mbarrier_wait(&bar.k_empty[stage], empty_parity);
    load(k_map, k_tiles + stage * Stage::kElems, &bar.k_full[stage], it);
    if (it >= kStages) mbarrier_wait(&bar.v_empty[stage], empty_parity);
    load(v_map, v_tiles + stage * Stage::kElems, &bar.v_full[stage], it);
  }
}


}  // namespace seer::cuda::detail
