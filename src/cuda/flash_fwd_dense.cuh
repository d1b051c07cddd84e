// FlashAttention forward on Hopper with warp specialization (the FlashAttention-3 design), for the
// dense and ground-truth variants. One thread block = three warpgroups on 128 query rows of one
// head: a producer warp issues every TMA load (Q once, then K and V tiles of 128 keys through a
// pipeline of full/empty mbarriers, kDenseStages deep) and gives its registers to the two consumer
// warpgroups, each of which owns 64 query rows (one 64-row query block) and shares every K/V tile.
//
// Per consumer and key tile n, visited from the diagonal tile down to tile 0 (only the first needs
// the causal mask): S_n = Q K_n^T (wgmma, Q from registers, K from shared memory) is issued, then
// O += P_{n-1} V_{n-1} (P from registers); the softmax of S_n runs while that second product is in
// flight, and O is rescaled once it lands. The online softmax works in base 2 with log2(e)/sqrt(d)
// folded into the scale. The consumer is written as lambdas over kernel-local arrays, and the
// warpgroup index is left thread-derived: written as a struct (FlashConsumer) or with a warp-uniform
// index, ptxas moves the descriptor arithmetic to the uniform datapath and the kernel runs 10% slower
// (bench/RESULTS.md, v5). The ground-truth variant measured the other way round and uses FlashConsumer.
//
// GroundTruth also records each row's max score per 64-key block (the two halves of a 128-key tile)
// in the scratch; ground_truth_reduce_kernel turns them into the block map once the forward is done.
#pragma once
#include "cuda/flash_pipeline.cuh"

namespace seer::cuda::detail {

constexpr int kDenseRows = 128;   // query rows per thread block: two consumer warpgroups of 64
constexpr int kDenseKeys = 128;   // keys per K/V tile: two 64-key blocks
constexpr int kDenseThreads = 384;

// K/V pipeline depth: a d = 64 tile is half the work of a d = 128 one for the same load latency, so
// the d = 64 dense kernel keeps 4 tiles in flight (+3-5%; bench/RESULTS.md). Measured and left at
// 2: d = 128 dense with 3 stages (no gain) and the d = 64 ground truth with 4 (3% slower).
template <int D, Variant V>
constexpr int kDenseStages = D == 64 && V == Variant::Dense ? 4 : 2;

template <int D, int kStages>
struct DenseSmem {
  using Stage = KvStage<D, kDenseKeys>;
  static constexpr int kBox = Stage::kBox;  // one TMA box: [64 tokens][64 columns], swizzled
  static constexpr int kQElems = 64 * D;    // one consumer's Q: D/64 boxes
  static constexpr int kKvElems = Stage::kElems;
  static constexpr int kChunkElems = Stage::kChunkElems;
  static constexpr int kTileBytes = 2 * (2 * kQElems + 2 * kStages * kKvElems);  // Q[2], K[stages], V[stages]
  static constexpr int kBarrierBytes = kStages > 2 ? 256 : 128;
  static_assert((KvBarriers<kStages>::kCount + 1) * 8 <= kBarrierBytes, "K/V barriers and Q's");
  static constexpr int kBytes = kTileBytes + kBarrierBytes + 1024;  // + alignment of the tiles
  static_assert(kBytes <= kMaxSharedBytes, "shared memory of one thread block on sm_90");
};

// kHeadsFastest: the grid is (head, query tile), else (query tile, head).
template <typename T, int D, Variant V, bool kHeadsFastest>
__global__ void __launch_bounds__(kDenseThreads, 1) flash_fwd_dense_kernel(const __grid_constant__ CUtensorMap q_map,
                                                                   const __grid_constant__ CUtensorMap k_map,
                                                                   const __grid_constant__ CUtensorMap v_map,
                                                                   const FlashParams<T> p) {
  static_assert(V != Variant::Sparse, "the block-sparse forward is flash_fwd_sparse_kernel");
  constexpr int kStages = kDenseStages<D, V>;
  using Smem = DenseSmem<D, kStages>;
  using Kv = KvBarriers<kStages>;
  constexpr int kChunks = D / 64;
  extern __shared__ unsigned char smem_raw[];
  // TMA's 128-byte swizzle and wgmma's descriptors both assume 1024-byte-aligned tiles.
  unsigned char* base = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  T* const q_tiles = reinterpret_cast<T*>(base);  // [2 consumers][D/64 boxes]
  T* const k_tiles = q_tiles + 2 * Smem::kQElems;  // [kStages][D/64 chunks][128 keys][64]
  T* const v_tiles = k_tiles + kStages * Smem::kKvElems;
  uint64_t* const bars = reinterpret_cast<uint64_t*>(base + Smem::kTileBytes);
  uint64_t* const q_full = bars + Kv::kCount;
  const Kv kv = Kv::at(bars);

  const int2 item = p.work[kHeadsFastest ? blockIdx.y : blockIdx.x];
  const int seq = item.x, tile = item.y, h = int(kHeadsFastest ? blockIdx.x : blockIdx.y);
  const int start = p.seq_start[seq], len = p.seq_len[seq];
  const int nb = (len + kTile - 1) / kTile;
  const int n_tiles = tile + 1;  // key tiles 0..tile cover every key up to the block's last row
  // Thread-derived for the dense consumer, warp-uniform (a shuffle from lane 0) for the ground truth's.
  const int warpgroup =
      is_ground_truth(V) ? __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0) : int(threadIdx.x / 128);

