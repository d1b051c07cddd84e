// The block-sparse kernel's K/V stream with its math taken out: how fast can its loads alone run?
//
// One thread block per multiprocessor runs P pipelines (the kernel has two: one per consumer) of S
// stages of a 64-key K tile and V tile each (d = 128, bf16: 32 KB a tile), filled by the kernel's
// own producer (produce_kv, TMA with the 128-byte swizzle and evict_last) and released by a
// consumer warp as soon as each tile lands. Blocks are drawn at random from one KV head of a
// [tokens, 8 heads, 128] K and V, every pipeline moving through the heads at the same pace, as the
// kernel's head-by-head work order does; `sequential` rows read consecutive blocks instead. K and V
// are laid out as the kernel takes them, [tokens, heads, d] (a tile: 64 rows of 256 bytes, 2 KB
// apart), or head-major, [heads, tokens, d] (a tile: 16 contiguous KB). The
// kernel at 32k, density 0.5 moves (32 heads x 65,664 tiles) x 32 KB in its time: set that rate, and
// the time per tile here, against the kernel's (bench/RESULTS.md, v23).
//
// Clusters of 2 or 4 thread blocks stream the same tiles, each 64 x 64 box read from L2 once and
// multicast to every block of the cluster: what query heads of one KV head could share. `union 0.5`
// rows are two query heads' rows drawn independently at density 0.5, streamed as their union, each
// tile multicast to the blocks whose rows keep it (kv_union_kernel). us/tile is per tile a pipeline
// uses (bench/RESULTS.md, v24). `items+Q/O` rows add the kernel's per-item Q load and O store to
// the stream, at its ratio at 32k, density 0.1 (kv_items_kernel; v25).
//
// A CMake target (bench/CMakeLists.txt; CI compiles it), carried by bench/gpu/build_for_device.sh
// as .devbin/kv_stream; run: ./kv_stream [tokens]
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cuda/device_buffer.h"
#include "cuda/flash_pipeline.cuh"

