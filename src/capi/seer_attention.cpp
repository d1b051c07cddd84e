// The C interface (seer_attention.h) over seer::cuda: C++ exceptions become return values and
// messages, so that no exception crosses into a C or Python caller.
#include "capi/seer_attention.h"

#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/attention_cuda.h"

struct seer_layout {
  seer::cuda::DeviceLayout device;  // the forwards check its head count against the call's
};

struct seer_mask {
  const seer_layout* layout;  // the one it was validated against
  seer::cuda::DeviceMask device;
};

namespace {

void report(char* error, size_t error_size, const char* what) {
  if (error == nullptr || error_size == 0) return;
  std::strncpy(error, what, error_size - 1);
  error[error_size - 1] = '\0';
}

}  // namespace

extern "C" seer_layout* seer_layout_create(const int64_t* lengths, int count, int q_heads, char* error,
                                           size_t error_size) {
  try {
    SEER_CHECK(lengths != nullptr && count > 0, "seer_layout_create: need at least one sequence length");
    SEER_CHECK(q_heads > 0, "seer_layout_create: q_heads must be positive, got ", q_heads);
    const seer::Sequences seqs = seer::Sequences::from_lengths(std::vector<int64_t>(lengths, lengths + count));
    return new seer_layout{seer::cuda::DeviceLayout::create(seqs, q_heads)};
  } catch (const std::exception& e) {
    report(error, error_size, e.what());
    return nullptr;
  }
}

extern "C" void seer_layout_destroy(seer_layout* layout) { delete layout; }

extern "C" seer_mask* seer_mask_create(const seer_layout* layout, const int64_t* indptr, int64_t rows,
                                       const int32_t* indices, char* error, size_t error_size) {
  try {
    SEER_CHECK(layout != nullptr, "seer_mask_create: no layout");
    SEER_CHECK(indptr != nullptr && rows >= 0, "seer_mask_create: need indptr with rows + 1 entries");
    const seer::BlockLayout& host = layout->device.host;
    SEER_CHECK(rows == host.total_rows() * host.heads, "seer_mask_create: the layout has ",
               host.total_rows() * host.heads, " (sequence, head, query block) rows, the mask ", rows);
    seer::BlockMask mask{int(seer::cuda::kBlock), host.heads, std::vector<int64_t>(indptr, indptr + rows + 1), {}};
    const int64_t nnz = mask.indptr.back();
    SEER_CHECK(nnz >= 0 && mask.indptr.front() == 0, "seer_mask_create: indptr must run from 0 to nnz >= 0");
    SEER_CHECK(nnz == 0 || indices != nullptr, "seer_mask_create: no indices");
    if (nnz > 0) mask.indices.assign(indices, indices + nnz);
    return new seer_mask{layout, seer::cuda::DeviceMask::upload(mask, host)};  // validates the rest
  } catch (const std::exception& e) {
    report(error, error_size, e.what());
    return nullptr;
  }
}

extern "C" void seer_mask_destroy(seer_mask* mask) { delete mask; }

namespace {

seer::cuda::AttentionArgs attention_args(const void* q, const void* k, const void* v, void* out, float* lse, int dtype,
                                         int q_heads, int kv_heads, int head_dim) {
  SEER_CHECK(dtype == SEER_BF16 || dtype == SEER_FP16, "dtype must be SEER_BF16 or SEER_FP16, got ", dtype);
  // The head counts and head dim are validated by the forwards.
  return {q,
          k,
          v,
          out,
          lse,
          dtype == SEER_BF16 ? seer::cuda::DType::bf16 : seer::cuda::DType::f16,
          seer::HeadDims{q_heads, kv_heads, head_dim}};
}

}  // namespace

extern "C" int seer_block_sparse_forward(const seer_layout* layout, const seer_mask* mask, const void* q, const void* k,
                                         const void* v, void* out, float* lse, int dtype, int q_heads, int kv_heads,
                                         int head_dim, void* stream, char* error, size_t error_size) {
  try {
    SEER_CHECK(layout != nullptr && mask != nullptr, "seer_block_sparse_forward: no layout or no mask");
    SEER_CHECK(mask->layout == layout, "seer_block_sparse_forward: the mask was made for another layout");
    seer::cuda::block_sparse_forward(attention_args(q, k, v, out, lse, dtype, q_heads, kv_heads, head_dim),
                                     layout->device, mask->device, static_cast<cudaStream_t>(stream));
    return 0;
  } catch (const std::exception& e) {
    report(error, error_size, e.what());
    return -1;
  }
}

extern "C" int seer_dense_forward(const seer_layout* layout, const void* q, const void* k, const void* v, void* out,
                                  float* lse, int dtype, int q_heads, int kv_heads, int head_dim, void* stream,
                                  char* error, size_t error_size) {
  try {
    SEER_CHECK(layout != nullptr, "seer_dense_forward: no layout");
    seer::cuda::dense_forward(attention_args(q, k, v, out, lse, dtype, q_heads, kv_heads, head_dim), layout->device,
                              static_cast<cudaStream_t>(stream));
    return 0;
  } catch (const std::exception& e) {
    report(error, error_size, e.what());
    return -1;
  }
}
