// CUDA attention kernels (sm_90a): dense forward, dense + ground-truth block map, block-sparse.
// Each is checked against its CPU operator in src/attention/attention_cpu.h (tests/cuda).
//
// Same layout and semantics as the CPU operators: q [T, H_q, d], k and v [T, H_kv, d] in bf16 or
// fp16 on the device, several sequences through a DeviceLayout, causal, grouped-query attention
// without repeating K/V; out [T, H_q, d] in the input dtype; lse [H_q, T] float (natural log).
// Head dims 64 and 128; block size 64. Launches are asynchronous on `stream` and allocate nothing.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "attention/block_mask.h"
#include "attention/gt_pooling.h"
#include "attention/head_dims.h"
#include "core/sequences.h"
#include "cuda/device_buffer.h"

namespace seer::cuda {

enum class DType { bf16, f16 };

constexpr int kBlock = 64;  // the sparsity block: query and key blocks of 64 tokens

// Per-sequence geometry on the device, built once per batch shape (this allocates) and reused by
// every layer: sequence starts/lengths/block offsets and the work lists of (sequence, query block)
// and (sequence, pair of query blocks) in longest-first order.
struct DeviceLayout {
  int64_t tokens = 0;
  int64_t total_rows = 0;  // query blocks over all sequences
  int64_t max_blocks = 0;  // nb of the longest sequence
  int sequences = 0;
  BlockLayout host;  // the same layout on the host, for sizes
  DeviceBuffer<int32_t> seq_start, seq_len, seq_row_offset;
  DeviceBuffer<int64_t> seq_map_offset;      // per sequence, offset of its [H, nb, nb] map (H = q_heads)
  DeviceBuffer<int64_t> seq_scratch_offset;  // per sequence, offset of its [H, nb, len] ground-truth scratch
  DeviceBuffer<int2> work;                   // (sequence, query block), heaviest first
  DeviceBuffer<int2> tile_work;              // (sequence, 128-row query tile), heaviest first
  // The block-sparse kernel's counters: [0] the next (head, query block) item, [1] the producers that
  // have drawn their last. Zero between launches: zeroed once here, and reset by the launch's last
  // producer, so that a launch needs no memset of its own (and a CUDA graph replays it as it is).
  // Launches that share a layout must therefore be ordered (one stream).
  DeviceBuffer<int32_t> work_counter;
  int64_t scratch_elements = 0;

  static DeviceLayout create(const Sequences& seqs, int q_heads);
};

// A CSR block mask on the device (layout of attention/block_mask.h, int32 offsets).
struct DeviceMask {
  DeviceBuffer<int32_t> indptr, indices;
  int64_t rows = 0, nnz = 0;

  // Validates on the host (validate_block_mask) and uploads.
  static DeviceMask upload(const BlockMask& mask, const BlockLayout& layout);
  // Uninitialized storage for `max_nnz` entries, filled by the selection kernels.
  static DeviceMask with_capacity(int64_t rows, int64_t max_nnz);
  // The blocks the mask keeps (indptr[rows]) once `stream`, the one that filled it, gets there.
  // Synchronizes `stream`.
  int64_t kept_blocks(cudaStream_t stream) const;
};

struct AttentionArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  DType dtype = DType::bf16;
  HeadDims dims;
};

void dense_forward(const AttentionArgs& args, const DeviceLayout& layout, cudaStream_t stream);

// Dense forward that also writes gt [H_q, nb, nb] per sequence (layout.host.map_offset), pooled as
// `pooling` says (attention/gt_pooling.h), using `scratch` (layout.scratch_elements floats: each
// row's max score or log-sum-exp per key block, reduced to the map by a second kernel once every
// row's log-sum-exp is known).
void ground_truth_forward(const AttentionArgs& args, const DeviceLayout& layout, float* gt, float* scratch,
                          cudaStream_t stream, GtPooling pooling = GtPooling::max);

void block_sparse_forward(const AttentionArgs& args, const DeviceLayout& layout, const DeviceMask& mask,
                          cudaStream_t stream);

}  // namespace seer::cuda
