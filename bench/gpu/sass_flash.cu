// The FlashAttention kernels whose SASS `scripts/sass_outline.sh bench/gpu/sass_flash.cu [NAME]`
// outlines (bf16, d = 128): block-sparse, dense and ground truth. Compiled only by that script.
#include "cuda/flash_fwd_dense.cuh"
#include "cuda/flash_fwd_sparse.cuh"

namespace seer::cuda::detail {
template __global__ void flash_fwd_sparse_kernel<__nv_bfloat16, 128>(const __grid_constant__ CUtensorMap,
                                                                     const __grid_constant__ CUtensorMap,
                                                                     const __grid_constant__ CUtensorMap,
                                                                     const FlashParams<__nv_bfloat16>, int);
template __global__ void flash_fwd_dense_kernel<__nv_bfloat16, 128, Variant::Dense, false>(
    const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap,
    const FlashParams<__nv_bfloat16>);
template __global__ void flash_fwd_dense_kernel<__nv_bfloat16, 128, Variant::GroundTruth, false>(
    const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap,
    const FlashParams<__nv_bfloat16>);
}  // namespace seer::cuda::detail
