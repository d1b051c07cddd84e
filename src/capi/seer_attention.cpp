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
  seer::cuda::DeviceLayout device;  // dense_forward checks its head count against the call's
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

extern "C" int seer_dense_forward(const seer_layout* layout, const void* q, const void* k, const void* v, void* out,
                                  float* lse, int dtype, int q_heads, int kv_heads, int head_dim, void* stream,
                                  char* error, size_t error_size) {
  try {
    SEER_CHECK(layout != nullptr, "seer_dense_forward: no layout");
    SEER_CHECK(dtype == SEER_BF16 || dtype == SEER_FP16, "seer_dense_forward: dtype must be SEER_BF16 or SEER_FP16, got ",
               dtype);
    const seer::HeadDims dims{q_heads, kv_heads, head_dim};  // validated by dense_forward
    const seer::cuda::AttentionArgs args{
        q, k, v, out, lse, dtype == SEER_BF16 ? seer::cuda::DType::bf16 : seer::cuda::DType::f16, dims};
    seer::cuda::dense_forward(args, layout->device, static_cast<cudaStream_t>(stream));
    return 0;
  } catch (const std::exception& e) {
    report(error, error_size, e.what());
    return -1;
  }
}
