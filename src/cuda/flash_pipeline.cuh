// The K/V pipeline of the warp-specialized FlashAttention kernels: a producer thread loads K/V tiles
// of kKeys keys (128: two 64-key blocks, for dense and ground truth and for block-sparse at d = 64;
// 64: one block, for block-sparse at d = 128) by TMA into
// kStages shared-memory stages on full/empty mbarriers, for consumer warpgroups of 64 query rows.
#pragma once
#include <type_traits>

#include "attention/online_softmax.h"
#include "cuda/flash_common.cuh"
#include "cuda/hopper.cuh"

namespace seer::cuda::detail {

constexpr int kMaxSharedBytes = 227 * 1024;  // dynamic shared memory of one thread block on sm_90

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
  __device__ static int stage(int it) { return int(uint32_t(it) % kStages); }  // it >= 0: a mask for powers of 2
  __device__ static uint32_t parity(int it) { return (uint32_t(it) / kStages) & 1u; }
  __device__ void init(int consumer_warps) const {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&k_full[s], 1);
      mbarrier_init(&v_full[s], 1);
      mbarrier_init(&k_empty[s], consumer_warps);
      mbarrier_init(&v_empty[s], consumer_warps);
    }
  }
};

// A hook that takes anything and does nothing: the variants that record no block statistics, and
// producers that need no hook before a tile's loads.
struct NoRecord {
  template <class... Args>
  __device__ void operator()(Args&&...) const {}
};

// Producer side, one thread: tile `it` of n_tiles is the pipeline's tile first + it (`first`: the
// tiles loaded before, for a pipeline that runs on across work items) and goes to stage (first + it)
// % kStages once every consumer warp has released that stage's previous tile; block_of(it, half) is
// the sequence-local 64-key block in half `half` of tile `it`; before_tile(it) runs before tile it's
// waits and loads. K and V complete on separate barriers, so S = Q K^T can start before V lands.
template <typename T, int D, int kKeys, int kStages, class BlockOf, class BeforeTile = NoRecord>
__device__ void produce_kv(int n_tiles, const CUtensorMap* k_map, const CUtensorMap* v_map, int kv_head, int start,
                           T* k_tiles, T* v_tiles, const KvBarriers<kStages>& bar, BlockOf&& block_of,
                           int first = 0, BeforeTile&& before_tile = BeforeTile{}) {
  using Stage = KvStage<D, kKeys>;
  constexpr int kHalves = kKeys / 64;
  int block[kHalves], next[kHalves];  // tile it's blocks; tile it + 1's, read before tile it's waits
  // K/V tiles are read again by other query blocks (gathered by many mask rows, or every later
  // tile's at dense), Q and O pass through once: K/V are kept in L2 ahead of them (evict_last here,
  // evict_first for Q, streaming stores for O). Block-sparse at d = 128 ran 1-1.5% faster, the rest
  // within noise (bench/RESULTS.md, v22).
  const uint64_t policy = l2_evict_last();
  const auto load = [&](const CUtensorMap* map, T* stage_tiles, uint64_t* full) {
    mbarrier_expect_tx(full, Stage::kElems * int(sizeof(T)));
    for (int c = 0; c < D / 64; ++c)
      for (int half = 0; half < kHalves; ++half)
        tma_load_3d(stage_tiles + c * Stage::kChunkElems + half * Stage::kBox, map, full, c * 64, kv_head,
                    start + block[half] * kTile, policy);
  };
  for (int half = 0; half < kHalves; ++half) next[half] = n_tiles > 0 ? block_of(0, half) : 0;
#pragma unroll 1  // the producer has few registers (setmaxnreg)
  for (int it = 0; it < n_tiles; ++it) {
    before_tile(it);
    for (int half = 0; half < kHalves; ++half) block[half] = next[half];
    // A gathered block index is a global load: issue the next one now, so that its latency hides
    // behind this tile's waits instead of delaying the next tile's loads.
    if (it + 1 < n_tiles)
      for (int half = 0; half < kHalves; ++half) next[half] = block_of(it + 1, half);
    const int stage = bar.stage(first + it);
    const uint32_t empty_parity = bar.parity(first + it) ^ 1u;  // the release of tile first + it - kStages
    if (first + it >= kStages) mbarrier_wait(&bar.k_empty[stage], empty_parity);
    load(k_map, k_tiles + stage * Stage::kElems, &bar.k_full[stage]);
    if (first + it >= kStages) mbarrier_wait(&bar.v_empty[stage], empty_parity);
    load(v_map, v_tiles + stage * Stage::kElems, &bar.v_full[stage]);
  }
}

