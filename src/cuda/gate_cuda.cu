#include <cub/device/device_scan.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <vector>

#include "cuda/gate_cuda.h"

namespace seer::cuda {
namespace {

constexpr int kRowsPerProjection = 16;
constexpr int kScoreTile = 32;

__device__ __forceinline__ float load_float(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float load_float(const __half* p) { return __half2float(*p); }

// The sequence owning global block row `row` (sequences are few; a linear scan is enough).
__device__ __forceinline__ int sequence_of(const int32_t* row_offset, int sequences, int64_t row) {
  int s = 0;
  while (s + 1 < sequences && row_offset[s + 1] <= row) ++s;
  return s;
}

// One thread block per (global block row, head): heads [0, H_q) pool q by mean, heads
// [H_q, H_q + H_kv) pool k by max, min and mean. Threads run along the head dimension (coalesced).
template <typename T>
__global__ void pool_kernel(const T* q, const T* k, const int32_t* seq_start, const int32_t* seq_len,
                            const int32_t* row_offset, int sequences, int hq, int hkv, int d, float* q_pool,
                            float* k_pool) {
  const int64_t row = blockIdx.x;
  const int head = blockIdx.y;
  const int s = sequence_of(row_offset, sequences, row);
  const int i = int(row - row_offset[s]);
  const int64_t first = seq_start[s] + int64_t(i) * 64;
  const int count = min(64, seq_len[s] - i * 64);
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    if (head < hq) {
      float sum = 0.f;
      for (int t = 0; t < count; ++t) sum += load_float(q + ((first + t) * hq + head) * d + c);
      q_pool[(row * hq + head) * d + c] = sum / float(count);
    } else {
      const int kh = head - hq;
      float mx = -INFINITY, mn = INFINITY, sum = 0.f;
      for (int t = 0; t < count; ++t) {
        const float x = load_float(k + ((first + t) * hkv + kh) * d + c);
        mx = fmaxf(mx, x);
        mn = fminf(mn, x);
        sum += x;
      }
      float* dst = k_pool + (row * hkv + kh) * 3 * d;
      dst[c] = mx;
      dst[d + c] = mn;
      dst[2 * d + c] = sum / float(count);
    }
  }
}

// grid (row groups, H_q, 2): z = 0 projects q (or copies it when d_g == d), z = 1 projects k, both
// then rotated by RoPE at their block's first position. Output [H_q, rows, d_g].
__global__ void project_kernel(const float* q_pool, const float* k_pool, const float* wq, const float* wk,
                               const float2* rope, const int32_t* row_offset, int sequences, int64_t rows, int hq,
                               int hkv, int d, int dg, float* q_gate, float* k_gate) {
  extern __shared__ float smem[];
  const bool is_k = blockIdx.z == 1;
  const int h = blockIdx.y, in_dim = is_k ? 3 * d : d;
  float* in = smem;                                   // [16][in_dim]
  float* out = smem + kRowsPerProjection * 3 * d;     // [16][dg]
  const int64_t row0 = int64_t(blockIdx.x) * kRowsPerProjection;
  const int n_rows = rows - row0 < kRowsPerProjection ? int(rows - row0) : kRowsPerProjection;
  const int kvh = h / (hq / hkv);
  for (int e = threadIdx.x; e < n_rows * in_dim; e += blockDim.x) {
    const int r = e / in_dim, c = e % in_dim;
    in[r * in_dim + c] = is_k ? k_pool[((row0 + r) * hkv + kvh) * 3 * d + c] : q_pool[((row0 + r) * hq + h) * d + c];
  }
  __syncthreads();
  const float* w = is_k ? wk + int64_t(h) * 3 * d * dg : (wq ? wq + int64_t(h) * d * dg : nullptr);
  for (int x = threadIdx.x; x < dg; x += blockDim.x) {
    float acc[kRowsPerProjection];
#pragma unroll
    for (int r = 0; r < kRowsPerProjection; ++r) acc[r] = 0.f;
    if (w) {
      for (int c = 0; c < in_dim; ++c) {
        const float wc = w[int64_t(c) * dg + x];
#pragma unroll
        for (int r = 0; r < kRowsPerProjection; ++r) acc[r] += in[r * in_dim + c] * wc;
      }
    } else {
#pragma unroll
      for (int r = 0; r < kRowsPerProjection; ++r) acc[r] = in[r * in_dim + x];
    }
    for (int r = 0; r < n_rows; ++r) out[r * dg + x] = acc[r];
  }
  __syncthreads();
  const int half = dg / 2;
  float* dst = (is_k ? k_gate : q_gate) + (int64_t(h) * rows + row0) * dg;
  for (int e = threadIdx.x; e < n_rows * dg; e += blockDim.x) {
    const int r = e / dg, x = e % dg;
    const int s = sequence_of(row_offset, sequences, row0 + r);
    const int64_t block = row0 + r - row_offset[s];
    const float2 cs = rope[block * half + (x % half)];
    const float* v = out + r * dg;
    dst[int64_t(r) * dg + x] = x < half ? v[x] * cs.x - v[x + half] * cs.y : v[x] * cs.x + v[x - half] * cs.y;
  }
}

// grid (tile pairs of the longest sequence, H_q, sequences); 32x32 tiles, 256 threads x 4 outputs.
__global__ void scores_kernel(const float* q_gate, const float* k_gate, const int32_t* seq_len,
                              const int32_t* row_offset, const int64_t* map_offset, int64_t rows, int dg,
                              float scale, float* logits) {
  extern __shared__ float smem[];
  const int s = blockIdx.z, h = blockIdx.y;
  const int nb = (seq_len[s] + 63) / 64;
  const int tiles = (nb + kScoreTile - 1) / kScoreTile;
  const int ti = blockIdx.x / tiles, tj = blockIdx.x % tiles;
  if (ti >= tiles) return;
  float* map = logits + map_offset[s] + int64_t(h) * nb * nb;
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  if (tj > ti) {  // entirely above the diagonal
    for (int u = 0; u < 4; ++u) {
      const int i = ti * kScoreTile + ty * 4 + u, j = tj * kScoreTile + tx;
      if (i < nb && j < nb) map[int64_t(i) * nb + j] = -INFINITY;
    }
    return;
  }
  const int stride = dg + 1;  // padded rows: no bank conflicts on the column reads
  float* qs = smem;
  float* ks = smem + kScoreTile * stride;
  const int64_t base = int64_t(h) * rows + row_offset[s];
  for (int e = threadIdx.x; e < kScoreTile * dg; e += blockDim.x) {
    const int r = e / dg, x = e % dg;
    const int i = ti * kScoreTile + r, j = tj * kScoreTile + r;
    qs[r * stride + x] = i < nb ? q_gate[(base + i) * dg + x] : 0.f;
    ks[r * stride + x] = j < nb ? k_gate[(base + j) * dg + x] : 0.f;
  }
  __syncthreads();
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int x = 0; x < dg; ++x) {
    const float kv = ks[tx * stride + x];
#pragma unroll
    for (int u = 0; u < 4; ++u) acc[u] += qs[(ty * 4 + u) * stride + x] * kv;
  }
  for (int u = 0; u < 4; ++u) {
    const int i = ti * kScoreTile + ty * 4 + u, j = tj * kScoreTile + tx;
    if (i < nb && j < nb) map[int64_t(i) * nb + j] = j <= i ? acc[u] * scale : -INFINITY;
  }
}

// ---- selection -------------------------------------------------------------------------------

// Order-preserving map of floats to unsigned keys (-0 folded into +0 so that they tie, as on the CPU).
__device__ __forceinline__ uint32_t order_key(float x) {
  const uint32_t u = __float_as_uint(x + 0.0f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct SelectArgs {
  const float* logits;
  const int32_t* seq_len;
  const int32_t* row_offset;
  const int64_t* map_offset;
  int sequences, hq;
  int64_t total_rows;  // mask rows = block rows x H_q
  int method;          // 0 top-k, 1 threshold
  double density, threshold;
  int dense_last, keep_sink, local_blocks;
  int4* row_cut;
  int32_t* counts;
  const int32_t* indptr;
  int32_t* indices;
};

struct RowView {
  const float* values;
  int i, nb;
};

__device__ RowView row_view(const SelectArgs& a, int64_t row) {
  int s = 0;
  while (s + 1 < a.sequences && int64_t(a.row_offset[s + 1]) * a.hq <= row) ++s;
  const int nb = (a.seq_len[s] + 63) / 64;
  const int64_t local = row - int64_t(a.row_offset[s]) * a.hq;
  const int h = int(local / nb), i = int(local % nb);
  return {a.logits + a.map_offset[s] + (int64_t(h) * nb + i) * nb, i, nb};
}

// Warp-wide radix select of the k-th largest key among values[0..n): returns (cut key, how many of
// the keys equal to the cut are kept, lowest indices first).
__device__ int2 radix_select(const float* values, int n, int k, int* hist) {
  const int lane = threadIdx.x % 32;
  uint32_t prefix = 0, mask = 0;
  int remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = lane; b < 256; b += 32) hist[b] = 0;
    __syncwarp();
    for (int j = lane; j < n; j += 32) {
      const uint32_t key = order_key(values[j]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255], 1);
    }
    __syncwarp();
    // Lane L owns bins 255-8L .. 248-8L; find, from the top, the bin holding the remaining-th key.
    int mine[8], lane_total = 0;
#pragma unroll
    for (int b = 0; b < 8; ++b) lane_total += (mine[b] = hist[255 - 8 * lane - b]);
    int before = lane_total;  // inclusive scan over lanes, then made exclusive
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
      const int x = __shfl_up_sync(0xffffffffu, before, off);
      if (lane >= off) before += x;
    }
    before -= lane_total;
    const bool here = before < remaining && remaining <= before + lane_total;
    const int owner = __ffs(__ballot_sync(0xffffffffu, here)) - 1;
    int bin = 0, above = 0;
    if (lane == owner) {
      int cum = before;
      for (int b = 0; b < 8; ++b) {
        if (cum + mine[b] >= remaining) {
          bin = 255 - 8 * lane - b;
          break;
        }
        cum += mine[b];
      }
      above = cum;
    }
    bin = __shfl_sync(0xffffffffu, bin, owner);
    above = __shfl_sync(0xffffffffu, above, owner);
    remaining -= above;
    prefix |= uint32_t(bin) << shift;
    mask |= 0xffu << shift;
    __syncwarp();
  }
  return make_int2(int(prefix), remaining);
}