namespace {

using seer::cuda::detail::KvBarriers;
using seer::cuda::detail::KvStage;
using T = __nv_bfloat16;
constexpr int kD = 128;
constexpr int kKvHeads = 8;
using Stage = KvStage<kD, 64>;

__device__ __forceinline__ uint32_t mix(uint32_t x) {  // a 32-bit integer hash (lowbias32)
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Shared memory of kPipes pipelines of kStages K and V stages and kQTiles Q tiles, then kBarriers
// barrier words each.
template <int kPipes, int kStages, int kBarriers, int kQTiles = 0>
struct PipeSmem {
  static constexpr int kPipeBytes = (2 * kStages + kQTiles) * Stage::kElems * int(sizeof(T));
  static constexpr int kBytes = kPipes * (kPipeBytes + kBarriers * 8) + 1024;
  T* k_tiles;
  T* v_tiles;
  T* q_tiles;
  uint64_t* bars;
  __device__ static PipeSmem of(int pipe) {
    extern __shared__ unsigned char smem_raw[];
    const uintptr_t aligned = (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023);  // TMA's swizzle
    unsigned char* base = reinterpret_cast<unsigned char*>(aligned);
    T* const k_tiles = reinterpret_cast<T*>(base + pipe * kPipeBytes);
    return {k_tiles, k_tiles + kStages * Stage::kElems, k_tiles + 2 * kStages * Stage::kElems,
            reinterpret_cast<uint64_t*>(base + kPipes * kPipeBytes) + pipe * kBarriers};
  }
};

// Tile `it` of a multicast pipeline: its four 64 x 64 boxes (K's two column chunks, then V's) are
// dealt round-robin to the kCluster blocks of the cluster, each loading its boxes into every block.
// A stage is refilled once every block's consumer has released it, so each consumer arrives on the
// empty barrier of every block.
template <int kCluster, int kStages, class BlockAt>
__device__ void produce_kv_multicast(int n_tiles, const CUtensorMap* k_map, const CUtensorMap* v_map, int per_head,
                                    T* k_tiles, T* v_tiles, const KvBarriers<kStages>& bar, BlockAt&& block_at) {
  using namespace seer::cuda::detail;
  const uint32_t rank = cluster_ctarank();
  const uint64_t policy = l2_evict_last();
  constexpr uint16_t kEveryBlock = (1u << kCluster) - 1;
  // Every rank must load a box of every tile: one that loads none would pass its empty waits
  // unheard and put its expect_tx into a phase not yet due.
  static_assert(kCluster <= 2 * (kD / 64), "more blocks than boxes a tile");
#pragma unroll 1
  for (int it = 0; it < n_tiles; ++it) {
    const int head = it / per_head, block = block_at(it);
    const int stage = bar.stage(it);
    const uint32_t empty_parity = bar.parity(it) ^ 1u;
    for (int kv = 0; kv < 2; ++kv) {
      uint64_t* const full = kv == 0 ? &bar.k_full[stage] : &bar.v_full[stage];
      if (it >= kStages) mbarrier_wait(kv == 0 ? &bar.k_empty[stage] : &bar.v_empty[stage], empty_parity);
      mbarrier_expect_tx(full, Stage::kElems * int(sizeof(T)));  // what all blocks' boxes bring here
      T* const tiles = (kv == 0 ? k_tiles : v_tiles) + stage * Stage::kElems;
      for (int chunk = 0; chunk < kD / 64; ++chunk)
        if ((kv * (kD / 64) + chunk) % kCluster == int(rank))
          tma_load_3d_multicast(tiles + chunk * Stage::kChunkElems, kv == 0 ? k_map : v_map, full, chunk * 64, head,
                                block * 64, kEveryBlock, policy);
    }
  }
}

// A consumer warp's turn at pipeline tile `it`: it waits for the tile's K and V and, as soon as they
// land, releases both (lane 0) in every block of the cluster, whose multicasts refill the stage.
template <int kCluster, int kStages>
__device__ void take_tile(const seer::cuda::detail::KvBarriers<kStages>& bar, int it, int lane) {
  using namespace seer::cuda::detail;
  const int stage = bar.stage(it);
  mbarrier_wait(&bar.k_full[stage], bar.parity(it));
  mbarrier_wait(&bar.v_full[stage], bar.parity(it));
  if (lane != 0) return;
  if constexpr (kCluster == 1) {
    mbarrier_arrive(&bar.k_empty[stage]);
    mbarrier_arrive(&bar.v_empty[stage]);
  } else {
    for (int cta = 0; cta < kCluster; ++cta) {
      mbarrier_arrive_cluster(&bar.k_empty[stage], uint32_t(cta));
      mbarrier_arrive_cluster(&bar.v_empty[stage], uint32_t(cta));
    }
  }
}

// Warps 0 .. kPipes-1: producers (lane 0); warps kPipes .. 2 kPipes-1: their consumers. kCluster > 1:
// the blocks of a cluster stream the same tiles, each box loaded once by multicast (the pattern of
// query heads that share a KV head and a query block).
template <int kPipes, int kStages, int kCluster>
__global__ void __launch_bounds__(64 * kPipes) kv_stream_kernel(const __grid_constant__ CUtensorMap k_map,
                                                                const __grid_constant__ CUtensorMap v_map,
                                                                int tiles, int blocks, bool sequential) {
  using namespace seer::cuda::detail;
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  const int pipe = warp % kPipes;
  const auto smem = PipeSmem<kPipes, kStages, KvBarriers<kStages>::kCount>::of(pipe);
  T* const k_tiles = smem.k_tiles;
  T* const v_tiles = smem.v_tiles;
  const auto bar = KvBarriers<kStages>::at(smem.bars);
  if (warp < kPipes && lane == 0) {
    bar.init(kCluster);  // one consumer warp per block of the cluster
    fence_barrier_init();
  }
  // Multicast loads and remote arrivals reach the other blocks' barriers: all must be initialized.
  if constexpr (kCluster > 1)
    cluster_sync();
  else
    __syncthreads();
  // The thread blocks of a cluster draw the same key blocks.
  const uint32_t stream = blockIdx.x / kCluster * kPipes + pipe;
  // Every pipeline spends tiles / kKvHeads tiles on each KV head in turn.
  const int per_head = tiles / kKvHeads;
  // The key block of the pipeline's tile t (of KV head t / per_head).
  const auto block_at = [&](int t) {
    return sequential ? int((stream * 97u + uint32_t(t % per_head)) % uint32_t(blocks))
                      : int(mix(stream * 0x9e3779b9u ^ uint32_t(t)) % uint32_t(blocks));
  };
  if (warp < kPipes) {
    if (lane == 0) {
      if constexpr (kCluster == 1) {
        for (int head = 0; head < kKvHeads; ++head)
          produce_kv<T, kD, 64>(
              per_head, &k_map, &v_map, head, 0, k_tiles, v_tiles, bar,
              [&](int it, int) { return block_at(head * per_head + it); }, head * per_head);
      } else {
        produce_kv_multicast<kCluster>(kKvHeads * per_head, &k_map, &v_map, per_head, k_tiles, v_tiles, bar, block_at);
      }
    }
  } else {
    for (int it = 0; it < kKvHeads * per_head; ++it) take_tile<kCluster>(bar, it, lane);
  }
  // No block may leave while others' multicasts and arrivals can still reach its shared memory.
  if constexpr (kCluster > 1) {
    __syncwarp();
    cluster_sync();
  }
}

// The kernel's traffic at density 0.1 without its math (all but its LSE stores and mask reads, a
// few hundred bytes an item): each pipeline runs items of kItemTiles random K/V tiles (32k at 0.1:
// 1,592 tiles in 62 items a consumer, 25.7 an item), and per item also loads a Q tile (64 rows of
// one query head, 16 KB, evict_first, as the kernel does) and stores 16 KB to the item's O rows
// with streaming stores, as store_rows does (the Q tile's bytes in shared-memory order: what they
// hold does not matter). The kernel frees its Q tile once Q is in registers; here O is stored from
// the tile, so Q is double-buffered to load the next item's Q as early. Item g of the grid takes Q
// tile g modulo the tiles there are ([tokens, 32 heads, d]), re-read only about 160 items later:
// from HBM, as the kernel's are. us/tile is per K/V tile, Q and O included; landed/s and read/s
// count Q and O too.
constexpr int kItemTiles = 26;
constexpr int kItemsPerHead = 39;  // 8 heads x 39 items x 26 tiles = 8,112 tiles a pipeline
constexpr int kQHeads = 32;

template <int kPipes, int kStages>
__global__ void __launch_bounds__(64 * kPipes) kv_items_kernel(const __grid_constant__ CUtensorMap k_map,
                                                               const __grid_constant__ CUtensorMap v_map,
                                                               const __grid_constant__ CUtensorMap q_map, T* out,
                                                               int blocks) {
  using namespace seer::cuda::detail;
  using Barriers = KvBarriers<kStages>;
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  const int pipe = warp % kPipes;
  const auto smem = PipeSmem<kPipes, kStages, Barriers::kCount + 4, 2>::of(pipe);
  const auto bar = Barriers::at(smem.bars);
  uint64_t* const q_full = smem.bars + Barriers::kCount;  // [2]
  uint64_t* const q_empty = q_full + 2;                   // [2]
  if (warp < kPipes && lane == 0) {
    bar.init(1);
    for (int s = 0; s < 2; ++s) mbarrier_init(&q_full[s], 1), mbarrier_init(&q_empty[s], 1);
    fence_barrier_init();
  }
  __syncthreads();
  const uint32_t stream = blockIdx.x * kPipes + pipe;
  const int items = kKvHeads * kItemsPerHead;
  const int q_tiles = blocks * kQHeads;  // (query block, head) tiles of Q
  const auto q_tile_of = [&](int n) { return int((stream * uint32_t(items) + uint32_t(n)) % uint32_t(q_tiles)); };
  if (warp < kPipes) {
    if (lane == 0)
      for (int n = 0; n < items; ++n) {
        const int slot = n & 1, q_tile = q_tile_of(n);
        if (n >= 2) mbarrier_wait(&q_empty[slot], uint32_t((n >> 1) - 1) & 1u);
        mbarrier_expect_tx(&q_full[slot], Stage::kElems * int(sizeof(T)));
        for (int chunk = 0; chunk < kD / 64; ++chunk)
          tma_load_3d(smem.q_tiles + slot * Stage::kElems + chunk * Stage::kChunkElems, &q_map, &q_full[slot],
                      chunk * 64, q_tile % kQHeads, q_tile / kQHeads * 64, l2_evict_first());
        produce_kv<T, kD, 64>(
            kItemTiles, &k_map, &v_map, n / kItemsPerHead, 0, smem.k_tiles, smem.v_tiles, bar,
            [&](int it, int) { return int(mix(stream * 0x9e3779b9u ^ uint32_t(n * kItemTiles + it)) % uint32_t(blocks)); },
            n * kItemTiles);
      }
  } else {
    for (int n = 0; n < items; ++n) {
      const int slot = n & 1, q_tile = q_tile_of(n);
      mbarrier_wait(&q_full[slot], uint32_t(n >> 1) & 1u);
      for (int it = n * kItemTiles; it < (n + 1) * kItemTiles; ++it) take_tile<1>(bar, it, lane);
      // O: 64 rows of 256 bytes, two rows an instruction, from the Q tile's 16 KB.
      const uint4* src = reinterpret_cast<const uint4*>(smem.q_tiles + slot * Stage::kElems);
      T* const dst = out + (int64_t(q_tile / kQHeads) * 64 * kQHeads + q_tile % kQHeads) * kD;
      for (int r = 0; r < 32; ++r) {
        const int row = 2 * r + lane / 16;
        st_global_cs_v4_if(dst + int64_t(row) * kQHeads * kD + (lane % 16) * 8, src[r * 32 + lane], true);
      }
      __syncwarp();
      if (lane == 0) mbarrier_arrive(&q_empty[slot]);
    }
  }
}

// The union kernel's barriers, per pipeline: K and V full [kv][stage], empty [kv][destination][stage].
template <int kStages>
struct UnionBarriers {
  static constexpr int kCount = 2 * kStages + 2 * 2 * kStages;
  uint64_t* bars;
  __device__ uint64_t* full(int kv, int stage) const { return bars + kv * kStages + stage; }
  __device__ uint64_t* empty(int kv, int dest, int stage) const {
    return bars + 2 * kStages + (kv * 2 + dest) * kStages + stage;
  }
};

// A pair of query heads of one KV head at one query block, each with its own mask row: a cluster of
// two blocks streams the union of their rows, and each union tile goes by multicast to the blocks
// whose rows hold it (`need`: bit r for rank r), read from L2 once. Rows drawn independently at density
// 0.5 give a union of 0.75 of the blocks: a third of its tiles needed by both, a third by each alone.
// Union tile t goes to stage t % kStages in both blocks, so that a shared tile lands at the same place
// in both; a row's consecutive tiles may then share a stage, which a kernel would have to avoid
// (bench/RESULTS.md, v24). A consumer waits for its own tiles only: a block's full barrier of a
// stage completes once per tile delivered to it there, so its consumer counts its own tiles per
// stage for the parity. A stage of
// block q is refilled once q's consumer has released its last tile there: each producer keeps an
// empty barrier per destination block and stage (K and V apart), on which q's consumer arrives in
// both blocks, and waits on those of the blocks a tile goes to, counting its deliveries to each.
template <int kPipes, int kStages>
__global__ void __launch_bounds__(64 * kPipes) kv_union_kernel(const __grid_constant__ CUtensorMap k_map,
                                                               const __grid_constant__ CUtensorMap v_map,
                                                               int tiles, int blocks, unsigned long long* own_tiles) {
  using namespace seer::cuda::detail;
  using Barriers = UnionBarriers<kStages>;
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  const int pipe = warp % kPipes;
  const auto smem = PipeSmem<kPipes, kStages, Barriers::kCount>::of(pipe);
  T* const k_tiles = smem.k_tiles;
  T* const v_tiles = smem.v_tiles;
  const Barriers bar{smem.bars};
  if (warp < kPipes && lane == 0) {
    for (int b = 0; b < Barriers::kCount; ++b) mbarrier_init(bar.bars + b, 1);
    fence_barrier_init();
  }
  cluster_sync();
  const uint32_t rank = cluster_ctarank();
  const uint32_t stream = blockIdx.x / 2 * kPipes + pipe;
  const int per_head = tiles / kKvHeads;
  const auto block_at = [&](int t) { return int(mix(stream * 0x9e3779b9u ^ uint32_t(t)) % uint32_t(blocks)); };
  const auto need = [&](int t) { return 1u + mix(stream * 0x85ebca6bu + uint32_t(t) * 0xc2b2ae35u) % 3u; };
  if (warp < kPipes) {
    if (lane == 0) {
      const uint64_t policy = l2_evict_last();
      // Per destination block and stage (bit kStages·dest + stage): delivered there at least once,
      // and the parity of the deliveries (bits, not an array indexed at run time: local memory).
      uint32_t delivered = 0, delivery_parity = 0;
#pragma unroll 1
      for (int t = 0; t < tiles; ++t) {
        const uint32_t to = need(t);
        const int stage = t % kStages, head = t / per_head, block = block_at(t);
        for (int kv = 0; kv < 2; ++kv) {
          for (int dest = 0; dest < 2; ++dest)
            if ((to >> dest & 1u) && (delivered >> (kStages * dest + stage) & 1u))
              mbarrier_wait(bar.empty(kv, dest, stage), (delivery_parity >> (kStages * dest + stage) & 1u) ^ 1u);
          if (to >> rank & 1u) mbarrier_expect_tx(bar.full(kv, stage), Stage::kElems * int(sizeof(T)));
          T* const dst = (kv == 0 ? k_tiles : v_tiles) + stage * Stage::kElems;
          // Box `chunk` of K and of V from rank chunk % 2.
          for (int chunk = 0; chunk < kD / 64; ++chunk)
            if (chunk % 2 == int(rank))
              tma_load_3d_multicast(dst + chunk * Stage::kChunkElems, kv == 0 ? &k_map : &v_map, bar.full(kv, stage),
                                    chunk * 64, head, block * 64, uint16_t(to), policy);
        }
        for (int dest = 0; dest < 2; ++dest)
          if (to >> dest & 1u) {
            delivered |= 1u << (kStages * dest + stage);
            delivery_parity ^= 1u << (kStages * dest + stage);
          }
      }
    }
  } else {
    uint32_t own_parity = 0;  // bit s: parity of this block's tiles so far in stage s
    unsigned long long count = 0;
#pragma unroll 1
    for (int t = 0; t < tiles; ++t) {
      if (!(need(t) >> rank & 1u)) continue;
      const int stage = t % kStages;
      const uint32_t parity = own_parity >> stage & 1u;
      own_parity ^= 1u << stage;
      mbarrier_wait(bar.full(0, stage), parity);
      mbarrier_wait(bar.full(1, stage), parity);
      ++count;
      if (lane == 0)
        for (int kv = 0; kv < 2; ++kv)
          for (int cta = 0; cta < 2; ++cta) mbarrier_arrive_cluster(bar.empty(kv, int(rank), stage), uint32_t(cta));
    }
    if (lane == 0) atomicAdd(own_tiles, count);
  }
  __syncwarp();
  cluster_sync();
}

// A [tokens, heads, d] tensor (head-major: [heads, tokens, d]) in 64 x 64 boxes, as the kernels map K, V and Q.
CUtensorMap tensor_map_3d(const void* data, int heads, int tokens, bool head_major) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  SEER_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
  SEER_CHECK(fn && found == cudaDriverEntryPointSuccess, "cuTensorMapEncodeTiled is not available");
  CUtensorMap map;
  std::memset(&map, 0, sizeof(map));
  const cuuint64_t dims[3] = {kD, cuuint64_t(heads), cuuint64_t(tokens)};
  // Byte strides of dims 1 (heads) and 2 (tokens).
  const cuuint64_t row = kD * sizeof(T);
  const cuuint64_t strides[2] = {head_major ? cuuint64_t(tokens) * row : row,
                                 head_major ? row : cuuint64_t(heads) * row};
  const cuuint32_t box[3] = {64, 1, 64};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult status = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn)(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(data), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  SEER_CHECK(status == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed (", int(status), ")");
  return map;
}

constexpr int kLaunches = 6;  // the first a warm-up

// The best of the timed launches after the warm-up, in ms.
template <class Kernel, class... Args>
float time_launches(const cudaLaunchConfig_t& config, Kernel* kernel, Args... args) {
  cudaEvent_t start, stop;
  SEER_CUDA_CHECK(cudaEventCreate(&start));
  SEER_CUDA_CHECK(cudaEventCreate(&stop));
  float best = 1e30f;
  for (int rep = 0; rep < kLaunches; ++rep) {
    SEER_CUDA_CHECK(cudaEventRecord(start));
    SEER_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args...));
    SEER_CUDA_CHECK(cudaEventRecord(stop));
    SEER_CUDA_CHECK(cudaEventSynchronize(stop));
    SEER_CUDA_CHECK(cudaGetLastError());
    float ms = 0.f;
    SEER_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (rep > 0 && ms < best) best = ms;
  }
  SEER_CUDA_CHECK(cudaEventDestroy(start));
  SEER_CUDA_CHECK(cudaEventDestroy(stop));
  return best;
}

