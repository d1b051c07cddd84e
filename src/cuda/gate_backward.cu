// Gate distillation loss and gradient on the GPU, the math of gate_kl_loss and gate_backward
// (src/gate/attn_gate.cpp) in float:
//   per kept row (s, h, i): q = softmax_j<=i(z), KL += sum_j gt_j (log gt_j - log q_j) / elements,
//                           dz_j = scale_loss (q_j sum(gt) - gt_j) / elements
//   and with a tail term (TailKl: weight w, tail T = [1, i - local_blocks], |T| >= 2, sum_T gt > 0):
//                           q' = softmax_T(z), p' = gt / sum_T(gt) on T,
//                           KL += w sum_T p'_j (log p'_j - log q'_j) / elements,
//                           dz_j += scale_loss w (q'_j - p'_j) / elements
//   dq_r[h, i] = sum_j<=i dz[h, i, j] k_r[h, j] / sqrt(d_g),  dk_r[h, j] = sum_i>=j dz[h, i, j] q_r[h, i] / sqrt(d_g)
//   back through RoPE (its transpose), then dW_k[h] = k_pool[:, h / g]^T dk,  dW_q[h] = q_pool[:, h]^T dq
//   (q_pool [rows, H_q, q_in]);
//   dbias[h, c] = sum of dz[h, i, j] over the pairs (i, j <= i) whose logit bias entry c adds to.
#include <cmath>

#include "cuda/gate_cuda.h"

namespace seer::cuda {
namespace {

constexpr int kWeightRowsPerBlock = 16;  // input channels of W per thread block in the weight gradient

// (sequence, head, block row) of global map row `row` (block rows x H_q, sequence-major as the map).
struct MapRow {
  int s, h, i, nb;
  int64_t offset;  // of the row's first element in the map
};
__device__ MapRow map_row(const int32_t* seq_len, const int32_t* row_offset, const int64_t* map_offset,
                          int sequences, int hq, int64_t row) {
  int s = 0;
  while (s + 1 < sequences && int64_t(row_offset[s + 1]) * hq <= row) ++s;
  const int nb = (seq_len[s] + 63) / 64;
  const int64_t local = row - int64_t(row_offset[s]) * hq;
  const int h = int(local / nb), i = int(local % nb);
  return {s, h, i, nb, map_offset[s] + local * nb};
}

// KL(p ‖ softmax(z)) over keys [first, last] of one row, summed over the warp (every lane gets it),
// p renormalized over them when `normalize` (then 0 when they hold no target); adds weight × its
// gradient, scale × (softmax(z) sum(p) - p), or scale × (softmax(z) - p / sum(p)), to dz.
__device__ float warp_row_kl(const float* z, const float* target, int first, int last, bool normalize, float weight,
                             float scale, float* dz) {
  const int lane = threadIdx.x % 32;
  float m = -INFINITY, gt_sum = 0.f;
  for (int j = first + lane; j <= last; j += 32) {
    m = fmaxf(m, z[j]);
    gt_sum += target[j];
  }
  for (int off = 16; off > 0; off /= 2) {
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    gt_sum += __shfl_xor_sync(0xffffffffu, gt_sum, off);
  }
  if (normalize && !(gt_sum > 0.f)) return 0.f;
  float sum = 0.f;
  for (int j = first + lane; j <= last; j += 32) sum += expf(z[j] - m);
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float log_sum = m + logf(sum), norm = normalize ? gt_sum : 1.f, mass = gt_sum / norm;
  float kl = 0.f;
  for (int j = first + lane; j <= last; j += 32) {
    const float log_q = z[j] - log_sum, p = target[j] / norm;
    if (p > 0.f) kl += p * (logf(p) - log_q);
    dz[j] += weight * scale * (expf(log_q) * mass - p);
  }
  for (int off = 16; off > 0; off /= 2) kl += __shfl_xor_sync(0xffffffffu, kl, off);
  return weight * kl;
}

// One warp per map row: the row's loss term and dz (zero for skipped rows and above the diagonal).
__global__ void kl_rows_kernel(const float* logits, const float* gt, const int32_t* seq_len, const int32_t* row_offset,
                               const int64_t* map_offset, int sequences, int hq, int64_t rows, double skip_fraction,
                               bool tail, float tail_weight, int tail_local, double elements, float loss_scale,
                               float* dlogits, double* kl) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const MapRow r = map_row(seq_len, row_offset, map_offset, sequences, hq, row);
  const float* z = logits + r.offset;
  const float* target = gt + r.offset;
  float* dz = dlogits + r.offset;
  for (int j = lane; j < r.nb; j += 32) dz[j] = 0.f;
  const int skip = int(int64_t(double(r.nb) * skip_fraction));  // as the CPU: int64_t(nb * skip_fraction)
  if (r.i < skip) return;
  __syncwarp();  // the zeros above written before the lanes add to other lanes' entries
  const float scale = loss_scale * float(1.0 / elements);
  float term = warp_row_kl(z, target, 0, r.i, false, 1.f, scale, dz);
  if (tail && r.i - tail_local >= 2) {
    __syncwarp();
    term += warp_row_kl(z, target, 1, r.i - tail_local, true, tail_weight, scale, dz);
  }
  if (lane == 0) atomicAdd(kl, double(term) / elements);
}

// One warp per map row: the row's causal part raised to `power`, normalized to sum 1 (a row of zeros
// stays zero); the entries past the diagonal are copied.
__global__ void power_rows_kernel(const float* in, float* out, const int32_t* seq_len, const int32_t* row_offset,
                                  const int64_t* map_offset, int sequences, int hq, int64_t rows, float power) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const MapRow r = map_row(seq_len, row_offset, map_offset, sequences, hq, row);
  const float* src = in + r.offset;
  float* dst = out + r.offset;
  float sum = 0.f;
  for (int j = lane; j <= r.i; j += 32) sum += powf(src[j], power);
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  // Each lane rewrites only the entries it read, so in may be out.
  for (int j = lane; j < r.nb; j += 32) dst[j] = j <= r.i && sum > 0.f ? powf(src[j], power) / sum : src[j];
}

