// Block masks of the training-free sparse-attention heuristics SeerAttention is compared with,
// built on the host at block granularity (64 tokens), each aiming at a target density of the causal
// block triangle:
//   StreamingLLM   the attention-sink block 0 plus a local window of the last w blocks
//   MInference     vertical-and-slash: key blocks (columns) and diagonals (offsets i - j) ranked by
//                  the last query block's attention (its ground-truth row), the top n of each kept
//   Quest          per key block the channel-wise min and max of k bound each query block's score
//                  (mean q): sum_c max(q_c kmax_c, q_c kmin_c); top-k of the bounds per row
#pragma once
#include <span>

#include "attention/block_mask.h"
#include "attention/head_dims.h"
#include "core/bf16.h"
#include "core/sequences.h"

namespace seer {

BlockMask streaming_mask(const BlockLayout& layout, double density);

// last_rows: per sequence and head, the ground-truth row of the last query block ([H, nb] per
// sequence, packed like the mask rows' [H, nb]).
BlockMask vertical_slash_mask(std::span<const float> last_rows, const BlockLayout& layout, double density);

// q [T, H_q, d] and k [T, H_kv, d] after RoPE.
BlockMask quest_mask(std::span<const bf16> q, std::span<const bf16> k, const Sequences& seqs, const HeadDims& dims,
                     double density);

}  // namespace seer