// A launch of one block per multiprocessor in clusters of `cluster` (as many as fit: a cluster
// needs that many free multiprocessors in one GPC).
template <class Kernel>
cudaLaunchConfig_t cluster_launch(Kernel* kernel, int sms, int cluster, int threads, int smem,
                                  cudaLaunchAttribute& attribute) {
  SEER_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  cudaLaunchConfig_t config{};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim = {unsigned(cluster), 1, 1};
  config.blockDim = dim3(unsigned(threads));
  config.dynamicSmemBytes = size_t(smem);
  config.attrs = &attribute;
  config.numAttrs = 1;
  int clusters = sms / cluster;
  if (cluster > 1) {
    config.gridDim = dim3(unsigned(clusters * cluster));
    SEER_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
    clusters = std::min(clusters, sms / cluster);
  }
  config.gridDim = dim3(unsigned(clusters * cluster));
  return config;
}

constexpr int kTilesPerPipe = 8 * 1024;  // a multiple of kKvHeads: 256 MB a pipeline, some 70 GB in all
static_assert(kTilesPerPipe % kKvHeads == 0);

// landed: bytes into shared memory per second; read: from L2 (a multicast box lands in several
// blocks); us/tile: per pipeline and tile it consumes, the kernel's per-consumer figure.
void print_row(const char* layout, const char* blocks, int pipes, int stages, int cluster, int grid, float ms,
               double landed, double read, double consumed_per_pipe) {
  std::printf("%-12s %-10s %5d %6d %7d %6d %8.3f %9.2f %8.2f %10.3f\n", layout, blocks, pipes, stages, cluster, grid,
              ms, landed / (ms * 1e-3) / 1e12, read / (ms * 1e-3) / 1e12, ms * 1e3 / consumed_per_pipe);
}

