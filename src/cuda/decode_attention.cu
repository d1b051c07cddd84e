#include "cuda/decode_attention.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "cuda/cuda_check.h"

namespace seer::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kKeys = 64;      // keys per shared-memory tile
constexpr int kMaxGroup = 8;   // query heads per KV head
constexpr int kItemsPerSm = 4; // thread blocks per SM the splits aim for (several waves hide latency)

struct DecodeParams {
  const __nv_bfloat16* q;
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  int64_t length;
  int kv_heads, group, keys_per_split;
  float scale_log2;  // log2(e) / sqrt(d): scores in base 2, so exp2 is the softmax's exponential
  float* partial_out;
  float2* partial_max_sum;
};

__device__ __forceinline__ void unpack8(const uint4& raw, float* f) {
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 x = __bfloat1622float2(pairs[i]);
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

// One (KV head, key range) item. Per 64-key tile: (1) each thread scores one key for half of the
// group's heads (q in shared memory, read as broadcasts); (2) one warp per head turns the tile's
// scores into probabilities against the running max and rescales the running sum; (3) each thread
// accumulates P·V for one output dimension of every head (D = 64: two threads per dimension over
// alternate keys, summed at the end).
template <int D>
__global__ void __launch_bounds__(kThreads) decode_split_kernel(const DecodeParams p) {
  constexpr int kChunks = D / 8;               // 16-byte pieces of a row
  constexpr int kKeyGroups = kThreads / D;     // threads sharing an output dimension
  constexpr int kLoads = kKeys * kChunks / kThreads;
  __shared__ float q_s[kMaxGroup][D];
  __shared__ alignas(16) __nv_bfloat16 k_s[kKeys][D + 8];  // +16 bytes: row reads by key are conflict-free
  __shared__ alignas(16) __nv_bfloat16 v_s[kKeys][D];
  __shared__ alignas(16) float p_s[kKeys][kMaxGroup];  // scores, then probabilities, [key][head]
  __shared__ float max_s[kMaxGroup], sum_s[kMaxGroup], rescale_s[kMaxGroup];

  const int kv_head = blockIdx.x, split = blockIdx.y, t = threadIdx.x, g = p.group;
  const int64_t begin = int64_t(split) * p.keys_per_split;
  const int64_t end = std::min<int64_t>(p.length, begin + p.keys_per_split);
  const int64_t row_stride = int64_t(p.kv_heads) * D;

  for (int e = t; e < g * D; e += kThreads)
    q_s[e / D][e % D] = __bfloat162float(p.q[(int64_t(kv_head) * g + e / D) * D + e % D]) * p.scale_log2;
  if (t < kMaxGroup) {
    max_s[t] = -INFINITY;
    sum_s[t] = 0.f;
  }
  float acc[kMaxGroup] = {};
  const int dim = t % D, key_group = t / D;

  for (int64_t tile = begin; tile < end; tile += kKeys) {
    const int n = int(std::min<int64_t>(kKeys, end - tile));
    uint4 kr[kLoads], vr[kLoads];
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {  // all loads in flight before the first store
      const int c = t + i * kThreads, row = c / kChunks, col = (c % kChunks) * 8;
      const int64_t off = (tile + row) * row_stride + int64_t(kv_head) * D + col;
      kr[i] = row < n ? *reinterpret_cast<const uint4*>(p.k + off) : make_uint4(0, 0, 0, 0);
      vr[i] = row < n ? *reinterpret_cast<const uint4*>(p.v + off) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int c = t + i * kThreads, row = c / kChunks, col = (c % kChunks) * 8;
      *reinterpret_cast<uint4*>(&k_s[row][col]) = kr[i];
      *reinterpret_cast<uint4*>(&v_s[row][col]) = vr[i];
    }
    __syncthreads();

    {  // (1) scores of key t % 64 for heads t / 64, t / 64 + 2, ...
      const int key = t % kKeys, first_head = t / kKeys;
      float s[kMaxGroup / 2] = {};
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        float kf[8];
        unpack8(*reinterpret_cast<const uint4*>(&k_s[key][c * 8]), kf);
#pragma unroll
        for (int i = 0; i < kMaxGroup / 2; ++i) {
          const int h = first_head + 2 * i;
          if (h < g) {
#pragma unroll
            for (int e = 0; e < 8; ++e) s[i] = fmaf(q_s[h][c * 8 + e], kf[e], s[i]);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < kMaxGroup / 2; ++i) {
        const int h = first_head + 2 * i;
        if (h < g) p_s[key][h] = key < n ? s[i] : -INFINITY;
      }
    }
    __syncthreads();

    {  // (2) online softmax: warp w owns heads w, w + 4
      const int warp = t / 32, lane = t % 32;
      for (int h = warp; h < g; h += kThreads / 32) {
        const float s0 = p_s[lane][h], s1 = p_s[lane + 32][h];
        float tile_max = fmaxf(s0, s1);
        for (int off = 16; off > 0; off /= 2) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, off));
        const float old_max = max_s[h], new_max = fmaxf(old_max, tile_max);  // finite: the tile has a key
        const float p0 = exp2f(s0 - new_max), p1 = exp2f(s1 - new_max);
        p_s[lane][h] = p0;
        p_s[lane + 32][h] = p1;
        float tile_sum = p0 + p1;
        for (int off = 16; off > 0; off /= 2) tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, off);
        __syncwarp();
        if (lane == 0) {
          const float rescale = exp2f(old_max - new_max);  // 0 on the first tile (old max -inf)
          rescale_s[h] = rescale;
          sum_s[h] = sum_s[h] * rescale + tile_sum;
          max_s[h] = new_max;
        }
      }
    }
    __syncthreads();

    // (3) acc[h] = acc[h] * rescale[h] + sum_key p[key][h] * v[key][dim]
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h)
      if (h < g) acc[h] *= rescale_s[h];
    for (int key = key_group; key < kKeys; key += kKeyGroups) {
      const float vf = __bfloat162float(v_s[key][dim]);
      const float4 pa = *reinterpret_cast<const float4*>(&p_s[key][0]);
      const float4 pb = *reinterpret_cast<const float4*>(&p_s[key][4]);
      const float pk[kMaxGroup] = {pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w};
#pragma unroll
      for (int h = 0; h < kMaxGroup; ++h)
        if (h < g) acc[h] = fmaf(pk[h], vf, acc[h]);
    }
    __syncthreads();  // the next tile overwrites k_s, v_s and p_s
  }

  if constexpr (kKeyGroups > 1) {  // sum the key groups' partial outputs through p_s ([kMaxGroup][D] floats fit)
    float* stage = &p_s[0][0];
    for (int kg = 1; kg < kKeyGroups; ++kg) {
      if (key_group == kg)
#pragma unroll
        for (int h = 0; h < kMaxGroup; ++h)
          if (h < g) stage[h * D + dim] = acc[h];
      __syncthreads();
      if (key_group == 0)
#pragma unroll
        for (int h = 0; h < kMaxGroup; ++h)
          if (h < g) acc[h] += stage[h * D + dim];
      __syncthreads();
    }
  }
  const int q_heads = p.kv_heads * g;
  if (key_group == 0)
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h)
      if (h < g) p.partial_out[(int64_t(split) * q_heads + kv_head * g + h) * D + dim] = acc[h];  // acc stays in registers
  if (t < g) p.partial_max_sum[int64_t(split) * q_heads + kv_head * g + t] = make_float2(max_s[t], sum_s[t]);
}