// Softmax statistics of values[0..n) in double, reduced in a fixed order (both phases agree).
__device__ double2 row_softmax_stats(const float* values, int n, int* best) {
  const int lane = threadIdx.x % 32;
  float m = -INFINITY;
  int arg = n;
  for (int j = lane; j < n; j += 32)
    if (values[j] > m) m = values[j], arg = j;
  for (int off = 16; off > 0; off /= 2) {
    const float om = __shfl_xor_sync(0xffffffffu, m, off);
    const int oa = __shfl_xor_sync(0xffffffffu, arg, off);
    if (om > m || (om == m && oa < arg)) m = om, arg = oa;
  }
  double sum = 0;
  for (int j = lane; j < n; j += 32) sum += exp(double(values[j]) - double(m));
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  *best = arg;
  return make_double2(double(m), sum);
}

// Phase 0 (kEmit = false): decide each row's cut and count its blocks. Phase 1: write the indices.
// One warp per mask row; indices come out sorted because j is scanned in order.
template <bool kEmit>
__global__ void select_kernel(const SelectArgs a) {
  __shared__ int hist[4][256];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 4 + warp;
  if (!kEmit && row == 0 && lane == 0) a.counts[a.total_rows] = 0;
  if (row >= a.total_rows) return;
  const RowView r = row_view(a, row);
  const int n = r.i + 1;
  const bool dense_row = r.i >= r.nb - a.dense_last;
  int2 cut = make_int2(0, 0);
  double2 stats = make_double2(0, 0);
  int best = 0;
  if (!dense_row) {
    if (a.method == 0) {
      if constexpr (kEmit) {
        cut = make_int2(a.row_cut[row].x, a.row_cut[row].y);
      } else {
        const int k = max(1, int(floor((1.0 - sqrt(1.0 - a.density)) * double(r.nb))));
        cut = radix_select(r.values, n, min(k, n), hist[warp]);
      }
    } else {
      stats = row_softmax_stats(r.values, n, &best);
    }
  }
  int written = 0, ties_seen = 0;
  const int64_t out = kEmit ? a.indptr[row] : 0;
  for (int j0 = 0; j0 < n; j0 += 32) {
    const int j = j0 + lane;
    bool keep = false, tie = false;
    if (j < n) {
      if (dense_row || (a.keep_sink && j == 0) || j > r.i - a.local_blocks) keep = true;
      if (a.method == 0) {
        const uint32_t key = order_key(r.values[j]);
        keep |= key > uint32_t(cut.x);
        tie = key == uint32_t(cut.x);
      } else {
        keep |= j == best || exp(double(r.values[j]) - stats.x) / stats.y > a.threshold;
      }
    }
    // Ties at the cut: the lowest indices, up to the number the cut left over.
    const uint32_t tie_mask = __ballot_sync(0xffffffffu, tie);
    const int tie_rank = ties_seen + __popc(tie_mask & ((1u << lane) - 1));
    if (!dense_row && a.method == 0 && tie && tie_rank < cut.y) keep = true;
    ties_seen += __popc(tie_mask);
    const uint32_t keep_mask = __ballot_sync(0xffffffffu, keep);
    if (kEmit && keep) a.indices[out + written + __popc(keep_mask & ((1u << lane) - 1))] = j;
    written += __popc(keep_mask);
  }
  if (!kEmit && lane == 0) {
    a.counts[row] = written;
    if (a.method == 0) a.row_cut[row] = make_int4(cut.x, cut.y, 0, written);
  }
}

