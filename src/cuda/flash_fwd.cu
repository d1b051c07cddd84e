// Launchers for the FlashAttention kernels: argument checks before launch, TMA descriptors,
// variant dispatch.
#include <algorithm>
#include <cmath>
#include <vector>

#include <cudaTypedefs.h>

#include <cstring>

#include "cuda/attention_cuda.h"
#include "cuda/flash_fwd_dense.cuh"
#include "cuda/flash_fwd_sparse.cuh"

namespace seer::cuda {
namespace {

using detail::FlashParams;
using detail::Variant;

void check_args(const AttentionArgs& a, const DeviceLayout& layout) {
  a.dims.validate();
  SEER_CHECK(a.dims.head_dim == 64 || a.dims.head_dim == 128, "CUDA attention supports head dims 64 and 128, got ",
             a.dims.head_dim);
  SEER_CHECK(a.q && a.k && a.v && a.out && a.lse, "CUDA attention: a null tensor pointer");
  SEER_CHECK(layout.host.heads == a.dims.q_heads, "device layout was built for ", layout.host.heads,
             " query heads, the call has ", a.dims.q_heads);
  SEER_CHECK(a.dims.q_heads <= 65535, "too many query heads for the grid: ", a.dims.q_heads);
  for (const void* ptr : {a.q, a.k, a.v, static_cast<const void*>(a.out)})
    SEER_CHECK(reinterpret_cast<uintptr_t>(ptr) % 16 == 0, "CUDA attention tensors must be 16-byte aligned");
}

template <typename T>
FlashParams<T> make_params(const AttentionArgs& a, const DeviceLayout& layout) {
  FlashParams<T> p{};
  p.q = static_cast<const T*>(a.q);
  p.k = static_cast<const T*>(a.k);
  p.v = static_cast<const T*>(a.v);
  p.out = static_cast<T*>(a.out);
  p.lse = a.lse;
  p.q_heads = a.dims.q_heads;
  p.kv_heads = a.dims.kv_heads;
  p.group = a.dims.group();
  p.tokens = layout.tokens;
  p.scale_log2 = float(1.4426950408889634 / std::sqrt(double(a.dims.head_dim)));
  p.seq_start = layout.seq_start.data();
  p.seq_len = layout.seq_len.data();
  p.seq_row_offset = layout.seq_row_offset.data();
  p.seq_map_offset = layout.seq_map_offset.data();
  p.seq_scratch_offset = layout.seq_scratch_offset.data();
  return p;
}

// cuTensorMapEncodeTiled through the runtime's driver entry point (no link against libcuda).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    SEER_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
    SEER_CHECK(fn && found == cudaDriverEntryPointSuccess, "cuTensorMapEncodeTiled is not available");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// [tokens, heads, d] 16-bit tensor as a 3-D TMA map with [64 tokens][1 head][64 columns] boxes in
// the 128-byte swizzle.
template <typename T>
CUtensorMap tokens_heads_dim_map(const void* data, int64_t tokens, int heads, int dim) {
  CUtensorMap map;
  std::memset(&map, 0, sizeof(map));
  const cuuint64_t dims[3] = {cuuint64_t(dim), cuuint64_t(heads), cuuint64_t(tokens)};
  const cuuint64_t strides[2] = {cuuint64_t(dim) * sizeof(T), cuuint64_t(heads) * dim * sizeof(T)};
  const cuuint32_t box[3] = {64, 1, 64};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUtensorMapDataType type =
      std::is_same_v<T, __nv_bfloat16> ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const CUresult status = tensor_map_encoder()(&map, type, 3, const_cast<void*>(data), dims, strides, box,
                                               element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                               CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                                               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  SEER_CHECK(status == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed (", int(status), ") for a [", tokens, ", ",
             heads, ", ", dim, "] tensor");
  return map;
}

// The block map from the forward's per-block row maxima or log-sum-exps and the rows' LSEs, summed
// (kSumRows) or maxed over rows: one 128-thread block per (query block, head), a block row of the
// map in shared memory.
template <typename T, bool kSumRows>
void launch_ground_truth_reduce(FlashParams<T> p, const DeviceLayout& layout, cudaStream_t stream) {
  const size_t smem = size_t(layout.max_blocks + 4) * sizeof(float);  // checked by ground_truth_forward
  static std::atomic<uint64_t> configured;
  once_per_device(configured, [] {
    SEER_CUDA_CHECK(cudaFuncSetAttribute(detail::ground_truth_reduce_kernel<T, kSumRows>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, detail::kMaxSharedBytes));
  });
  p.work = layout.work.data();
  const dim3 grid(unsigned(layout.work.size()), unsigned(p.q_heads));
  detail::ground_truth_reduce_kernel<T, kSumRows><<<grid, 128, smem, stream>>>(p);
}

template <typename T, int D, Variant V>
void launch(const AttentionArgs& a, FlashParams<T> p, const DeviceLayout& layout, cudaStream_t stream) {
  const CUtensorMap q_map = tokens_heads_dim_map<T>(a.q, layout.tokens, a.dims.q_heads, D);
  const CUtensorMap k_map = tokens_heads_dim_map<T>(a.k, layout.tokens, a.dims.kv_heads, D);
  const CUtensorMap v_map = tokens_heads_dim_map<T>(a.v, layout.tokens, a.dims.kv_heads, D);
  if constexpr (V == Variant::Sparse) {
    constexpr size_t smem = size_t(detail::SparseSmem<D>::kBytes);
    static std::atomic<uint64_t> configured;
    once_per_device(configured, [] {
      SEER_CUDA_CHECK(cudaFuncSetAttribute(detail::flash_fwd_sparse_kernel<T, D>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    });
    p.work = layout.work.data();
    p.work_counter = layout.work_counter.data();
    const int64_t items = layout.total_rows * p.q_heads;  // (head, query block) pairs
    // Each scheduler draws one past the end to learn that the work is done.
    SEER_CHECK(items + 2 * int64_t(detail::kMaxPersistentBlocks) <= int64_t(INT32_MAX),
               "block-sparse: too many (head, query block) items: ", items);
    // Persistent: one thread block per multiprocessor (its shared memory allows no second), two
    // consumers each, their schedulers drawing items from the counter.
    const int blocks =
        int(std::min<int64_t>({int64_t(sm_count()), int64_t(detail::kMaxPersistentBlocks), (items + 1) / 2}));
    detail::flash_fwd_sparse_kernel<T, D>
        <<<unsigned(blocks), detail::kSparseThreads, smem, stream>>>(q_map, k_map, v_map, p, int(items));
  } else {
    using Smem = detail::DenseSmem<D, detail::kDenseStages<D, V>>;
    const size_t smem = Smem::kBytes;
    p.work = layout.tile_work.data();
    const int64_t tiles = int64_t(layout.tile_work.size());
    // Thread blocks start in index order, grid x fastest. Head by head, the query tiles longest
    // first, the blocks running together share one KV head's K/V in L2; but a short grid then ends
    // on the last head's longest tiles. Up to 16 waves the heads go fastest instead, so that every
    // head's longest tiles start first: at 8k tokens (32/8 heads, d = 128, 15.5 waves) dense took
    // 2-3% less time, at d = 64 (9/3 heads, 4.4 waves) 12% less. Heads fastest at 16k and beyond,
    // and for the d = 64 ground truth at 32k (17.5 waves), took 3-12% more (bench/RESULTS.md, "Heads
    // fastest"). The order is a template parameter: read from a kernel argument, it cost the other
    // order 3% at d = 64.
    const auto run = [&]<bool kHeadsFastest>() {
      const auto kernel = detail::flash_fwd_dense_kernel<T, D, V, kHeadsFastest>;
      static std::atomic<uint64_t> configured;
      once_per_device(configured, [&] {
        SEER_CUDA_CHECK(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, detail::kMaxSharedBytes));
      });
      // (y is limited to 65535; the short grids' tiles stay below it.)
      const dim3 grid =
          kHeadsFastest ? dim3(unsigned(p.q_heads), unsigned(tiles)) : dim3(unsigned(tiles), unsigned(p.q_heads));
      kernel<<<grid, detail::kDenseThreads, smem, stream>>>(q_map, k_map, v_map, p);
    };
    if (tiles * p.q_heads <= 16 * int64_t(sm_count()))
      run.template operator()<true>();
    else
      run.template operator()<false>();
    if constexpr (is_ground_truth(V)) {
      SEER_CUDA_CHECK_LAUNCH();
      if (p.gt_sum_rows)
        launch_ground_truth_reduce<T, true>(p, layout, stream);
      else
        launch_ground_truth_reduce<T, false>(p, layout, stream);
    }
  }
  SEER_CUDA_CHECK_LAUNCH();
}

template <Variant V>
void dispatch(const AttentionArgs& a, const DeviceLayout& layout, cudaStream_t stream, float* gt, float* scratch,
              const DeviceMask* mask, bool gt_sum_rows = false) {
  check_args(a, layout);
  if (layout.total_rows == 0) return;
  const auto run = [&]<typename T>() {
    FlashParams<T> p = make_params<T>(a, layout);
    p.gt = gt;
    p.scratch = scratch;
    p.gt_sum_rows = gt_sum_rows;
    if (mask) {
      p.mask_indptr = mask->indptr.data();
      p.mask_indices = mask->indices.data();
    }
    if (a.dims.head_dim == 64)
      launch<T, 64, V>(a, p, layout, stream);
    else
      launch<T, 128, V>(a, p, layout, stream);
  };
  if (a.dtype == DType::bf16)
    run.template operator()<__nv_bfloat16>();
  else
    run.template operator()<__half>();
}

}  // namespace

void dense_forward(const AttentionArgs& args, const DeviceLayout& layout, cudaStream_t stream) {
  dispatch<Variant::Dense>(args, layout, stream, nullptr, nullptr, nullptr);
}

void ground_truth_forward(const AttentionArgs& args, const DeviceLayout& layout, float* gt, float* scratch,
                          cudaStream_t stream, GtPooling pooling) {
  SEER_CHECK(gt && scratch, "ground truth: null gt or scratch pointer");
  // Before any launch: the reduction keeps a row of the block map in shared memory.
  SEER_CHECK(size_t(layout.max_blocks + 4) * sizeof(float) <= size_t(detail::kMaxSharedBytes), "ground truth: ",
             layout.max_blocks, " key blocks do not fit the block-map row in shared memory");
  if (gt_pooling_uses_mass(pooling))
    dispatch<Variant::GroundTruthMass>(args, layout, stream, gt, scratch, nullptr, gt_pooling_sums_rows(pooling));
  else
    dispatch<Variant::GroundTruth>(args, layout, stream, gt, scratch, nullptr);
}

void block_sparse_forward(const AttentionArgs& args, const DeviceLayout& layout, const DeviceMask& mask,
                          cudaStream_t stream) {
  SEER_CHECK(mask.rows == layout.total_rows * args.dims.q_heads, "block mask has ", mask.rows,
             " rows, the call needs ", layout.total_rows * args.dims.q_heads);
  dispatch<Variant::Sparse>(args, layout, stream, nullptr, nullptr, &mask);
}

DeviceLayout DeviceLayout::create(const Sequences& seqs, int q_heads) {
  DeviceLayout d{.host = BlockLayout(seqs, kBlock, q_heads)};
  d.tokens = seqs.tokens();
  d.sequences = int(seqs.count());
  d.total_rows = d.host.total_rows();
  SEER_CHECK(d.tokens < (int64_t(1) << 31), "CUDA attention: ", d.tokens, " tokens exceed the int32 token index");
  SEER_CHECK(d.total_rows <= int64_t(INT32_MAX), "too many query blocks: ", d.total_rows);
  std::vector<int32_t> start, len, row_offset;
  std::vector<int64_t> scratch_offset{0};
  std::vector<int2> work, tile_work;
  for (int64_t s = 0; s < seqs.count(); ++s) {
    const int64_t nb = d.host.blocks[size_t(s)];
    start.push_back(int32_t(seqs.start(s)));
    len.push_back(int32_t(seqs.length(s)));
    row_offset.push_back(int32_t(d.host.row_offset[size_t(s)]));
    scratch_offset.push_back(scratch_offset.back() + int64_t(q_heads) * seqs.length(s) * nb);
    d.max_blocks = std::max(d.max_blocks, nb);
    for (int64_t i = 0; i < nb; ++i) work.push_back(int2{int(s), int(i)});
    for (int64_t i = 0; i < (nb + 1) / 2; ++i) tile_work.push_back(int2{int(s), int(i)});
  }
  // Longest first: causal query block i visits i + 1 key blocks.
  const auto longest_first = [](int2 a, int2 b) { return a.y > b.y; };
  std::stable_sort(work.begin(), work.end(), longest_first);
  std::stable_sort(tile_work.begin(), tile_work.end(), longest_first);
  d.scratch_elements = scratch_offset.back();
  scratch_offset.pop_back();
  d.seq_start = DeviceBuffer<int32_t>::upload(start);
  d.seq_len = DeviceBuffer<int32_t>::upload(len);
  d.seq_row_offset = DeviceBuffer<int32_t>::upload(row_offset);
  d.seq_map_offset = DeviceBuffer<int64_t>::upload(std::span(d.host.map_offset).first(size_t(seqs.count())));
  d.seq_scratch_offset = DeviceBuffer<int64_t>::upload(scratch_offset);
  d.work = DeviceBuffer<int2>::upload(work);
  d.tile_work = DeviceBuffer<int2>::upload(tile_work);
  d.work_counter = DeviceBuffer<int32_t>::upload(std::vector<int32_t>{0, 0});  // complete on return, as the others
  return d;
}

DeviceMask DeviceMask::upload(const BlockMask& mask, const BlockLayout& layout) {
  validate_block_mask(mask, layout);
  SEER_CHECK(mask.nnz() < int64_t(INT32_MAX), "block mask has too many entries for int32 offsets: ", mask.nnz());
  DeviceMask d;
  d.rows = mask.rows();
  d.nnz = mask.nnz();
  std::vector<int32_t> indptr(mask.indptr.begin(), mask.indptr.end());
  d.indptr = DeviceBuffer<int32_t>::upload(indptr);
  d.indices = DeviceBuffer<int32_t>::upload(mask.indices);
  return d;
}

int64_t DeviceMask::kept_blocks(cudaStream_t stream) const {
  int32_t kept = 0;
  SEER_CUDA_CHECK(cudaMemcpyAsync(&kept, indptr.data() + rows, sizeof kept, cudaMemcpyDeviceToHost, stream));
  SEER_CUDA_CHECK(cudaStreamSynchronize(stream));
  return kept;
}

DeviceMask DeviceMask::with_capacity(int64_t rows, int64_t max_nnz) {
  SEER_CHECK(max_nnz < int64_t(INT32_MAX), "block mask capacity too large for int32 offsets: ", max_nnz);
  DeviceMask d;
  d.rows = rows;
  d.nnz = max_nnz;
  d.indptr = DeviceBuffer<int32_t>(size_t(rows + 1));
  d.indices = DeviceBuffer<int32_t>(size_t(std::max<int64_t>(max_nnz, 1)));
  return d;
}

}  // namespace seer::cuda