// out[h] = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s, M = max_s m_s. One block per query head.
__global__ void decode_merge_kernel(const float* partial_out, const float2* partial_max_sum, int splits, int q_heads,
                                    int d, __nv_bfloat16* out) {
  const int h = blockIdx.x, x = threadIdx.x;
  float global_max = -INFINITY;
  for (int s = 0; s < splits; ++s) global_max = fmaxf(global_max, partial_max_sum[int64_t(s) * q_heads + h].x);
  float sum = 0.f, o = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float2 ms = partial_max_sum[int64_t(s) * q_heads + h];
    const float w = exp2f(ms.x - global_max);
    sum += w * ms.y;
    o += w * partial_out[(int64_t(s) * q_heads + h) * d + x];
  }
  out[int64_t(h) * d + x] = __float2bfloat16_rn(o / sum);
}

int sm_count() {
  static const int count = [] {
    int device = 0, sms = 0;
    SEER_CUDA_CHECK(cudaGetDevice(&device));
    SEER_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
  }();
  return count;
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
  w.max_splits = int(std::min<int64_t>((capacity + kKeys - 1) / kKeys, 1024));
  w.partial_out = DeviceBuffer<float>(size_t(w.max_splits) * dims.q_heads * dims.head_dim);
  w.partial_max_sum = DeviceBuffer<float2>(size_t(w.max_splits) * dims.q_heads);
  return w;
}

int decode_splits(const HeadDims& dims, int64_t length, int max_splits) {
  const int64_t tiles = (length + kKeys - 1) / kKeys;
  const int64_t wanted = (int64_t(kItemsPerSm) * sm_count() + dims.kv_heads - 1) / dims.kv_heads;
  const int64_t splits = std::clamp<int64_t>(wanted, 1, std::min<int64_t>(tiles, max_splits));
  const int64_t tiles_per_split = (tiles + splits - 1) / splits;
  return int((tiles + tiles_per_split - 1) / tiles_per_split);  // no empty range
}

void decode_attention(const void* q, const void* k_cache, const void* v_cache, int64_t length, void* out,
                      DecodeWorkspace& w, cudaStream_t stream) {
  const HeadDims& dims = w.dims;
  SEER_CHECK(q && k_cache && v_cache && out, "decode attention: a null tensor pointer");
  SEER_CHECK(length >= 1 && length <= (int64_t(1) << 30), "decode attention: length ", length, " outside [1, 2^30]");
  for (const void* ptr : {q, k_cache, v_cache, static_cast<const void*>(out)})
    SEER_CHECK(reinterpret_cast<uintptr_t>(ptr) % 16 == 0, "decode attention tensors must be 16-byte aligned");
  const int splits = decode_splits(dims, length, w.max_splits);
  const int64_t tiles = (length + kKeys - 1) / kKeys;
  DecodeParams p{static_cast<const __nv_bfloat16*>(q),
                 static_cast<const __nv_bfloat16*>(k_cache),
                 static_cast<const __nv_bfloat16*>(v_cache),
                 length,
                 dims.kv_heads,
                 dims.group(),
                 int(((tiles + splits - 1) / splits) * kKeys),
                 float(1.4426950408889634 / std::sqrt(double(dims.head_dim))),
                 w.partial_out.data(),
                 w.partial_max_sum.data()};
  const dim3 grid(unsigned(dims.kv_heads), unsigned(splits));
  if (dims.head_dim == 64)
    decode_split_kernel<64><<<grid, kThreads, 0, stream>>>(p);
  else
    decode_split_kernel<128><<<grid, kThreads, 0, stream>>>(p);
  SEER_CUDA_CHECK_LAUNCH();
  decode_merge_kernel<<<unsigned(dims.q_heads), unsigned(dims.head_dim), 0, stream>>>(
      w.partial_out.data(), w.partial_max_sum.data(), splits, dims.q_heads, dims.head_dim,
      static_cast<__nv_bfloat16*>(out));
  SEER_CUDA_CHECK_LAUNCH();
}

}  // namespace seer::cuda