// Epilogue of a consumer: normalizes O (wgmma m64nD accumulator layout: this thread holds rows
// `row_in_block` and + 8, columns 8n + 2t + {0, 1}) and writes rows qblock*64.. of head h that are
// < len, and their natural-log LSE. The four threads of a quad hold the same rows; a 4 x 4
// transpose of their packed words by two xor-shuffle steps (step k = 1, then 2, swaps the words in
// slots j with j & k != t & k with thread t ^ k's slots j ^ k) leaves thread t the 8 columns
// of n = 4m + t, so each thread writes 16-byte units: a quarter of the store instructions of
// 4-byte writes, whose queue held the consumer's registers at every item's end (bench/RESULTS.md, v18).
// Streaming stores (st.global.cs): O is not read again here, so it should not evict K/V from L2.
// kPredicated: the row tests as store predicates instead of branches, for FlashConsumer, whose
// block-sparse kernel writes O between a wgmma's issue and its wait: branches anywhere in that loop
// made ptxas serialize its wgmmas (C7520). It computes every thread's LSE, which slowed the dense
// kernel at d = 64 by 3-4%; that one keeps the branches (bench/RESULTS.md, v23).
template <typename T, int D, bool kPredicated>
__device__ __forceinline__ void store_rows(const FlashParams<T>& p, const float (&acc)[D / 2], const float (&row_max)[2],
                                           const float (&row_sum)[2], int row_in_block, int t, int start, int qblock,
                                           int h, int len) {
  const int64_t q_stride = int64_t(p.q_heads) * D;
  const bool odd = t & 1, high = t & 2;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(row_sum[r]);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int local = row_in_block + r * 8;
    const int row = qblock * kTile + local;
    T* dst = p.out + int64_t(start + row) * q_stride + int64_t(h) * D;  // used only if row < len
#pragma unroll
    for (int m = 0; m < D / 32; ++m) {
      uint32_t w[4];  // w[j]: columns 8(4m + j) + 2t + {0, 1}
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int n = 4 * m + j;
        w[j] = pack2<T>(acc[4 * n + 2 * r] * inv, acc[4 * n + 2 * r + 1] * inv);
      }
      // Shuffles outside the row test: every lane of the warp takes part.
      uint32_t lo = __shfl_xor_sync(0xffffffffu, odd ? w[0] : w[1], 1);
      uint32_t hi = __shfl_xor_sync(0xffffffffu, odd ? w[2] : w[3], 1);
      (odd ? w[0] : w[1]) = lo;
      (odd ? w[2] : w[3]) = hi;
      lo = __shfl_xor_sync(0xffffffffu, high ? w[0] : w[2], 2);
      hi = __shfl_xor_sync(0xffffffffu, high ? w[1] : w[3], 2);
      (high ? w[0] : w[2]) = lo;
      (high ? w[1] : w[3]) = hi;
      if constexpr (kPredicated)
        st_global_cs_v4_if(dst + (4 * m + t) * 8, make_uint4(w[0], w[1], w[2], w[3]), row < len);
      else if (row < len)
        __stcs(reinterpret_cast<uint4*>(dst + (4 * m + t) * 8), make_uint4(w[0], w[1], w[2], w[3]));
    }
    if (kPredicated || (row < len && t == 0)) {
      const float lse2 = l > 0.f ? row_max[r] + log2f(l) : -INFINITY;
      float* const lse = p.lse + int64_t(h) * p.tokens + start + row;
      if constexpr (kPredicated)
        st_global_f32_if(lse, lse2 * 0.69314718055994531f, row < len && t == 0);
      else
        *lse = lse2 * 0.69314718055994531f;
    }
  }
}

