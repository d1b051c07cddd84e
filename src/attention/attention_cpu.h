// CPU attention operators: the oracle for the CUDA kernels and the engine for small models.
//
// Layout: q [T, H_q, d], k and v [T, H_kv, d] (T = all tokens of all sequences), inputs float or
// bf16, arithmetic in float. Causal within each sequence; grouped-query heads read KV head h/g.
// Outputs: out [T, H_q, d] float; lse [H_q, T] float, the natural log-sum-exp of each row's scaled
// scores s = q.k / sqrt(d) (-inf and a zero output for a row that attends to nothing).
#pragma once
#include <span>

#include "attention/block_mask.h"
#include "attention/gt_pooling.h"
#include "attention/head_dims.h"
#include "core/sequences.h"

namespace seer {

// out = softmax(q kᵀ / √d + causal mask) v.
template <typename T>
void dense_attention_cpu(std::span<const T> q, std::span<const T> k, std::span<const T> v, const Sequences& seqs,
                         const HeadDims& dims, std::span<float> out, std::span<float> lse);

// Dense attention that also emits the ground-truth block map, streamed the way a FlashAttention
// kernel computes it: per row and key block keep the block's max scaled score M_j and its log-sum-exp
// S_j; once the row's final max m and sum l are known, its max probability in block j is
// exp(M_j - m) / l and its mass in block j exp(S_j - m) / l. Then gt[h, i, j] = the max of the
// first (GtPooling::max), the mean (mass) or the max (peak_mass) of the second over the rows of query
// block i, each row i normalized to sum 1 over j <= i, zero above the diagonal. gt is packed per
// sequence as [H_q, nb, nb] (BlockLayout::map_offset).
template <typename T>
void ground_truth_attention_cpu(std::span<const T> q, std::span<const T> k, std::span<const T> v,
                                const Sequences& seqs, const HeadDims& dims, int block, std::span<float> out,
                                std::span<float> lse, std::span<float> gt, GtPooling pooling = GtPooling::max);

// The same map from the full probability matrix, in double: the reference for the streaming version.
template <typename T>
void ground_truth_bruteforce_cpu(std::span<const T> q, std::span<const T> k, const Sequences& seqs,
                                 const HeadDims& dims, int block, std::span<double> gt,
                                 GtPooling pooling = GtPooling::max);

// Attention over the key blocks the mask selects, exactly dense attention with every other block
// masked out; causal masking applies inside the diagonal block only. Work is proportional to
// mask.nnz(). The mask must pass validate_block_mask (checked here).
template <typename T>
void block_sparse_attention_cpu(std::span<const T> q, std::span<const T> k, std::span<const T> v,
                                const Sequences& seqs, const HeadDims& dims, const BlockMask& mask,
                                std::span<float> out, std::span<float> lse);

}  // namespace seer