template <typename T>
void launch_pool(const void* q_pre, const void* k_pre, const DeviceLayout& layout, const GateConfig& c,
                 GateWorkspace& w, cudaStream_t stream) {
  const dim3 grid(unsigned(layout.total_rows), unsigned(c.heads.q_heads + c.heads.kv_heads));
  pool_kernel<T><<<grid, 128, 0, stream>>>(static_cast<const T*>(q_pre), static_cast<const T*>(k_pre),
                                           layout.seq_start.data(), layout.seq_len.data(),
                                           layout.seq_row_offset.data(), layout.sequences, c.heads.q_heads,
                                           c.heads.kv_heads, c.heads.head_dim, w.q_pool.data(), w.k_pool.data());
  SEER_CUDA_CHECK_LAUNCH();
}

}  // namespace

DeviceGate DeviceGate::upload(const GateWeights<float>& weights, const RopeConfig& rope_config, int64_t max_blocks) {
  weights.validate();
  const GateConfig& c = weights.config;
  SEER_CHECK(c.block == kBlock, "the CUDA gate supports block size ", kBlock, ", got ", c.block);
  SEER_CHECK(c.gate_dim <= 256, "the CUDA gate supports gate dims up to 256, got ", c.gate_dim);
  DeviceGate g{c};
  g.wk = DeviceBuffer<float>::upload(weights.wk);
  if (!weights.wq.empty()) g.wq = DeviceBuffer<float>::upload(weights.wq);
  const Rope rope(rope_config, c.gate_dim);
  const int half = c.gate_dim / 2;
  std::vector<float2> table(size_t(max_blocks * half));
  for (int64_t i = 0; i < max_blocks; ++i)
    for (int x = 0; x < half; ++x) {
      const double angle = double(i * kBlock) * rope.inv_freq()[size_t(x)];
      table[size_t(i * half + x)] = make_float2(float(std::cos(angle) * rope.attention_scaling()),
                                                float(std::sin(angle) * rope.attention_scaling()));
    }
  g.rope = DeviceBuffer<float2>::upload(table);
  g.rope_blocks = max_blocks;
  return g;
}

