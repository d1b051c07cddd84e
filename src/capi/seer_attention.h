/* C interface to seer's CUDA attention kernels, dense and block-sparse, for callers outside C++:
 * Python through ctypes (bench/gpu/sdpa_peer.py times them alternately with PyTorch's cuDNN
 * attention and FlexAttention in one process), or any language with a C FFI. Built as
 * libseer_attention.so where nvcc is found.
 *
 * Tensors are device pointers in seer's layout (src/cuda/attention_cuda.h): q and out
 * [T, q_heads, head_dim], k and v [T, kv_heads, head_dim], bf16 or fp16; lse [q_heads, T] float
 * (natural log). Several causal sequences are packed along the token axis. Every function reports a
 * failure through its return value and writes the reason, NUL-terminated and truncated to
 * error_size bytes, to `error` (which may be NULL). */
#ifndef SEER_ATTENTION_H
#define SEER_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SEER_API __attribute__((visibility("default")))

enum { SEER_BF16 = 0, SEER_FP16 = 1 };

typedef struct seer_layout seer_layout;

/* The device-side geometry of `count` sequences of `lengths` tokens for `q_heads` query heads, built
 * once per batch shape and reused by every call (it allocates on the current CUDA device). Returns
 * NULL on failure. */
SEER_API seer_layout* seer_layout_create(const int64_t* lengths, int count, int q_heads, char* error,
                                         size_t error_size);

/* Frees a layout (NULL is ignored) once the calls that use it have finished. */
SEER_API void seer_layout_destroy(seer_layout* layout);

/* Dense causal attention, enqueued on `stream` (a cudaStream_t; NULL: the legacy default stream).
 * head_dim 64 or 128, q_heads a multiple of kv_heads. Returns 0, or -1 on failure. */
SEER_API int seer_dense_forward(const seer_layout* layout, const void* q, const void* k, const void* v, void* out,
                                float* lse, int dtype, int q_heads, int kv_heads, int head_dim, void* stream,
                                char* error, size_t error_size);

typedef struct seer_mask seer_mask;

/* A block mask of 64x64 blocks for `layout`, copied to the device, in CSR form (src/attention/
 * block_mask.h): one row per (sequence, head, query block), sequence by sequence and, within a
 * sequence, head by head; indptr has rows + 1 entries from 0, indices lists each row's key blocks
 * (sequence-local, ascending, none past the row's own query block). Validated first. Returns NULL
 * on failure. */
SEER_API seer_mask* seer_mask_create(const seer_layout* layout, const int64_t* indptr, int64_t rows,
                                     const int32_t* indices, char* error, size_t error_size);

/* Frees a mask (NULL is ignored) once the calls that use it have finished. */
SEER_API void seer_mask_destroy(seer_mask* mask);

/* Block-sparse causal attention over the blocks `mask` (made for this layout) keeps, otherwise as
 * seer_dense_forward; a row that keeps no block gives zeros and an LSE of -infinity. Returns 0, or
 * -1 on failure. */
SEER_API int seer_block_sparse_forward(const seer_layout* layout, const seer_mask* mask, const void* q, const void* k,
                                       const void* v, void* out, float* lse, int dtype, int q_heads, int kv_heads,
                                       int head_dim, void* stream, char* error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif /* SEER_ATTENTION_H */
