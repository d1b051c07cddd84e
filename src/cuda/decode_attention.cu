#include "cuda/decode_attention.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/flash_common.cuh"
#include "cuda/warp_mma.cuh"

namespace seer::cuda {
namespace {

constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kStep = 16;       // keys per warp step: one k-step of P·V, two n-tiles of S
constexpr int kStages = 2;      // K/V tiles in flight per warp
constexpr int kKeys = 64;       // key ranges are multiples of this (a step for each warp)
constexpr int kMaxGroup = 8;    // query heads per KV head (rows of the 16-row MMA tile used)
constexpr int kItemsPerSm = 4;  // thread blocks per SM the splits aim for (several waves hide latency)
constexpr int kMaxSplits = 1024;
constexpr int kMergeLanes = 8;  // split lanes per output dimension in the merge

template <int D>
constexpr size_t decode_smem_bytes() {
  const size_t tiles = size_t(kWarps) * kStages * 2 * kStep * D * 2;
  const size_t merge = (size_t(kWarps) * kMaxGroup * D + 2 * kWarps * kMaxGroup) * 4;
  return tiles > merge ? tiles : merge;
}

// Key ranges of one call: `splits` ranges of `keys_per_split` keys (a multiple of 64), none empty.
// The same on the host (grid size) and the device (the length read there).
struct SplitPlan {
  int splits, keys_per_split;
};
__host__ __device__ inline SplitPlan plan_splits(int64_t length, int kv_heads, int max_splits, int sms) {
  const int64_t tiles = (length + kKeys - 1) / kKeys;
  const int64_t wanted = (int64_t(kItemsPerSm) * sms + kv_heads - 1) / kv_heads;
  const int64_t limit = tiles < max_splits ? tiles : max_splits;
  const int64_t splits = wanted < 1 ? 1 : (wanted > limit ? limit : wanted);
  const int64_t tiles_per_split = (tiles + splits - 1) / splits;
  return {int((tiles + tiles_per_split - 1) / tiles_per_split), int(tiles_per_split * kKeys)};
}

struct DecodeParams {
  const __nv_bfloat16* q;
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  const int32_t* length;
  int kv_heads, group, max_splits, sms;
  float scale_log2;  // log2(e) / sqrt(d): scores in base 2, so exp2 is the softmax's exponential
  float* partial_out;
  float2* partial_max_sum;
};

// One (KV head, key range) item; its 4 warps take 16-key steps of the range in turn, each warp
// with its own double-buffered K/V tiles in shared memory (cp.async) and its own running softmax,
// merged at the end. Per step, on tensor cores: S[16 x 16] = Q·Kᵀ, the group's query heads as the
// rows (padded to 16: GQA groups are at most 8), then O[16 x D] += P·V with P taken from S's
// registers (the accumulator layout of two n-tiles is the A layout of one k-step).
template <int D>
__global__ void __launch_bounds__(kThreads) decode_split_kernel(const DecodeParams p) {
  using namespace detail;
  constexpr int kChunks = D / 8;  // 16-byte pieces of a row
  constexpr int kTileElems = kStep * D;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* const tiles = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [warp][stage][K, V][16][D]

  const int kv_head = blockIdx.x, split = blockIdx.y, g = p.group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 4, t = lane % 4, l8 = lane / 8, r8 = lane % 8;
  const int64_t length = *p.length;
  const SplitPlan plan = plan_splits(length, p.kv_heads, p.max_splits, p.sms);
  if (split >= plan.splits) return;  // the grid is sized for the longest length
  const int64_t begin = int64_t(split) * plan.keys_per_split;
  const int64_t end = std::min<int64_t>(length, begin + plan.keys_per_split);
  const int steps = int((end - begin + kStep - 1) / kStep);
  const int64_t row_stride = int64_t(p.kv_heads) * D;

  // Q as the A operand, straight from global memory: row r is query head r of the group (zero past g).
  uint32_t qa[D / 16][4];
  const __nv_bfloat16* q_row = p.q + (int64_t(kv_head) * g + r) * D;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    qa[kk][0] = r < g ? *reinterpret_cast<const uint32_t*>(q_row + kk * 16 + 2 * t) : 0u;
    qa[kk][2] = r < g ? *reinterpret_cast<const uint32_t*>(q_row + kk * 16 + 8 + 2 * t) : 0u;
    qa[kk][1] = qa[kk][3] = 0u;  // rows 8..15
  }