  if (threadIdx.x == 0) {
    mbarrier_init(q_full, 1);
    kv.init(8);  // one arrival per consumer warp
    fence_barrier_init();
  }
  __syncthreads();

  if (warpgroup == 0) {
    // Producer: Q once, then key tiles from the diagonal (tile `tile`) down to 0.
    setmaxnreg_dec<24>();
    if (threadIdx.x == 0) {
      mbarrier_expect_tx(q_full, 2 * Smem::kQElems * int(sizeof(T)));
      for (int w = 0; w < 2; ++w)
        for (int c = 0; c < kChunks; ++c)
          tma_load_3d(q_tiles + w * Smem::kQElems + c * Smem::kBox, &q_map, q_full, c * 64, h,
                      start + tile * kDenseRows + w * kTile, l2_evict_first());
      produce_kv<T, D, kDenseKeys>(n_tiles, &k_map, &v_map, h / p.group, start, k_tiles, v_tiles, kv,
                                [&](int it, int half) { return 2 * (tile - it) + half; });
    }
    return;
  }

  // Consumers: warpgroup 1 + w takes query block 2 * tile + w.
  setmaxnreg_inc<240>();
  const int w = warpgroup - 1;
  const int qblock = 2 * tile + w;
  if constexpr (is_ground_truth(V)) {
    FlashConsumer<T, D, kDenseKeys, kStages> consumer(threadIdx.x - 128 * warpgroup, w * kTile);
    const int64_t scratch_base = p.seq_scratch_offset[seq] + int64_t(h) * nb * len;
    const auto info = [&](int it) {
      const int n = tile - it;
      return TileInfo{n * kDenseKeys, 2 * n};
    };
    // Each row's max score (GroundTruth) or log-sum-exp (GroundTruthMass) per 64-key block j <=
    // qblock goes to the scratch. A quad's four threads hold parts of rows g and g + 8 of both 64-key
    // halves: a reduce-scatter over the quad (3 shuffles instead of a quad reduction per value: 8)
    // leaves thread t the max or sum of row half t & 1 in key half t >> 1, and every thread stores
    // one value (v11).
    const bool odd_row = consumer.t & 1, odd_key = consumer.t >> 1;  // selects, not indices: registers
    const auto quad_scatter = [&](const float (&v)[2][2], auto&& op) {
      float pair[2];  // key halves 0 and 1 of this thread's row half, over threads t and t ^ 1
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const float keep = odd_row ? v[k][1] : v[k][0];
        const float give = odd_row ? v[k][0] : v[k][1];  // what thread t ^ 1 keeps
        pair[k] = op(keep, __shfl_xor_sync(0xffffffffu, give, 1));
      }
      const float keep = odd_key ? pair[1] : pair[0], give = odd_key ? pair[0] : pair[1];
      return op(keep, __shfl_xor_sync(0xffffffffu, give, 2));
    };
    const auto store_record = [&](const TileInfo& ti, float x) {
      const int row = qblock * kTile + consumer.warp * 16 + consumer.g + 8 * int(odd_row);
      const int j = ti.first_block + int(odd_key);
      if (row < len && j <= qblock) p.scratch[scratch_base + int64_t(j) * len + row] = x;
    };
    const auto record_max = [&](const TileInfo& ti, const float (&half_max)[2][2]) {
      store_record(ti, quad_scatter(half_max, [](float a, float b) { return fmaxf(a, b); }));
    };
    // The block's base-2 log-sum-exp: the row's running max after this tile (the exponents' base,
    // which may lag the max by kRescaleSlack) plus log2 of the block's sum of
    // 2^(s·scale - base) (log2 0 = -inf: a block the row cannot see).
    const auto record_mass = [&](const TileInfo& ti, const float (&base)[2], const float (&half_sum)[2][2]) {
      const float sum = quad_scatter(half_sum, [](float a, float b) { return a + b; });
      store_record(ti, (odd_row ? base[1] : base[0]) + __log2f(sum));
    };
    mbarrier_wait(q_full, 0);
    consumer.load_q(q_tiles + w * Smem::kQElems);
    if constexpr (V == Variant::GroundTruth)
      consumer.run(n_tiles, k_tiles, v_tiles, kv, p.scale_log2, len, info, record_max, NoRecord{});
    else
      consumer.run(n_tiles, k_tiles, v_tiles, kv, p.scale_log2, len, info, NoRecord{}, record_mass);
    consumer.store(p, start, qblock, h, len);
    return;
  }
  const int tid = threadIdx.x - 128 * warpgroup;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const T* const q_tile = q_tiles + w * Smem::kQElems;

  float row_max[2] = {-INFINITY, -INFINITY};  // rows 16*warp + g and + 8 of the block, base-2 scores
  float row_sum[2] = {0.f, 0.f};              // this thread's part of the row sums
  float acc[D / 2];                           // O: wgmma m64nD accumulator layout