template <int kPipes, int kStages, int kCluster = 1>
void run(const CUtensorMap& k_map, const CUtensorMap& v_map, int sms, int blocks, bool sequential,
         const char* layout) {
  auto* kernel = kv_stream_kernel<kPipes, kStages, kCluster>;
  cudaLaunchAttribute attribute{};
  const cudaLaunchConfig_t config =
      cluster_launch(kernel, sms, kCluster, 64 * kPipes, PipeSmem<kPipes, kStages, KvBarriers<kStages>::kCount>::kBytes,
                     attribute);
  const int grid = int(config.gridDim.x);
  const float ms = time_launches(config, kernel, k_map, v_map, kTilesPerPipe, blocks, sequential);
  const double landed = double(grid) * kPipes * kTilesPerPipe * 2.0 * Stage::kElems * sizeof(T);
  print_row(layout, sequential ? "sequential" : "random", kPipes, kStages, kCluster, grid, ms, landed,
            landed / kCluster, kTilesPerPipe);
}

// Two query heads' rows at density 0.5 through multicast of their union (kv_union_kernel).
template <int kPipes, int kStages>
void run_union(const CUtensorMap& k_map, const CUtensorMap& v_map, int sms, int blocks, const char* layout) {
  auto* kernel = kv_union_kernel<kPipes, kStages>;
  constexpr int kSmem = PipeSmem<kPipes, kStages, UnionBarriers<kStages>::kCount>::kBytes;
  cudaLaunchAttribute attribute{};
  const cudaLaunchConfig_t config = cluster_launch(kernel, sms, 2, 64 * kPipes, kSmem, attribute);
  const int grid = int(config.gridDim.x);
  const seer::cuda::DeviceBuffer<unsigned long long> own(1);
  SEER_CUDA_CHECK(cudaMemset(own.data(), 0, sizeof(unsigned long long)));
  const float ms = time_launches(config, kernel, k_map, v_map, kTilesPerPipe, blocks, own.data());
  unsigned long long own_tiles = 0;  // summed over the launches and every consumer
  SEER_CUDA_CHECK(cudaMemcpy(&own_tiles, own.data(), sizeof own_tiles, cudaMemcpyDeviceToHost));
  const double consumed_per_pipe = double(own_tiles) / kLaunches / (double(grid) * kPipes);
  const double tile_bytes = 2.0 * Stage::kElems * sizeof(T);
  print_row(layout, "union 0.5", kPipes, kStages, 2, grid, ms, consumed_per_pipe * grid * kPipes * tile_bytes,
            double(grid / 2) * kPipes * kTilesPerPipe * tile_bytes, consumed_per_pipe);
}