GateWorkspace GateWorkspace::create(const DeviceLayout& layout, const GateConfig& c) {
  const size_t rows = size_t(layout.total_rows);
  return GateWorkspace{DeviceBuffer<float>(rows * c.heads.q_heads * c.heads.head_dim),
                       DeviceBuffer<float>(rows * c.heads.kv_heads * 3 * c.heads.head_dim),
                       DeviceBuffer<float>(rows * c.heads.q_heads * c.gate_dim),
                       DeviceBuffer<float>(rows * c.heads.q_heads * c.gate_dim)};
}

void gate_forward(const void* q_pre, const void* k_pre, DType dtype, const DeviceLayout& layout,
                  const DeviceGate& gate, GateWorkspace& work, float* logits, cudaStream_t stream) {
  const GateConfig& c = gate.config;
  SEER_CHECK(q_pre && k_pre && logits, "gate: null pointer");
  SEER_CHECK(layout.host.heads == c.heads.q_heads, "gate: layout built for ", layout.host.heads,
             " heads, gate has ", c.heads.q_heads);
  SEER_CHECK(layout.max_blocks <= gate.rope_blocks, "gate: sequence of ", layout.max_blocks,
             " blocks exceeds the RoPE table (", gate.rope_blocks, " blocks)");
  SEER_CHECK(work.q_gate.size() == size_t(layout.total_rows) * c.heads.q_heads * c.gate_dim,
             "gate: workspace was built for another layout");
  if (layout.total_rows == 0) return;
  if (dtype == DType::bf16)
    launch_pool<__nv_bfloat16>(q_pre, k_pre, layout, c, work, stream);
  else
    launch_pool<__half>(q_pre, k_pre, layout, c, work, stream);

  const int d = c.heads.head_dim, dg = c.gate_dim;
  const size_t project_smem = sizeof(float) * kRowsPerProjection * (3 * d + dg);
  SEER_CHECK(project_smem <= 200 * 1024, "gate: head dim ", d, " too large for the projection kernel");
  static const bool configured = [] {
    SEER_CUDA_CHECK(cudaFuncSetAttribute(project_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    SEER_CUDA_CHECK(cudaFuncSetAttribute(scores_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024));
    return true;
  }();
  (void)configured;
  const dim3 pgrid(unsigned((layout.total_rows + kRowsPerProjection - 1) / kRowsPerProjection),
                   unsigned(c.heads.q_heads), 2);
  project_kernel<<<pgrid, 128, project_smem, stream>>>(
      work.q_pool.data(), work.k_pool.data(), c.has_q_proj() ? gate.wq.data() : nullptr, gate.wk.data(),
      gate.rope.data(), layout.seq_row_offset.data(), layout.sequences, layout.total_rows, c.heads.q_heads,
      c.heads.kv_heads, d, dg, work.q_gate.data(), work.k_gate.data());
  SEER_CUDA_CHECK_LAUNCH();

  const int tiles = int((layout.max_blocks + kScoreTile - 1) / kScoreTile);
  const dim3 sgrid(unsigned(tiles * tiles), unsigned(c.heads.q_heads), unsigned(layout.sequences));
  const size_t score_smem = sizeof(float) * 2 * kScoreTile * (dg + 1);
  scores_kernel<<<sgrid, 256, score_smem, stream>>>(work.q_gate.data(), work.k_gate.data(), layout.seq_len.data(),
                                                    layout.seq_row_offset.data(), layout.seq_map_offset.data(),
                                                    layout.total_rows, dg, float(1.0 / std::sqrt(double(dg))),
                                                    logits);
  SEER_CUDA_CHECK_LAUNCH();
}

SelectionWorkspace SelectionWorkspace::create(const DeviceLayout& layout, int q_heads) {
  const int64_t rows = layout.total_rows * q_heads;
  SelectionWorkspace w{DeviceBuffer<int4>(size_t(rows)), DeviceBuffer<int32_t>(size_t(rows + 1)), {}};
  size_t temp_bytes = 0;
  SEER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, temp_bytes, w.counts.data(), w.counts.data(), int(rows + 1)));
  w.scan_temp = DeviceBuffer<unsigned char>(temp_bytes);
  return w;
}

