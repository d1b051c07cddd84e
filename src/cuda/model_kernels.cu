#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/model_kernels.h"

namespace seer::cuda {
namespace {

__device__ __forceinline__ float block_sum(float x, float* shared) {
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();  // `shared` may still be read from a previous call
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += shared[w];
  return total;
}

__global__ void embed_kernel(const int32_t* ids, const __nv_bfloat16* table, int hidden, int vocab, float* out) {
  const int64_t t = blockIdx.x;
  const int id = ids[t];
  float* dst = out + t * hidden;
  if (id < 0 || id >= vocab) {  // out-of-range ids poison the row instead of reading out of bounds
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) dst[c] = __int_as_float(0x7fc00000);
    return;
  }
  const __nv_bfloat16* src = table + int64_t(id) * hidden;
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) dst[c] = __bfloat162float(src[c]);
}

// One block per row; each thread keeps its (at most kNormVectors) float4s of the row in registers,
// so every load of the row is in flight at once: at batch-1 decode a row is one block's whole work,
// and a loop of dependent loads would cost a memory latency per iteration.
constexpr int kNormVectors = 4;
__global__ void rms_norm_kernel(const float* x, const float* weight, int hidden, float eps, __nv_bfloat16* out) {
  __shared__ float shared[32];
  const int vectors = hidden / 4;
  const float4* row = reinterpret_cast<const float4*>(x + int64_t(blockIdx.x) * hidden);
  float4 v[kNormVectors];
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < kNormVectors; ++i) {
    const int c = threadIdx.x + i * blockDim.x;
    if (c < vectors) {
      v[i] = row[c];
      ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
    }
  }
  const float inv = rsqrtf(block_sum(ss, shared) / float(hidden) + eps);
  __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(out + int64_t(blockIdx.x) * hidden);
#pragma unroll
  for (int i = 0; i < kNormVectors; ++i) {
    const int c = threadIdx.x + i * blockDim.x;
    if (c < vectors) {
      const float4 w = reinterpret_cast<const float4*>(weight)[c];
      dst[2 * c] = __floats2bfloat162_rn(v[i].x * inv * w.x, v[i].y * inv * w.y);
      dst[2 * c + 1] = __floats2bfloat162_rn(v[i].z * inv * w.z, v[i].w * inv * w.w);
    }
  }
}

// One block per token; threads over (head, pair) of q and k, then over v.
__global__ void split_qkv_rope_kernel(const __nv_bfloat16* qkv, const int32_t* positions, int hq, int hkv, int d,
                                      const float2* rope, __nv_bfloat16* q, __nv_bfloat16* k, __nv_bfloat16* v,
                                      __nv_bfloat16* q_pre, __nv_bfloat16* k_pre, bool kv_at_position) {
  const int64_t t = blockIdx.x, kv_row = kv_at_position ? positions[t] : t;
  const int half = d / 2, width = (hq + 2 * hkv) * d;
  const __nv_bfloat16* src = qkv + t * width;
  const float2* cs_row = rope + int64_t(positions[t]) * half;
  for (int e = threadIdx.x; e < (hq + hkv) * half; e += blockDim.x) {
    const int head = e / half, x = e % half;
    const bool is_q = head < hq;
    const int h = is_q ? head : head - hq;
    const __nv_bfloat16* in = src + (is_q ? h * d : (hq + h) * d);
    const float a = __bfloat162float(in[x]), b = __bfloat162float(in[x + half]);
    const float2 cs = cs_row[x];
    __nv_bfloat16* dst = is_q ? q + (t * hq + h) * d : k + (kv_row * hkv + h) * d;
    dst[x] = __float2bfloat16_rn(a * cs.x - b * cs.y);
    dst[x + half] = __float2bfloat16_rn(b * cs.x + a * cs.y);
    __nv_bfloat16* pre = is_q ? (q_pre ? q_pre + (t * hq + h) * d : nullptr) : (k_pre ? k_pre + (t * hkv + h) * d : nullptr);
    if (pre) {
      pre[x] = in[x];
      pre[x + half] = in[x + half];
    }
  }
  for (int e = threadIdx.x; e < hkv * d; e += blockDim.x) v[kv_row * hkv * d + e] = src[(hq + hkv) * d + e];
}