// Rows 16·warp + g and + 8 of a 64-row Q tile (64-column chunks of [64 rows][128 bytes], the
// 16-byte units of a row permuted by XOR with row % 8: the 128-byte swizzle) into wgmma's register
// A-fragment layout: qa[kk] = pairs of columns {(g, 2t), (g + 8, 2t), (g, 2t + 8), (g + 8, 2t + 8)}
// + 16·kk. The 8 rows g of a warp read 8 different units of their rows: no bank conflicts.
template <typename T, int D>
__device__ __forceinline__ void load_q_fragments(const T* q_tile, int warp, int g, int t, uint32_t (&qa)[D / 16][4]) {
  static_assert(sizeof(T) == 2, "16-bit elements: 128-byte rows of 64 columns");
  constexpr uint32_t kChunkBytes = 64 * 128;  // one TMA box, [64 rows][64 columns]
  const int row = warp * 16 + g;
  const uint32_t row_address = smem_u32(q_tile) + row * 128 + 4 * t;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const uint32_t chunk_address = row_address + (kk / 4) * kChunkBytes;
    const int unit = (kk % 4) * 2;
    qa[kk][0] = lds_u32(chunk_address + ((unit ^ (row & 7)) << 4));
    qa[kk][1] = lds_u32(chunk_address + 8 * 128 + ((unit ^ (row & 7)) << 4));
    qa[kk][2] = lds_u32(chunk_address + (((unit + 1) ^ (row & 7)) << 4));
    qa[kk][3] = lds_u32(chunk_address + 8 * 128 + (((unit + 1) ^ (row & 7)) << 4));
  }
}

// What the consumer needs to know about tile `it` of its sequence of tiles.
struct TileInfo {
  int key_base;    // first key (sequence-local) of the tile
  int first_block; // 64-key block index of the tile's first half, for the ground-truth record
  // Key positions for the causal test, relative to the consumer's rows: the tile's first key lies
  // causal_shift keys past (row_offset - first row), and a 128-key tile's second half starts
  // upper_shift keys past the end of its first. Both 0 for contiguous tiles from the diagonal;
  // block-sparse pairs two blocks of a mask row, the first possibly below the diagonal, and a
  // padding half lies past every key.
  int causal_shift = 0;
  int upper_shift = 0;
};

// One consumer warpgroup: 64 query rows against a stream of kKeys-key tiles. Per tile n, S_n = Q K_n^T
// (wgmma, Q from registers, K from shared memory) is issued, then O += P_{n-1} V_{n-1} (P from registers);
// the softmax of S_n runs while that second product is in flight, and O is rescaled once it lands.
// The online softmax works in base 2 with log2(e)/sqrt(d) folded into the scale. Used by the
// block-sparse and ground-truth kernels; the dense kernel writes the same steps as lambdas, which
// ptxas compiles 10% faster there (flash_fwd_dense.cuh says why) but slower for the ground truth.
// Q is read once from its tile by load_q() (load_q_fragments): a wgmma with A in shared memory re-reads
// it there every time (bench/RESULTS.md, v9). It costs D/4 registers.
template <typename T, int D, int kKeys, int kStages>
struct FlashConsumer {
  static constexpr int kS = kKeys / 2;  // S accumulators per thread (m64 x kKeys)
  using Stage = KvStage<D, kKeys>;

  int warp, lane, g, t;
  int row_offset;  // this warpgroup's first row relative to the diagonal tile's first key
  float row_max[2] = {-INFINITY, -INFINITY};  // rows 16*warp + g and + 8, base-2 scores
  float row_sum[2] = {0.f, 0.f};              // this thread's part of the row sums
  float acc[D / 2];                           // O: wgmma m64nD accumulator layout (written by an item's first P V)
  float s[kS];  // s[4n + e]: row 16*warp + g + 8*(e >> 1), key 8n + 2t + (e & 1)
  uint32_t pa[kKeys / 16][4];  // P as wgmma's register A operand, 16 keys per k-step
  uint32_t qa[D / 16][4];  // Q in the same layout, 16 columns per k-step