#pragma unroll
  for (int e = 0; e < D / 2; ++e) acc[e] = 0.f;
  float s[64];          // S: m64n128 accumulators; s[4n + e] is row 16*warp + g + 8*(e >> 1), key 8n + 2t + (e & 1)
  uint32_t pa[8][4];    // P as wgmma's register A operand, 16 keys per k-step
  uint32_t qa[D / 16][4];  // Q in the same layout, 16 columns per k-step (load_q_fragments)

  const auto issue_qk = [&](int stage) {
    const T* k_tile = k_tiles + stage * Smem::kKvElems;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int chunk = kk / 4, step = kk % 4;  // +32 bytes per 16 columns inside a 64-column chunk
      wgmma_rs<T, kDenseKeys, BMajor::K>(s, qa[kk], desc_k_major(k_tile + chunk * Smem::kChunkElems + step * 16),
                                         kk > 0);
    }
    wgmma_commit();
  };
  const auto issue_pv = [&](int stage) {
    const T* v_tile = v_tiles + stage * Smem::kKvElems;  // MN-major: +2048 bytes per 16 keys
#pragma unroll
    for (int kk = 0; kk < 8; ++kk)
      wgmma_rs<T, D, BMajor::MN>(acc, pa[kk], desc_mn_major(v_tile + kk * 16 * 64, Smem::kChunkElems * int(sizeof(T))),
                                 true);
    wgmma_commit();
  };
  const auto release = [&](uint64_t* bar) {
    if (lane == 0) mbarrier_arrive(bar);
  };
  // Online softmax of key tile n held in s: mask (diagonal tile only), update the running max
  // (step_row_max: at d = 128 it may lag the true max by kRescaleSlack) and sum, s <- 2^(s·scale -
  // max). Returns the factor by which O must be rescaled. The max is taken over the raw scores and
  // scaled once (the scale is positive), and the scale goes into the exponent's FFMA: one
  // instruction per score instead of a multiply and a subtract (+15% with the conditional rescale
  // below; bench/RESULTS.md, v8).
  const auto softmax = [&](int n, bool diagonal, float (&alpha)[2]) {
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nn = 0; nn < 16; ++nn)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[4 * nn + e];
        if (diagonal) {
          const int key = nn * 8 + 2 * t + (e & 1), row = w * kTile + warp * 16 + g + (e >> 1) * 8;
          if (key > row || n * kDenseKeys + key >= len) x = -INFINITY;
        }
        s[4 * nn + e] = x;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float base_exp;
      alpha[r] = step_row_max<D>(quad_max(tile_max[r]) * p.scale_log2, row_max[r], base_exp);
      row_sum[r] *= alpha[r];