// grid (block rows, H_q), one thread per RoPE pair (x, x + d_g/2): block b's dk (its map column) and
// dq (its map row), rotated back by RoPE at position 64 b.
__global__ void dgate_kernel(const float* dlogits, const float* q_gate, const float* k_gate, const float2* rope,
                             const int32_t* seq_len, const int32_t* row_offset, const int64_t* map_offset,
                             int sequences, int64_t rows, int dg, float scale, bool with_dq, float* dq_gate,
                             float* dk_gate) {
  const int64_t row = blockIdx.x;
  const int h = blockIdx.y, half = dg / 2, x = threadIdx.x;
  if (x >= half) return;
  int s = 0;
  while (s + 1 < sequences && row_offset[s + 1] <= row) ++s;
  const int nb = (seq_len[s] + 63) / 64, b = int(row - row_offset[s]);
  const float* map = dlogits + map_offset[s] + int64_t(h) * nb * nb;
  const int64_t base = int64_t(h) * rows + row_offset[s];  // [H_q, rows, d_g] row of block 0
  float dk_lo = 0.f, dk_hi = 0.f, dq_lo = 0.f, dq_hi = 0.f;
  for (int i = b; i < nb; ++i) {
    const float g = map[int64_t(i) * nb + b];
    dk_lo += g * q_gate[(base + i) * dg + x];
    dk_hi += g * q_gate[(base + i) * dg + x + half];
  }
  if (with_dq)
    for (int j = 0; j <= b; ++j) {
      const float g = map[int64_t(b) * nb + j];
      dq_lo += g * k_gate[(base + j) * dg + x];
      dq_hi += g * k_gate[(base + j) * dg + x + half];
    }
  // RoPE rotated (lo, hi) to (lo c - hi s, hi c + lo s); its transpose maps (a, b) to (a c + b s, b c - a s).
  const float2 cs = rope[int64_t(b) * half + x];
  float* dk = dk_gate + (base + b) * dg;
  dk[x] = scale * (dk_lo * cs.x + dk_hi * cs.y);
  dk[x + half] = scale * (dk_hi * cs.x - dk_lo * cs.y);
  if (with_dq) {
    float* dq = dq_gate + (base + b) * dg;
    dq[x] = scale * (dq_lo * cs.x + dq_hi * cs.y);
    dq[x + half] = scale * (dq_hi * cs.x - dq_lo * cs.y);
  }
}