  __device__ FlashConsumer(int tid, int row_offset_) : row_offset(row_offset_) {
    warp = tid / 32;
    lane = tid % 32;
    g = lane / 4;
    t = lane % 4;
  }

  __device__ void issue_qk(const T* k_tile) {
    const uint64_t k_desc = desc_k_major(k_tile);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int chunk = kk / 4, step = kk % 4;  // +32 bytes per 16 columns inside a 64-column chunk
      wgmma_rs<T, kKeys, BMajor::K>(
          s, qa[kk], desc_advance(k_desc, uint32_t((chunk * Stage::kChunkElems + step * 16) * sizeof(T))), kk > 0);
    }
    wgmma_commit();
  }
  // O (+)= P V: `accumulate` false for an item's first tile, whose product overwrites O (so O needs
  // neither clearing nor rescaling at an item's start).
  __device__ void issue_pv(const T* v_tile, bool accumulate) {  // V is MN-major: +2048 bytes per 16 keys
    const uint64_t v_desc = desc_mn_major(v_tile, Stage::kChunkElems * int(sizeof(T)));
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk)
      wgmma_rs<T, D, BMajor::MN>(acc, pa[kk], desc_advance(v_desc, uint32_t(kk * 16 * 64 * sizeof(T))),
                                 kk > 0 || accumulate);
    wgmma_commit();
  }
  __device__ void release(uint64_t* bar) const {
    if (lane == 0) mbarrier_arrive(bar);
  }

  // Online softmax of the tile in s: mask (kMayMask: only the first tile visited can hold the
  // diagonal block or keys past the end, so only it pays for the test), hand this thread's scaled
  // maxima per 64-key block half and row half to record(tile, half_max) (the ground truth; a quad's
  // four threads hold parts of the same rows), update the running max (step_row_max: at d = 128 it may
  // lag the true max by kRescaleSlack) and sum, and s <- 2^(s·scale - max). Returns in alpha the factor by
  // which O must be rescaled. As in the dense kernel (bench/RESULTS.md, v8): maxima over the raw
  // scores, scaled once (the scale is positive), and the scale inside the exponent's FFMA. Unless
  // record_mass is a NoRecord, it gets each row half's running max, the exponents' base, and this
  // thread's sums of 2^(s·scale - base) per block half (the mass poolings of the ground truth); the
  // sums then add up per block half first, which only that variant pays for.
  template <bool kMayMask, class Record, class RecordMass>
  __device__ void softmax(float scale_log2, const TileInfo& tile, int len, float (&alpha)[2], Record&& record,
                          RecordMass&& record_mass) {
    constexpr bool kRecordMass = !std::is_same_v<std::decay_t<RecordMass>, NoRecord>;
    constexpr int kHalves = kKeys / 64;
    float half_max[kHalves][2];
#pragma unroll
    for (int kh = 0; kh < kHalves; ++kh) half_max[kh][0] = half_max[kh][1] = -INFINITY;
#pragma unroll
    for (int n = 0; n < kS / 4; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[4 * n + e];
        if (kMayMask) {
          const int key = n * 8 + 2 * t + (e & 1) + (n >= 8 ? tile.upper_shift : 0);
          const int row = row_offset + warp * 16 + g + (e >> 1) * 8;
          if (key + tile.causal_shift > row || tile.key_base + key >= len) x = -INFINITY;
        }
        s[4 * n + e] = x;
        half_max[n / 8][e >> 1] = fmaxf(half_max[n / 8][e >> 1], x);
      }
#pragma unroll
    for (int kh = 0; kh < kHalves; ++kh) {
      half_max[kh][0] *= scale_log2;
      half_max[kh][1] *= scale_log2;
    }
    record(tile, half_max);
    float base[2], half_sum[kHalves][2];  // for record_mass
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int kh = 0; kh < kHalves; ++kh) tile_max = fmaxf(tile_max, half_max[kh][r]);
      tile_max = quad_max(tile_max);
      float base_exp;
      alpha[r] = step_row_max<D>(tile_max, row_max[r], base_exp);
      row_sum[r] *= alpha[r];
      if constexpr (kRecordMass) {
        base[r] = base_exp;
#pragma unroll
        for (int kh = 0; kh < kHalves; ++kh) half_sum[kh][r] = 0.f;
      }