#pragma unroll
      for (int nn = 0; nn < 16; ++nn) {
        s[4 * nn + 2 * r] = exp2f(fmaf(s[4 * nn + 2 * r], p.scale_log2, -base_exp));
        s[4 * nn + 2 * r + 1] = exp2f(fmaf(s[4 * nn + 2 * r + 1], p.scale_log2, -base_exp));
        row_sum[r] += s[4 * nn + 2 * r] + s[4 * nn + 2 * r + 1];
      }
    }
  };
  const auto rescale_and_pack = [&](const float (&alpha)[2]) {
    // O is rescaled only when some row of the warp has a new max (alpha != 1): most tiles away from
    // the diagonal change no row's max. The vote keeps the branch warp-uniform.
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int nn = 0; nn < D / 8; ++nn)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[4 * nn + e] *= alpha[e >> 1];
    }
#pragma unroll
    for (int kk = 0; kk < 8; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) pa[kk][r] = pack2<T>(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
  };

  float alpha[2];
  mbarrier_wait(q_full, 0);
  load_q_fragments<T, D>(q_tile, warp, g, t, qa);
  mbarrier_wait(&kv.k_full[0], 0);
  wgmma_fence();
  issue_qk(0);
  wgmma_wait<0>();
  fence_registers(s);
  release(&kv.k_empty[0]);
  softmax(tile, true, alpha);
  rescale_and_pack(alpha);
  for (int it = 1; it < n_tiles; ++it) {
    const int stage = Kv::stage(it), prev = Kv::stage(it - 1);
    mbarrier_wait(&kv.k_full[stage], Kv::parity(it));
    wgmma_fence();
    issue_qk(stage);
    mbarrier_wait(&kv.v_full[prev], Kv::parity(it - 1));
    issue_pv(prev);
    wgmma_wait<1>();  // S_n has landed; P_{n+1} V_{n+1} may still run
    fence_registers(s);
    release(&kv.k_empty[stage]);
    softmax(tile - it, false, alpha);
    wgmma_wait<0>();
    fence_registers(acc);
    fence_registers(pa);
    release(&kv.v_empty[prev]);
    rescale_and_pack(alpha);
  }
  {
    const int last = Kv::stage(n_tiles - 1);
    mbarrier_wait(&kv.v_full[last], Kv::parity(n_tiles - 1));
    wgmma_fence();
    issue_pv(last);
    wgmma_wait<0>();
    fence_registers(acc);
    fence_registers(pa);
  }

  store_rows<T, D, false>(p, acc, row_max, row_sum, warp * 16 + g, t, start, qblock, h, len);
}

}  // namespace seer::cuda::detail