void select_blocks(const float* logits, const DeviceLayout& layout, int q_heads, const SelectionOptions& options,
                   SelectionWorkspace& work, DeviceMask& mask, cudaStream_t stream) {
  options.validate();
  const int64_t rows = layout.total_rows * q_heads;
  SEER_CHECK(mask.rows == rows, "selection: mask has ", mask.rows, " rows, expected ", rows);
  SEER_CHECK(mask.indices.size() >= size_t(layout.host.causal_pairs()),
             "selection: mask capacity below the causal block count");
  SEER_CHECK(work.counts.size() == size_t(rows + 1), "selection: workspace was built for another layout");
  if (rows == 0) return;
  SelectArgs a{logits,
               layout.seq_len.data(),
               layout.seq_row_offset.data(),
               layout.seq_map_offset.data(),
               layout.sequences,
               q_heads,
               rows,
               options.method == SelectionOptions::Method::top_k ? 0 : 1,
               options.density,
               options.threshold,
               options.dense_last_blocks,
               int(options.keep_sink),
               options.local_blocks,
               work.row_cut.data(),
               work.counts.data(),
               mask.indptr.data(),
               mask.indices.data()};
  const unsigned blocks = unsigned((rows + 3) / 4);
  select_kernel<false><<<blocks, 128, 0, stream>>>(a);
  SEER_CUDA_CHECK_LAUNCH();
  size_t temp_bytes = work.scan_temp.size();
  SEER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(work.scan_temp.data(), temp_bytes, work.counts.data(),
                                                mask.indptr.data(), int(rows + 1), stream));
  select_kernel<true><<<blocks, 128, 0, stream>>>(a);
  SEER_CUDA_CHECK_LAUNCH();
}

}  // namespace seer::cuda