  const auto stage_tile = [&](int stage, int which) { return tiles + ((warp * kStages + stage) * 2 + which) * kTileElems; };
  const auto load_step = [&](int step, int stage) {
    const int64_t key0 = begin + int64_t(step) * kStep;
    for (int c = lane; c < kStep * kChunks; c += 32) {
      const int row = c / kChunks, chunk = c % kChunks;
      const bool valid = key0 + row < end;
      const int64_t off = (valid ? key0 + row : begin) * row_stride + int64_t(kv_head) * D + chunk * 8;
      cp_async_16(smem_u32(stage_tile(stage, 0) + swizzled<D>(row, chunk)), p.k + off, valid ? 16 : 0);
      cp_async_16(smem_u32(stage_tile(stage, 1) + swizzled<D>(row, chunk)), p.v + off, valid ? 16 : 0);
    }
  };

  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  if (warp < steps) load_step(warp, 0);
  cp_async_commit();
  for (int it = 0, step = warp; step < steps; ++it, step += kWarps) {
    if (step + kWarps < steps) load_step(step + kWarps, (it + 1) & 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncwarp();
    const __nv_bfloat16* k_tile = stage_tile(it & 1, 0);
    const __nv_bfloat16* v_tile = stage_tile(it & 1, 1);

    float s[2][4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t kf[4];
      ldmatrix_x4(kf, smem_u32(k_tile + swizzled<D>((l8 / 2) * 8 + r8, kk * 2 + (l8 % 2))));
      mma_16816_bf16(s[0], qa[kk], kf[0], kf[1]);
      mma_16816_bf16(s[1], qa[kk], kf[2], kf[3]);
    }
    // Element e of n-tile n: row r + 8 (e >> 1), key n * 8 + 2t + (e & 1) of the step.
    const int64_t key0 = begin + int64_t(step) * kStep;
    float step_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float x = key0 + n * 8 + 2 * t + (e & 1) < end ? s[n][e] * p.scale_log2 : -INFINITY;
        s[n][e] = x;
        step_max[e >> 1] = fmaxf(step_max[e >> 1], x);
      }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float m_new = fmaxf(row_max[half], quad_max(step_max[half]));  // finite: key0 < end
      const float rescale = exp2f(row_max[half] - m_new);
      row_max[half] = m_new;
      row_sum[half] *= rescale;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        acc[n][2 * half] *= rescale;
        acc[n][2 * half + 1] *= rescale;
      }
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        s[n][2 * half] = exp2f(s[n][2 * half] - m_new);
        s[n][2 * half + 1] = exp2f(s[n][2 * half + 1] - m_new);
        row_sum[half] += s[n][2 * half] + s[n][2 * half + 1];
      }
    }
    const uint32_t pa[4] = {pack2<__nv_bfloat16>(s[0][0], s[0][1]), pack2<__nv_bfloat16>(s[0][2], s[0][3]),
                            pack2<__nv_bfloat16>(s[1][0], s[1][1]), pack2<__nv_bfloat16>(s[1][2], s[1][3])};
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t vf[4];
      ldmatrix_x4_trans(vf, smem_u32(v_tile + swizzled<D>((l8 % 2) * 8 + r8, dp * 2 + l8 / 2)));
      mma_16816_bf16(acc[2 * dp], pa, vf[0], vf[1]);
      mma_16816_bf16(acc[2 * dp + 1], pa, vf[2], vf[3]);
    }
    __syncwarp();  // every lane is done with this stage before it is refilled
  }
  cp_async_wait<0>();
  __syncthreads();  // the tiles become the merge buffer

  // Merge the warps' partial softmaxes of rows (query heads) r < g; rows 8..15 are padding.
  float* const warp_out = reinterpret_cast<float*>(smem_raw);  // [warp][head][D]
  float* const warp_max = warp_out + kWarps * kMaxGroup * D;   // [warp][head]
  float* const warp_sum = warp_max + kWarps * kMaxGroup;
  const float sum = quad_sum(row_sum[0]);
  if (r < g) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      warp_out[(warp * kMaxGroup + r) * D + n * 8 + 2 * t] = acc[n][0];
      warp_out[(warp * kMaxGroup + r) * D + n * 8 + 2 * t + 1] = acc[n][1];
    }
    if (t == 0) {
      warp_max[warp * kMaxGroup + r] = row_max[0];
      warp_sum[warp * kMaxGroup + r] = sum;
    }
  }
  __syncthreads();
  const int q_heads = p.kv_heads * g;
  for (int e = threadIdx.x; e < g * D; e += kThreads) {
    const int h = e / D, x = e % D;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, warp_max[w * kMaxGroup + h]);  // warps without steps: -inf
    float o = 0.f, l = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float scale = exp2f(warp_max[w * kMaxGroup + h] - m);
      o += scale * warp_out[(w * kMaxGroup + h) * D + x];
      l += scale * warp_sum[w * kMaxGroup + h];
    }
    const int64_t head = int64_t(split) * q_heads + int64_t(kv_head) * g + h;
    p.partial_out[head * D + x] = o;
    if (x == 0) p.partial_max_sum[head] = make_float2(m, l);
  }
}

