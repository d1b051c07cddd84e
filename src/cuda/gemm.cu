#include "cuda/gemm.h"

#include "core/error.h"

namespace seer::cuda {
namespace {

// libcublasLt alone has no status-to-string function (that is libcublas's).
const char* status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed (out of GPU memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
  }
}

#define SEER_CUBLAS_CHECK(call)                                                                          \
  do {                                                                                                   \
    const cublasStatus_t seer_status_ = (call);                                                          \
    if (seer_status_ != CUBLAS_STATUS_SUCCESS)                                                           \
      ::seer::fail("cuBLASLt error at ", __FILE__, ":", __LINE__, ": ", #call, ": ", int(seer_status_), " (", \
                   status_name(seer_status_), ")");                                                      \
  } while (0)

template <typename V>
void set_op_attribute(cublasLtMatmulDesc_t op, cublasLtMatmulDescAttributes_t attribute, V value) {
  SEER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, attribute, &value, sizeof(value)));
}

}  // namespace

Gemm::Gemm(cudaStream_t stream, size_t workspace_bytes) : stream_(stream), workspace_(workspace_bytes) {
  SEER_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

Gemm::~Gemm() {
  for (auto& [shape, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.y);
    cublasLtMatrixLayoutDestroy(p.x);
    cublasLtMatrixLayoutDestroy(p.w);
    cublasLtMatmulDescDestroy(p.op);
  }
  if (handle_) cublasLtDestroy(handle_);
}

// cuBLASLt is column-major: row-major y [rows, out] is column-major y^T [out, rows] = w · x^T, where
// row-major w [out, in] is column-major [in, out] used transposed, and row-major x [rows, in] is
// column-major x^T [in, rows].
const Gemm::Plan& Gemm::plan(int64_t rows, int out, int in, GemmOut mode) {
  const auto key = std::make_tuple(rows, out, in, mode);
  if (const auto found = plans_.find(key); found != plans_.end()) return found->second;
  SEER_CHECK(rows > 0 && out > 0 && in > 0, "GEMM: empty shape ", rows, " x ", out, " x ", in);
  Plan p;
  SEER_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  set_op_attribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  set_op_attribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  const cudaDataType_t y_type = mode == GemmOut::bf16 ? CUDA_R_16BF : CUDA_R_32F;
  SEER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.w, CUDA_R_16BF, uint64_t(in), uint64_t(out), in));
  SEER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.x, CUDA_R_16BF, uint64_t(in), uint64_t(rows), in));
  SEER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.y, y_type, uint64_t(out), uint64_t(rows), out));
  cublasLtMatmulPreference_t preference = nullptr;
  SEER_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  const uint64_t workspace = workspace_.size();
  SEER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                         &workspace, sizeof(workspace)));
  cublasLtMatmulHeuristicResult_t best{};
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.w, p.x, p.y, p.y, preference, 1, &best, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  SEER_CUBLAS_CHECK(status);
  SEER_CHECK(found > 0, "cuBLASLt has no algorithm for a ", rows, " x ", out, " x ", in, " bf16 GEMM");
  p.algo = best.algo;
  return plans_.emplace(key, p).first->second;
}

void Gemm::operator()(const __nv_bfloat16* w, const __nv_bfloat16* x, void* y, int64_t rows, int out, int in,
                      GemmOut mode) {
  const Plan& p = plan(rows, out, in, mode);
  const float alpha = 1.0f, beta = mode == GemmOut::fp32_accumulate ? 1.0f : 0.0f;
  SEER_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.w, x, p.x, &beta, y, p.y, y, p.y, &p.algo,
                                   workspace_.data(), workspace_.size(), stream_));
}

}  // namespace seer::cuda