// dW[w, c, x] = sum over the query heads h that share weight head w (w·shared .. w·shared + shared - 1)
// and block rows r of input[r, head(h), c] * dgate[h, r, x]; grid (weight heads, channel groups of
// 16), threads over x. input is [rows, in_heads, in_dim] (k_pool: in_heads = H_kv, in_dim = 3d,
// head(h) = h / g, shared = 1 per query head's W_k or g per KV head's; q_pool: H_q, q_in, h, 1).
__global__ void dweight_kernel(const float* input, int in_heads, int in_dim, int group, int shared,
                               const float* dgate, int64_t rows, int dg, float* dw) {
  const int w = blockIdx.x, c0 = blockIdx.y * kWeightRowsPerBlock;
  const int channels = min(kWeightRowsPerBlock, in_dim - c0);
  for (int x = threadIdx.x; x < dg; x += blockDim.x) {
    float acc[kWeightRowsPerBlock] = {};
    for (int h = w * shared; h < (w + 1) * shared; ++h) {
      const int head = h / group;
      for (int64_t r = 0; r < rows; ++r) {
        const float g = dgate[(int64_t(h) * rows + r) * dg + x];
        const float* in = input + (r * in_heads + head) * in_dim + c0;  // the same address in every thread
#pragma unroll
        for (int c = 0; c < kWeightRowsPerBlock; ++c)
          if (c < channels) acc[c] += in[c] * g;
      }
    }
    for (int c = 0; c < channels; ++c) dw[(int64_t(w) * in_dim + c0 + c) * dg + x] = acc[c];
  }
}

// One thread block per query head: dbias[h, c] for every column c of its block bias. Each thread
// sums its share of the map's causal pairs per column (a fixed order: the result does not vary from
// run to run), then the block adds the threads' sums.
__global__ void dbias_kernel(const float* dlogits, const int32_t* seq_len, const int64_t* map_offset, int sequences,
                             float* dbias) {
  const int h = blockIdx.x;
  float acc[kBiasColumns] = {};
  for (int s = 0; s < sequences; ++s) {
    const int nb = (seq_len[s] + 63) / 64;
    const float* map = dlogits + map_offset[s] + int64_t(h) * nb * nb;
    for (int64_t e = threadIdx.x; e < int64_t(nb) * nb; e += blockDim.x) {
      const int i = int(e / nb), j = int(e % nb);
      if (j > i) continue;
      const float g = map[e];
      const int bucket = distance_bucket(i - j);
#pragma unroll
      for (int c = 0; c < kBiasDistanceBuckets; ++c) acc[c] += c == bucket ? g : 0.f;
      if (j == 0) acc[kBiasSinkColumn] += g;
    }
  }
  __shared__ float warp_sums[kBiasColumns][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
#pragma unroll
  for (int c = 0; c < kBiasColumns; ++c) {
    for (int off = 16; off > 0; off /= 2) acc[c] += __shfl_xor_sync(0xffffffffu, acc[c], off);
    if (lane == 0) warp_sums[c][warp] = acc[c];
  }
  __syncthreads();
  if (threadIdx.x < kBiasColumns) {
    float sum = 0.f;
    for (int w = 0; w < warps; ++w) sum += warp_sums[threadIdx.x][w];
    dbias[h * kBiasColumns + threadIdx.x] = sum;
  }
}

}  // namespace

GateGradWorkspace GateGradWorkspace::create(const DeviceLayout& layout, const GateConfig& c, double skip_fraction,
                                            const TailKl& tail) {
  SEER_CHECK(skip_fraction >= 0.0 && skip_fraction < 1.0, "skip fraction must be in [0, 1), got ", skip_fraction);
  tail.validate();
  const size_t rows = size_t(layout.total_rows);
  GateGradWorkspace w{DeviceBuffer<float>(size_t(layout.host.map_elements())),
                      DeviceBuffer<float>(c.has_q_proj() ? rows * c.heads.q_heads * c.gate_dim : 0),
                      DeviceBuffer<float>(rows * c.heads.q_heads * c.gate_dim), 0.0, skip_fraction, tail};
  for (int64_t nb : layout.host.blocks)  // as gate_kl_loss counts them
    w.elements += double(c.heads.q_heads) * double(nb - int64_t(nb * skip_fraction)) * double(nb);
  return w;
}