#pragma unroll
      for (int n = 0; n < kS / 4; ++n) {
        s[4 * n + 2 * r] = exp2f(fmaf(s[4 * n + 2 * r], scale_log2, -base_exp));
        s[4 * n + 2 * r + 1] = exp2f(fmaf(s[4 * n + 2 * r + 1], scale_log2, -base_exp));
        if constexpr (kRecordMass)
          half_sum[n / 8][r] += s[4 * n + 2 * r] + s[4 * n + 2 * r + 1];
        else
          row_sum[r] += s[4 * n + 2 * r] + s[4 * n + 2 * r + 1];
      }
      if constexpr (kRecordMass) {
#pragma unroll
        for (int kh = 0; kh < kHalves; ++kh) row_sum[r] += half_sum[kh][r];
      }
    }
    if constexpr (kRecordMass) record_mass(tile, base, half_sum);
  }

  __device__ void pack() {
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) pa[kk][r] = pack2<T>(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
  }
  __device__ void rescale_and_pack(const float (&alpha)[2]) {
    // Only when a row of the warp has a new max (alpha != 1); the vote keeps the branch warp-uniform.
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[4 * n + e] *= alpha[e >> 1];
    }
    pack();
  }

  // Q from its tile into registers (load_q_fragments), before run(); the tile is free afterwards.
  __device__ void load_q(const T* q_tile) { load_q_fragments<T, D>(q_tile, warp, g, t, qa); }

  // The pipeline's steps for one item of n_tiles tiles whose tile `it` is the pipeline's tile first +
  // it (produce_kv's numbering) in stage (first + it) % kStages, Q already in registers (load_q);
  // only tile 0 may need masking (callers visit key blocks from the diagonal down). In order:
  // issue_first(first), wgmma_wait<0>, first_softmax(first), step(it) for it = 1 .. n_tiles - 1,
  // issue_last_pv(first + n_tiles - 1), wgmma_wait<0>, finish_last_pv. run() is exactly that; the
  // block-sparse kernel issues the next item's first S before the last P V, as step() does.
  __device__ void issue_first(const T* k_tiles, const KvBarriers<kStages>& bar, int tile) {
    const int stage = bar.stage(tile);
    mbarrier_wait(&bar.k_full[stage], bar.parity(tile));
    wgmma_fence();
    issue_qk(k_tiles + stage * Stage::kElems);
  }
  // After the wait for issue_first's S: a new item's running max and sum and its masked softmax;
  // first_softmax then packs P (no rescale: the first P V overwrites O). first_scores alone leaves P's
  // registers to a P V still in flight.
  template <class Record, class RecordMass>
  __device__ void first_scores(const KvBarriers<kStages>& bar, int tile, float scale_log2, const TileInfo& info,
                               int len, Record&& record, RecordMass&& record_mass) {
    fence_registers(s);
    release(&bar.k_empty[bar.stage(tile)]);
    reset_rows();
    float alpha[2];
    softmax<true>(scale_log2, info, len, alpha, record, record_mass);
  }
  template <class Record, class RecordMass>
  __device__ void first_softmax(const KvBarriers<kStages>& bar, int tile, float scale_log2, const TileInfo& info,
                                int len, Record&& record, RecordMass&& record_mass) {
    first_scores(bar, tile, scale_log2, info, len, record, record_mass);
    pack();
  }
  template <class Record, class RecordMass>
  __device__ void step(const T* k_tiles, const T* v_tiles, const KvBarriers<kStages>& bar, int first, int it,
                       float scale_log2, const TileInfo& info, int len, Record&& record, RecordMass&& record_mass) {
    issue_first(k_tiles, bar, first + it);
    finish_step<false>(v_tiles, bar, first, it, scale_log2, info, len, record, record_mass);
  }
  // step() after its S: issue_first(first + it), then code of the caller's that leaves s alone (the
  // block-sparse kernel writes the previous item's output there: kFence, as that read O since the
  // fence before S, which the P V here overwrites), then this.
  template <bool kFence, class Record, class RecordMass>
  __device__ void finish_step(const T* v_tiles, const KvBarriers<kStages>& bar, int first, int it, float scale_log2,
                              const TileInfo& info, int len, Record&& record, RecordMass&& record_mass) {
    float alpha[2];
    const int stage = bar.stage(first + it), prev = bar.stage(first + it - 1);
    mbarrier_wait(&bar.v_full[prev], bar.parity(first + it - 1));
    if constexpr (kFence) wgmma_fence();
    issue_pv(v_tiles + prev * Stage::kElems, it > 1);
    wgmma_wait<1>();  // S of tile `it` has landed; P V of tile it - 1 may still run
    fence_registers(s);
    release(&bar.k_empty[stage]);
    softmax<false>(scale_log2, info, len, alpha, record, record_mass);
    wgmma_wait<0>();
    fence_registers(acc);
    fence_registers(pa);
    release(&bar.v_empty[prev]);
    rescale_and_pack(alpha);
  }
  // P V of the item's last tile (`accumulate`: the item has more than one tile).
  __device__ void issue_last_pv(const T* v_tiles, const KvBarriers<kStages>& bar, int tile, bool accumulate) {
    const int stage = bar.stage(tile);
    mbarrier_wait(&bar.v_full[stage], bar.parity(tile));
    wgmma_fence();
    issue_pv(v_tiles + stage * Stage::kElems, accumulate);
  }
  // After the wait for issue_last_pv's product: O is final, P free, and the stage released (a
  // pipeline that runs on to the next item reuses it).
  __device__ void finish_last_pv(const KvBarriers<kStages>& bar, int tile) {
    fence_registers(acc);
    fence_registers(pa);
    release(&bar.v_empty[bar.stage(tile)]);
  }

  // The whole pipeline over n_tiles >= 1 tiles, the steps above in order.
  template <class Info, class Record, class RecordMass>
  __device__ void run(int n_tiles, const T* k_tiles, const T* v_tiles, const KvBarriers<kStages>& bar,
                      float scale_log2, int len, Info&& info, Record&& record, RecordMass&& record_mass,
                      int first = 0) {
    issue_first(k_tiles, bar, first);
    wgmma_wait<0>();
    first_softmax(bar, first, scale_log2, info(0), len, record, record_mass);
    for (int it = 1; it < n_tiles; ++it)
      step(k_tiles, v_tiles, bar, first, it, scale_log2, info(it), len, record, record_mass);
    issue_last_pv(v_tiles, bar, first + n_tiles - 1, n_tiles > 1);
    wgmma_wait<0>();
    finish_last_pv(bar, first + n_tiles - 1);
  }

  // A new item's running max and sum: nothing seen yet.
  __device__ void reset_rows() {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      row_max[r] = -INFINITY;
      row_sum[r] = 0.f;
    }
  }
  // O of a row with no key block: zeros (the store writes them and LSE -inf).
  __device__ void clear() {
#pragma unroll
    for (int e = 0; e < D / 2; ++e) acc[e] = 0.f;
    reset_rows();
  }

  // O and the LSE of rows qblock*64.. with the given row statistics (the running ones by default; the
  // block-sparse kernel keeps them aside once the next item's softmax has replaced them).
  // Predicated (store_rows): the block-sparse kernel writes O between a wgmma's issue and its wait.
  __device__ void store(const FlashParams<T>& p, int start, int qblock, int h, int len, const float (&kept_max)[2],
                        const float (&kept_sum)[2]) const {
    store_rows<T, D, true>(p, acc, kept_max, kept_sum, warp * 16 + g, t, start, qblock, h, len);
  }
  __device__ void store(const FlashParams<T>& p, int start, int qblock, int h, int len) const {
    store(p, start, qblock, h, len, row_max, row_sum);
  }
};

}  // namespace seer::cuda::detail
