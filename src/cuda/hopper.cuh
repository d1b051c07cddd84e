// Hopper (sm_90a) primitives: TMA tile loads completing on mbarriers, and warpgroup MMA (wgmma)
// with shared-memory matrix descriptors. Shared tiles are [rows][64] 16-bit elements (128-byte
// rows) in the 128-byte swizzle that both TMA (CU_TENSOR_MAP_SWIZZLE_128B) and wgmma apply by
// address, so every tile starts on a 1024-byte boundary.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace seer::cuda::detail {

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
// A 32-bit shared-memory load at a shared-window address (ld.shared, not a generic load).
__device__ __forceinline__ uint32_t lds_u32(uint32_t address) {
  uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(address));
  return v;
}

// A 32-bit shared-memory store (st.shared), ordered with the asm around it as lds_u32 is.
__device__ __forceinline__ void sts_u32(uint32_t address, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(address), "r"(v) : "memory");
}

// ---- mbarrier --------------------------------------------------------------------------------
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
__device__ __forceinline__ void fence_barrier_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::); }
__device__ __forceinline__ void mbarrier_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes));
}
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t phase) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_loop:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_loop;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(phase));
}

// Plain arrival (no transaction bytes): a consumer saying it is done with a stage.
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}

// ---- thread-block clusters ---------------------------------------------------------------------
// This thread block's rank in its cluster.
__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}
// Every thread of every thread block of the cluster (aligned: the whole warp, converged).
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// Plain arrival on the barrier at `bar`'s offset in the shared memory of cluster rank `cta` (this
// block's own included): a consumer releasing a stage that another block's multicast refills. Its
// default release.cta order suffices there, the stage's reads being done; .release.cluster put a
// MEMBAR.ALL.GPU before every arrival: the multicast probe (bench/gpu/kv_stream.cu) ran 3x slower.
__device__ __forceinline__ void mbarrier_arrive_cluster(uint64_t* bar, uint32_t cta) {
  asm volatile(
      "{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n" ::"r"(smem_u32(bar)),
      "r"(cta)
      : "memory");
}

// ---- warp specialization ------------------------------------------------------------------------
// Hands registers between warpgroups (sm_90a): the producer gives its share away, consumers take it.
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
// Barrier `id` (1..15) over `threads` threads: one warpgroup synchronizing without the others.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ---- predicated global stores ------------------------------------------------------------------
// Stores made only where `pred` holds, by a predicate instead of a branch: code between a wgmma's
// issue and its wait must not diverge, or ptxas serializes the wgmmas (C7520). ptxas predicates
// small branches there itself (a select around one rcp), but not the output stores' row tests.
__device__ __forceinline__ void st_global_cs_v4_if(void* ptr, uint4 v, bool pred) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %5, 0;\n@p st.global.cs.v4.b32 [%0], {%1, %2, %3, %4};\n}\n" ::"l"(ptr),
      "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(int(pred))
      : "memory");
}
__device__ __forceinline__ void st_global_f32_if(float* ptr, float v, bool pred) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\n@p st.global.f32 [%0], %1;\n}\n" ::"l"(ptr), "f"(v),
               "r"(int(pred))
               : "memory");
}

// ---- TMA ---------------------------------------------------------------------------------------
// L2 eviction policies for cache hints: evict_last for data read again soon (K/V tiles, which many
// query blocks gather), evict_first for data read or written once (Q, O).
__device__ __forceinline__ uint64_t l2_evict_last() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ uint64_t l2_evict_first() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}
// Loads the box at coordinates (c0, c1, c2) of a 3-D tensor map into shared memory, with an L2
// eviction policy (l2_evict_last, l2_evict_first).
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1, int c2,
                                            uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%3, %4, %5}], [%2], %6;\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "l"(policy)
      : "memory");
}

// tma_load_3d into every block of the cluster in `cta_mask`, at the same shared-memory offsets of
// `dst` and `bar` in each: the box is read from L2 once.
__device__ __forceinline__ void tma_load_3d_multicast(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1,
                                                      int c2, uint16_t cta_mask, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      ".L2::cache_hint [%0], [%1, {%3, %4, %5}], [%2], %6, %7;\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "h"(cta_mask),
      "l"(policy)
      : "memory");
}