void power_normalize_rows(const float* in, float* out, const DeviceLayout& layout, int q_heads, float power,
                          cudaStream_t stream) {
  SEER_CHECK(in && out, "power_normalize_rows: null map");
  SEER_CHECK(power > 0.f && std::isfinite(power), "target power must be positive, got ", power);
  SEER_CHECK(layout.host.heads == q_heads, "power_normalize_rows: the layout was built for ", layout.host.heads,
             " heads, not ", q_heads);
  const int64_t rows = layout.total_rows * q_heads;
  if (rows == 0) return;
  power_rows_kernel<<<unsigned((rows + 7) / 8), 256, 0, stream>>>(in, out, layout.seq_len.data(),
                                                                 layout.seq_row_offset.data(),
                                                                 layout.seq_map_offset.data(), layout.sequences,
                                                                 q_heads, rows, power);
  SEER_CUDA_CHECK_LAUNCH();
}

void gate_loss_backward(const float* logits, const float* gt, const DeviceLayout& layout, const DeviceGate& gate,
                        const GateWorkspace& work, float loss_scale, GateGradWorkspace& gw, double* kl, float* dwk,
                        float* dwq, float* dbias, cudaStream_t stream) {
  const GateConfig& c = gate.config;
  SEER_CHECK(logits && gt && kl && dwk && (dwq || !c.has_q_proj()) && (dbias || !c.has_block_bias),
             "gate backward: null pointer");
  SEER_CHECK(gw.dlogits.size() == size_t(layout.host.map_elements()) &&
                 gw.dk_gate.size() == size_t(layout.total_rows) * c.heads.q_heads * c.gate_dim,
             "gate backward: workspace was built for another layout");
  SEER_CHECK(work.q_gate.size() == gw.dk_gate.size(), "gate backward: gate workspace was built for another layout");
  if (layout.total_rows == 0 || gw.elements == 0) return;
  const int hq = c.heads.q_heads, d = c.heads.head_dim, dg = c.gate_dim;
  const int64_t map_rows = layout.total_rows * hq;
  kl_rows_kernel<<<unsigned((map_rows + 7) / 8), 256, 0, stream>>>(
      logits, gt, layout.seq_len.data(), layout.seq_row_offset.data(), layout.seq_map_offset.data(), layout.sequences,
      hq, map_rows, gw.skip_fraction, gw.tail.weight > 0, float(gw.tail.weight), gw.tail.local_blocks, gw.elements,
      loss_scale, gw.dlogits.data(), kl);  // the tail on or off as the CPU decides it, in double
  SEER_CUDA_CHECK_LAUNCH();
  if (c.has_block_bias) {
    dbias_kernel<<<unsigned(hq), 256, 0, stream>>>(gw.dlogits.data(), layout.seq_len.data(),
                                                   layout.seq_map_offset.data(), layout.sequences, dbias);
    SEER_CUDA_CHECK_LAUNCH();
  }
  const int pair_threads = ((dg / 2 + 31) / 32) * 32;
  dgate_kernel<<<dim3(unsigned(layout.total_rows), unsigned(hq)), pair_threads, 0, stream>>>(
      gw.dlogits.data(), work.q_gate.data(), work.k_gate.data(), gate.rope.data(), layout.seq_len.data(),
      layout.seq_row_offset.data(), layout.seq_map_offset.data(), layout.sequences, layout.total_rows, dg,
      float(1.0 / std::sqrt(double(dg))), c.has_q_proj(), gw.dq_gate.data(), gw.dk_gate.data());
  SEER_CUDA_CHECK_LAUNCH();
  const unsigned threads = unsigned(std::min(dg, 256));
  dweight_kernel<<<dim3(unsigned(c.k_proj_heads()), unsigned((3 * d + kWeightRowsPerBlock - 1) / kWeightRowsPerBlock)),
                   threads, 0, stream>>>(work.k_pool.data(), c.heads.kv_heads, 3 * d, c.heads.group(),
                                         hq / c.k_proj_heads(), gw.dk_gate.data(), layout.total_rows, dg, dwk);
  SEER_CUDA_CHECK_LAUNCH();
  if (c.has_q_proj()) {
    const int q_in = c.q_in_dim();
    dweight_kernel<<<dim3(unsigned(hq), unsigned((q_in + kWeightRowsPerBlock - 1) / kWeightRowsPerBlock)), threads,
                     0, stream>>>(work.q_pool.data(), hq, q_in, 1, 1, gw.dq_gate.data(), layout.total_rows, dg, dwq);
    SEER_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace seer::cuda