// K/V tiles with the kernel's Q and O traffic per item (kv_items_kernel).
template <int kPipes, int kStages>
void run_items(const CUtensorMap& k_map, const CUtensorMap& v_map, int sms, int tokens, const char* layout) {
  auto* kernel = kv_items_kernel<kPipes, kStages>;
  constexpr int kSmem = PipeSmem<kPipes, kStages, KvBarriers<kStages>::kCount + 4, 2>::kBytes;
  const size_t q_elems = size_t(tokens) * kQHeads * kD;
  const seer::cuda::DeviceBuffer<T> q(q_elems), out(q_elems);
  SEER_CUDA_CHECK(cudaMemset(q.data(), 0, q_elems * sizeof(T)));
  const CUtensorMap q_map = tensor_map_3d(q.data(), kQHeads, tokens, false);
  cudaLaunchAttribute attribute{};
  const cudaLaunchConfig_t config = cluster_launch(kernel, sms, 1, 64 * kPipes, kSmem, attribute);
  const int grid = int(config.gridDim.x);
  const float ms = time_launches(config, kernel, k_map, v_map, q_map, out.data(), tokens / 64);
  constexpr int kTiles = kKvHeads * kItemsPerHead * kItemTiles;
  const double kv_bytes = 2.0 * Stage::kElems * sizeof(T);       // a K and a V tile
  const double q_and_o_bytes = 2.0 * Stage::kElems * sizeof(T);  // a Q tile in, an O tile out (64 x 128 each)
  const double bytes = double(grid) * kPipes * (kTiles * kv_bytes + kKvHeads * kItemsPerHead * q_and_o_bytes);
  print_row(layout, "items+Q/O", kPipes, kStages, 1, grid, ms, bytes, bytes, kTiles);
}