// out[h] = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s, M = max_s m_s. One block per query head:
// the weights go to shared memory once, then threads (x, y) sum dimension x over the splits
// s = y mod kMergeLanes (independent loads in flight), and the lanes are added up in shared memory.
__global__ void decode_merge_kernel(const DecodeParams p, int d, __nv_bfloat16* out) {
  __shared__ float weight[kMaxSplits];
  __shared__ float partial[kMergeLanes][128];
  __shared__ float total_sum;
  const int h = blockIdx.x, x = threadIdx.x, y = threadIdx.y, q_heads = p.kv_heads * p.group;
  const int splits = plan_splits(*p.length, p.kv_heads, p.max_splits, p.sms).splits;
  if (y == 0 && x < 32) {  // one warp: the maximum, the weights and the weighted sum of the row sums
    float m = -INFINITY;
    for (int s = x; s < splits; s += 32) m = fmaxf(m, p.partial_max_sum[int64_t(s) * q_heads + h].x);
    for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    float l = 0.f;
    for (int s = x; s < splits; s += 32) {
      const float2 ms = p.partial_max_sum[int64_t(s) * q_heads + h];
      weight[s] = exp2f(ms.x - m);
      l += weight[s] * ms.y;
    }
    for (int off = 16; off > 0; off /= 2) l += __shfl_xor_sync(0xffffffffu, l, off);
    if (x == 0) total_sum = l;
  }
  __syncthreads();
  float o = 0.f;
  for (int s = y; s < splits; s += kMergeLanes) o += weight[s] * p.partial_out[(int64_t(s) * q_heads + h) * d + x];
  partial[y][x] = o;
  __syncthreads();
  if (y == 0) {
#pragma unroll
    for (int lane = 1; lane < kMergeLanes; ++lane) o += partial[lane][x];
    out[int64_t(h) * d + x] = __float2bfloat16_rn(o / total_sum);
  }
}

void check_dims(const HeadDims& dims) {
  dims.validate();
  SEER_CHECK(dims.head_dim == 64 || dims.head_dim == 128, "decode attention supports head dims 64 and 128, got ",
             dims.head_dim);
  SEER_CHECK(dims.group() <= kMaxGroup, "decode attention supports at most ", kMaxGroup,
             " query heads per KV head, got ", dims.group());
}

}  // namespace

DecodeWorkspace DecodeWorkspace::create(const HeadDims& dims, int64_t capacity) {
  check_dims(dims);
  SEER_CHECK(capacity > 0, "decode workspace: capacity must be positive, got ", capacity);
  DecodeWorkspace w;
  w.dims = dims;
  w.max_splits = int(std::min<int64_t>((capacity + kKeys - 1) / kKeys, kMaxSplits));
  w.partial_out = DeviceBuffer<float>(size_t(w.max_splits) * dims.q_heads * dims.head_dim);
  w.partial_max_sum = DeviceBuffer<float2>(size_t(w.max_splits) * dims.q_heads);
  return w;
}

int decode_splits(const HeadDims& dims, int64_t length, int max_splits) {
  return plan_splits(length, dims.kv_heads, max_splits, sm_count()).splits;
}

void decode_attention(const void* q, const void* k_cache, const void* v_cache, const int32_t* length,
                      int64_t max_length, void* out, DecodeWorkspace& w, cudaStream_t stream) {
  const HeadDims& dims = w.dims;
  SEER_CHECK(q && k_cache && v_cache && length && out, "decode attention: a null pointer");
  SEER_CHECK(max_length >= 1 && max_length <= (int64_t(1) << 30), "decode attention: max length ", max_length,
             " outside [1, 2^30]");
  for (const void* ptr : {q, k_cache, v_cache, static_cast<const void*>(out)})
    SEER_CHECK(reinterpret_cast<uintptr_t>(ptr) % 16 == 0, "decode attention tensors must be 16-byte aligned");
  // Splits never decrease with the length, so the longest length's count bounds every call's.
  const int splits = decode_splits(dims, max_length, w.max_splits);
  DecodeParams p{static_cast<const __nv_bfloat16*>(q),
                 static_cast<const __nv_bfloat16*>(k_cache),
                 static_cast<const __nv_bfloat16*>(v_cache),
                 length,
                 dims.kv_heads,
                 dims.group(),
                 w.max_splits,
                 sm_count(),
                 float(1.4426950408889634 / std::sqrt(double(dims.head_dim))),
                 w.partial_out.data(),
                 w.partial_max_sum.data()};
  const dim3 grid(unsigned(dims.kv_heads), unsigned(splits));
  static std::atomic<uint64_t> configured;
  once_per_device(configured, [] {
    SEER_CUDA_CHECK(cudaFuncSetAttribute(decode_split_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(decode_smem_bytes<64>())));
    SEER_CUDA_CHECK(cudaFuncSetAttribute(decode_split_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(decode_smem_bytes<128>())));
  });
  if (dims.head_dim == 64)
    decode_split_kernel<64><<<grid, kThreads, decode_smem_bytes<64>(), stream>>>(p);
  else
    decode_split_kernel<128><<<grid, kThreads, decode_smem_bytes<128>(), stream>>>(p);
  SEER_CUDA_CHECK_LAUNCH();
  decode_merge_kernel<<<unsigned(dims.q_heads), dim3(unsigned(dims.head_dim), kMergeLanes), 0, stream>>>(
      p, dims.head_dim, static_cast<__nv_bfloat16*>(out));
  SEER_CUDA_CHECK_LAUNCH();
}

}  // namespace seer::cuda
