// Element-wise and row-wise kernels of the Llama forward on the GPU (the GEMMs go to cuBLAS and
// attention to attention_cuda.h). Activations are bf16 except the residual stream, kept in fp32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace seer::cuda {

// out[t, :] = table[ids[t], :] (bf16 rows) added into nothing: written to the fp32 residual.
void embed_tokens(const int32_t* ids, int64_t tokens, const __nv_bfloat16* table, int hidden, int vocab,
                  float* residual, cudaStream_t stream);

// out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight, x fp32, out bf16.
void rms_norm(const float* x, const float* weight, int64_t tokens, int hidden, float eps, __nv_bfloat16* out,
              cudaStream_t stream);

// Splits fused qkv [T, (H_q + 2 H_kv) d] into q [T, H_q, d], k, v [T, H_kv, d], rotating q and k by
// RoPE at each token's position in its sequence (cos/sin table [positions][d/2], scaling folded in).
// When q_pre/k_pre are non-null they receive q and k before the rotation (the gate's inputs).
// With kv_at_position, token t's k and v go to row positions[t] of k and v (a KV cache read by
// position on the device, so that a captured decode step needs no new arguments), else to row t.
void split_qkv_rope(const __nv_bfloat16* qkv, int64_t tokens, const int32_t* positions, int q_heads, int kv_heads,
                    int head_dim, const float2* rope_table, __nv_bfloat16* q, __nv_bfloat16* k, __nv_bfloat16* v,
                    __nv_bfloat16* q_pre, __nv_bfloat16* k_pre, bool kv_at_position, cudaStream_t stream);

// h[t, :] = silu(gate_up[t, :I]) * gate_up[t, I:2I].
void swiglu(const __nv_bfloat16* gate_up, int64_t tokens, int intermediate, __nv_bfloat16* out, cudaStream_t stream);

// nll[r] = logsumexp(logits[r, :]) - logits[r, targets[r]] for `rows` fp32 rows of `vocab` logits.
void token_nll(const float* logits, const int32_t* targets, int64_t rows, int vocab, float* nll, cudaStream_t stream);

}  // namespace seer::cuda