void stream(int tokens) {
  const int sms = seer::cuda::sm_count();
  const size_t elems = size_t(tokens) * kKvHeads * kD;
  const seer::cuda::DeviceBuffer<T> k_buffer(elems), v_buffer(elems);
  T* const k = k_buffer.data();
  T* const v = v_buffer.data();
  SEER_CUDA_CHECK(cudaMemset(k, 0, elems * sizeof(T)));
  SEER_CUDA_CHECK(cudaMemset(v, 0, elems * sizeof(T)));
  std::printf("K/V stream, %d tokens, %d KV heads, d = %d, up to one thread block per SM (%d)\n", tokens, kKvHeads,
              kD, sms);
  std::printf("%-12s %-10s %5s %6s %7s %6s %8s %9s %8s %10s\n", "layout", "blocks", "pipes", "stages", "cluster",
              "grid", "ms", "landed/s", "read/s", "us/tile");
  for (const bool head_major : {false, true}) {
    const CUtensorMap k_map = tensor_map_3d(k, kKvHeads, tokens, head_major),
                      v_map = tensor_map_3d(v, kKvHeads, tokens, head_major);
    const char* layout = head_major ? "head-major" : "token-major";
    for (const bool sequential : {false, true}) {
      run<2, 3>(k_map, v_map, sms, tokens / 64, sequential, layout);  // the block-sparse kernel's until v22
      run<2, 2>(k_map, v_map, sms, tokens / 64, sequential, layout);  // since v23
      run<1, 6>(k_map, v_map, sms, tokens / 64, sequential, layout);
      if (head_major) continue;
      // Query heads of one KV head sharing its blocks through TMA multicast (issue 5, density 0.5).
      run<2, 2, 2>(k_map, v_map, sms, tokens / 64, sequential, layout);
      run<2, 3, 2>(k_map, v_map, sms, tokens / 64, sequential, layout);
      run<2, 2, 4>(k_map, v_map, sms, tokens / 64, sequential, layout);
      if (sequential) continue;
      run_union<2, 2>(k_map, v_map, sms, tokens / 64, layout);
      run_union<2, 3>(k_map, v_map, sms, tokens / 64, layout);
      run_items<2, 2>(k_map, v_map, sms, tokens, layout);  // the kernel's geometry at 32k, 0.1, Q and O included
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int tokens = argc > 1 ? std::atoi(argv[1]) : 32768;
  if (tokens < 64 || tokens % 64 != 0) {
    std::fprintf(stderr, "usage: kv_stream [tokens, a multiple of 64]\n");
    return 2;
  }
  try {
    stream(tokens);
  } catch (const seer::Error& e) {
    std::fprintf(stderr, "kv_stream: %s\n", e.what());
    return 1;
  }
  return 0;
}