// ---- wgmma descriptors ------------------------------------------------------------------------
// Bits 0-13 start address >> 4, 16-29 leading-dimension byte offset >> 4, 32-45 stride-dimension
// byte offset >> 4, 62-63 swizzle mode (1 = 128-byte).
__device__ __forceinline__ uint64_t make_desc(const void* smem, uint32_t leading_bytes, uint32_t stride_bytes) {
  const uint64_t addr = smem_u32(smem);
  return ((addr & 0x3ffff) >> 4) | (uint64_t((leading_bytes >> 4) & 0x3fff) << 16) |
         (uint64_t((stride_bytes >> 4) & 0x3fff) << 32) | (uint64_t(1) << 62);
}
// K-major operand (rows of 64 contiguous k): groups of 8 rows are 1024 bytes apart; the leading
// offset is unused with the 128-byte swizzle. Step k by 16 elements = +32 bytes.
__device__ __forceinline__ uint64_t desc_k_major(const void* tile) { return make_desc(tile, 16, 1024); }
// MN-major operand (rows of 64 contiguous n, one row per k): 64-column chunks `chunk_bytes` apart,
// groups of 8 k-rows 1024 bytes apart. Step k by 16 rows = +2048 bytes.
__device__ __forceinline__ uint64_t desc_mn_major(const void* tile, uint32_t chunk_bytes) {
  return make_desc(tile, chunk_bytes, 1024);
}

// The descriptor of the tile `bytes` further on: its address field (bits 0-13, address >> 4) plus
// bytes >> 4, which cannot carry into the next field for shared-memory addresses (< 256 KB). With a
// compile-time step this is one add, where make_desc per step costs ptxas five uniform instructions
// between consecutive wgmmas.
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) { return desc + (bytes >> 4); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Makes the compiler treat accumulator registers as changed here, so that no read or write of them
// moves across an asynchronous wgmma's issue or wait.
template <int N>
__device__ __forceinline__ void fence_registers(float (&r)[N]) {
#pragma unroll
  for (int e = 0; e < N; ++e) asm volatile("" : "+f"(r[e])::"memory");
}

// The same for 16-bit operand registers that an in-flight wgmma reads (P for O += P V): keeps them
// alive and unchanged until after the wait that follows.
template <int N>
__device__ __forceinline__ void fence_registers(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int k = 0; k < N; ++k)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[k][e])::"memory");
}

#define SEER_R8(i) "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                   "+f"(d[i + 6]), "+f"(d[i + 7])

// How a shared-memory B operand is laid out: K-major (rows of contiguous k, as K is for S = Q K^T) or
// MN-major (rows of contiguous n, as V is for O += P V): wgmma's transpose-B immediate.
enum class BMajor { K = 0, MN = 1 };

// D[64xN] (+)= A[64x16] (registers, the mma.sync A-fragment layout per warp) * B[16xN] (smem, laid out
// as kMajor says), fp32 accumulators.
template <typename T, int N>
struct WgmmaRs;

#define SEER_WGMMA_RS_64(TYPE, TNAME)                                                                              \
  template <>                                                                                                      \
  struct WgmmaRs<TYPE, 64> {                                                                                       \
    template <BMajor kMajor>                                                                                       \
    __device__ __forceinline__ static void run(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b,           \
                                               bool accumulate) {                                                  \
      asm volatile(                                                                                                \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                             \
          "wgmma.mma_async.sync.aligned.m64n64k16.f32." TNAME "." TNAME                                             \
          " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,"   \
          "%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, %38;\n}\n"                                        \
          : SEER_R8(0), SEER_R8(8), SEER_R8(16), SEER_R8(24)                                                        \
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)), "n"(int(kMajor)));     \
    }                                                                                                              \
  };
#define SEER_WGMMA_RS_128(TYPE, TNAME)                                                                             \
  template <>                                                                                                      \
  struct WgmmaRs<TYPE, 128> {                                                                                      \
    template <BMajor kMajor>                                                                                       \
    __device__ __forceinline__ static void run(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b,           \
                                               bool accumulate) {                                                  \
      asm volatile(                                                                                                \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                             \
          "wgmma.mma_async.sync.aligned.m64n128k16.f32." TNAME "." TNAME                                            \
          " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,"   \
          "%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,"   \
          "%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, %70;\n}\n"            \
          : SEER_R8(0), SEER_R8(8), SEER_R8(16), SEER_R8(24), SEER_R8(32), SEER_R8(40), SEER_R8(48), SEER_R8(56)    \
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)), "n"(int(kMajor)));     \
    }                                                                                                              \
  };
SEER_WGMMA_RS_64(__nv_bfloat16, "bf16")
SEER_WGMMA_RS_64(__half, "f16")
SEER_WGMMA_RS_128(__nv_bfloat16, "bf16")
SEER_WGMMA_RS_128(__half, "f16")
#undef SEER_WGMMA_RS_64
#undef SEER_WGMMA_RS_128

template <typename T, int N, BMajor kMajor>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, bool accumulate) {
  WgmmaRs<T, N>::template run<kMajor>(d, a, desc_b, accumulate);
}
#undef SEER_R8

}  // namespace seer::cuda::detail
