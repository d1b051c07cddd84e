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
// A CMake target (bench/CMakeLists.txt; CI compiles it), carried by bench/gpu/build_for_device.sh
// as .devbin/kv_stream; run: ./kv_stream [tokens]
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

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

template <int kPipes, int kStages>
constexpr int smem_bytes() {
  return kPipes * (2 * kStages * Stage::kElems * 2 + KvBarriers<kStages>::kCount * 8) + 1024;
}

// Warps 0 .. kPipes-1: producers (lane 0); warps kPipes .. 2 kPipes-1: their consumers.
template <int kPipes, int kStages>
__global__ void __launch_bounds__(64 * kPipes) kv_stream_kernel(const __grid_constant__ CUtensorMap k_map,
                                                                const __grid_constant__ CUtensorMap v_map,
                                                                int tiles, int blocks, bool sequential) {
  extern __shared__ unsigned char smem_raw[];
  const uintptr_t aligned = (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023);  // TMA's swizzle
  unsigned char* base = reinterpret_cast<unsigned char*>(aligned);
  constexpr int kPipeBytes = 2 * kStages * Stage::kElems * 2;
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  const int pipe = warp % kPipes;
  T* const k_tiles = reinterpret_cast<T*>(base + pipe * kPipeBytes);
  T* const v_tiles = k_tiles + kStages * Stage::kElems;
  uint64_t* const bars = reinterpret_cast<uint64_t*>(base + kPipes * kPipeBytes) + pipe * KvBarriers<kStages>::kCount;
  const auto bar = KvBarriers<kStages>::at(bars);
  if (warp < kPipes && lane == 0) {
    bar.init(1);
    seer::cuda::detail::fence_barrier_init();
  }
  __syncthreads();
  const uint32_t stream = blockIdx.x * kPipes + pipe;
  // Every pipeline spends tiles / kKvHeads tiles on each KV head in turn.
  const int per_head = tiles / kKvHeads;
  if (warp < kPipes) {
    if (lane != 0) return;
    for (int head = 0; head < kKvHeads; ++head)
      seer::cuda::detail::produce_kv<T, kD, 64>(
          per_head, &k_map, &v_map, head, 0, k_tiles, v_tiles, bar,
          [&](int it, int) {
            return sequential ? int((stream * 97u + uint32_t(it)) % uint32_t(blocks))
                              : int(mix(stream * 0x9e3779b9u ^ uint32_t(head * per_head + it)) % uint32_t(blocks));
          },
          head * per_head);
  } else {
    for (int it = 0; it < kKvHeads * per_head; ++it) {
      const int stage = bar.stage(it);
      seer::cuda::detail::mbarrier_wait(&bar.k_full[stage], bar.parity(it));
      seer::cuda::detail::mbarrier_wait(&bar.v_full[stage], bar.parity(it));
      if (lane == 0) {
        seer::cuda::detail::mbarrier_arrive(&bar.k_empty[stage]);
        seer::cuda::detail::mbarrier_arrive(&bar.v_empty[stage]);
      }
    }
  }
}

CUtensorMap kv_map(const void* data, int tokens, bool head_major) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  SEER_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
  SEER_CHECK(fn && found == cudaDriverEntryPointSuccess, "cuTensorMapEncodeTiled is not available");
  CUtensorMap map;
  std::memset(&map, 0, sizeof(map));
  const cuuint64_t dims[3] = {kD, kKvHeads, cuuint64_t(tokens)};
  // Byte strides of dims 1 (heads) and 2 (tokens).
  const cuuint64_t row = kD * sizeof(T);
  const cuuint64_t strides[2] = {head_major ? cuuint64_t(tokens) * row : row,
                                 head_major ? row : cuuint64_t(kKvHeads) * row};
  const cuuint32_t box[3] = {64, 1, 64};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult status = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn)(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(data), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  SEER_CHECK(status == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed (", int(status), ")");
  return map;
}

template <int kPipes, int kStages>
void run(const CUtensorMap& k_map, const CUtensorMap& v_map, int sms, int blocks, bool sequential,
         const char* layout) {
  constexpr int kBytes = smem_bytes<kPipes, kStages>();
  auto* kernel = kv_stream_kernel<kPipes, kStages>;
  SEER_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  const int tiles = 8 * 1024;  // per pipeline (a multiple of kKvHeads): 256 MB a pipeline, some 70 GB in all
  static_assert(8 * 1024 % kKvHeads == 0);
  cudaEvent_t start, stop;
  SEER_CUDA_CHECK(cudaEventCreate(&start));
  SEER_CUDA_CHECK(cudaEventCreate(&stop));
  float best = 1e30f;
  for (int rep = 0; rep < 6; ++rep) {  // the first is a warm-up
    SEER_CUDA_CHECK(cudaEventRecord(start));
    kernel<<<sms, 64 * kPipes, kBytes>>>(k_map, v_map, tiles, blocks, sequential);
    SEER_CUDA_CHECK(cudaEventRecord(stop));
    SEER_CUDA_CHECK(cudaEventSynchronize(stop));
    SEER_CUDA_CHECK(cudaGetLastError());
    float ms = 0.f;
    SEER_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (rep > 0 && ms < best) best = ms;
  }
  const double bytes = double(sms) * kPipes * tiles * 2.0 * Stage::kElems * sizeof(T);
  std::printf("%-12s %-10s %5d %6d %8.3f %8.2f %10.3f\n", layout, sequential ? "sequential" : "random", kPipes,
              kStages, best,
              bytes / (best * 1e-3) / 1e12, best * 1e3 / tiles);
  SEER_CUDA_CHECK(cudaEventDestroy(start));
  SEER_CUDA_CHECK(cudaEventDestroy(stop));
}

void stream(int tokens) {
  const int sms = seer::cuda::sm_count();
  const size_t elems = size_t(tokens) * kKvHeads * kD;
  const seer::cuda::DeviceBuffer<T> k_buffer(elems), v_buffer(elems);
  T* const k = k_buffer.data();
  T* const v = v_buffer.data();
  SEER_CUDA_CHECK(cudaMemset(k, 0, elems * sizeof(T)));
  SEER_CUDA_CHECK(cudaMemset(v, 0, elems * sizeof(T)));
  std::printf("K/V stream, %d tokens, %d KV heads, d = %d, %d thread blocks (one per SM)\n", tokens, kKvHeads, kD, sms);
  // us/tile: per pipeline, the kernel's per-consumer figure when there are two.
  std::printf("%-12s %-10s %5s %6s %8s %8s %10s\n", "layout", "blocks", "pipes", "stages", "ms", "TB/s", "us/tile");
  for (const bool head_major : {false, true}) {
    const CUtensorMap k_map = kv_map(k, tokens, head_major), v_map = kv_map(v, tokens, head_major);
    const char* layout = head_major ? "head-major" : "token-major";
    for (const bool sequential : {false, true}) {
      run<2, 3>(k_map, v_map, sms, tokens / 64, sequential, layout);  // the block-sparse kernel's until v22
      run<2, 2>(k_map, v_map, sms, tokens / 64, sequential, layout);  // since v23
      run<1, 6>(k_map, v_map, sms, tokens / 64, sequential, layout);
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