__global__ void swiglu_kernel(const __nv_bfloat16* gate_up, int64_t tokens, int inter, __nv_bfloat16* out) {
  const int64_t n = tokens * inter;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / inter, c = e % inter;
    const float g = __bfloat162float(gate_up[t * 2 * inter + c]);
    const float u = __bfloat162float(gate_up[t * 2 * inter + inter + c]);
    out[e] = __float2bfloat16_rn(g / (1.f + __expf(-g)) * u);
  }
}

__global__ void nll_kernel(const float* logits, const int32_t* targets, int vocab, float* nll) {
  __shared__ float shared[32];
  const float* row = logits + int64_t(blockIdx.x) * vocab;
  float m = -INFINITY;
  for (int c = threadIdx.x; c < vocab; c += blockDim.x) m = fmaxf(m, row[c]);
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  __shared__ float warp_max[32];
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  m = -INFINITY;
  for (int w = 0; w < int(blockDim.x / 32); ++w) m = fmaxf(m, warp_max[w]);
  float sum = 0.f;
  for (int c = threadIdx.x; c < vocab; c += blockDim.x) sum += __expf(row[c] - m);
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) {
    const int target = targets[blockIdx.x];
    nll[blockIdx.x] = (target >= 0 && target < vocab) ? m + logf(sum) - row[target] : __int_as_float(0x7fc00000);
  }
}

unsigned grid_for(int64_t n) { return unsigned(std::min<int64_t>((n + 255) / 256, 132 * 32)); }

}  // namespace

void embed_tokens(const int32_t* ids, int64_t tokens, const __nv_bfloat16* table, int hidden, int vocab,
                  float* residual, cudaStream_t stream) {
  if (tokens == 0) return;
  embed_kernel<<<unsigned(tokens), 256, 0, stream>>>(ids, table, hidden, vocab, residual);
  SEER_CUDA_CHECK_LAUNCH();
}

void rms_norm(const float* x, const float* weight, int64_t tokens, int hidden, float eps, __nv_bfloat16* out,
              cudaStream_t stream) {
  if (tokens == 0) return;
  SEER_CHECK(hidden % 4 == 0 && hidden <= 4 * kNormVectors * 1024, "rms_norm: hidden size ", hidden,
             " must be a multiple of 4 and at most ", 4 * kNormVectors * 1024);
  const int vectors = hidden / 4;
  const int threads = std::min(1024, std::max(32, ((vectors + kNormVectors - 1) / kNormVectors + 31) / 32 * 32));
  rms_norm_kernel<<<unsigned(tokens), unsigned(threads), 0, stream>>>(x, weight, hidden, eps, out);
  SEER_CUDA_CHECK_LAUNCH();
}

void split_qkv_rope(const __nv_bfloat16* qkv, int64_t tokens, const int32_t* positions, int q_heads, int kv_heads,
                    int head_dim, const float2* rope_table, __nv_bfloat16* q, __nv_bfloat16* k, __nv_bfloat16* v,
                    __nv_bfloat16* q_pre, __nv_bfloat16* k_pre, bool kv_at_position, cudaStream_t stream) {
  if (tokens == 0) return;
  // A few tokens (decode) get a wide block each: their whole work is these blocks' latency.
  split_qkv_rope_kernel<<<unsigned(tokens), tokens < 64 ? 1024 : 256, 0, stream>>>(qkv, positions, q_heads, kv_heads, head_dim, rope_table,
                                                              q, k, v, q_pre, k_pre, kv_at_position);
  SEER_CUDA_CHECK_LAUNCH();
}

void swiglu(const __nv_bfloat16* gate_up, int64_t tokens, int intermediate, __nv_bfloat16* out, cudaStream_t stream) {
  if (tokens == 0) return;
  swiglu_kernel<<<grid_for(tokens * intermediate), 256, 0, stream>>>(gate_up, tokens, intermediate, out);
  SEER_CUDA_CHECK_LAUNCH();
}

void token_nll(const float* logits, const int32_t* targets, int64_t rows, int vocab, float* nll, cudaStream_t stream) {
  if (rows == 0) return;
  nll_kernel<<<unsigned(rows), 512, 0, stream>>>(logits, targets, vocab, nll);
  SEER_CUDA_CHECK_LAUNCH();
}

}  // namespace seer::cuda
