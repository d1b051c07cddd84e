// Tensor parallelism over `ranks` devices (Megatron-LM's split of a transformer layer).
//
// Rank r holds a contiguous range of KV heads and the query heads that read them, so a GQA group
// never straddles two ranks: attention, the AttnGate, block selection and the block-sparse kernel
// run on each rank's own heads alone (SeerAttention's sparsity is per head), and so does its KV
// cache. It also holds a contiguous range of the MLP's intermediate features.
//
// Per layer: W_qkv and W_gate/W_up are split by output rows (column-parallel: each rank computes
// its heads' q, k, v and its features' SwiGLU from the full residual stream); W_o and W_down by
// input columns (row-parallel: each rank's product is a partial sum of the full update). So a
// layer needs two all-reduces of the residual stream's update, one after W_o and one after W_down.
// Embedding, RMSNorm weights and the LM head are replicated.
//
// Splits need not be even: the built-in model's 3 KV heads go to 2 ranks as 1 + 2. Intermediate
// boundaries fall on multiples of 64 where the size allows (full-width GEMM tiles).
#pragma once
#include <cstdint>
#include <vector>

#include "gate/attn_gate.h"
#include "model/llama.h"

namespace seer {

struct TensorShard {
  int rank = 0, ranks = 1;
  int kv_begin = 0, kv_end = 0;  // KV heads [kv_begin, kv_end)
  int q_begin = 0, q_end = 0;    // query heads: the groups of those KV heads
  int inter_begin = 0, inter_end = 0;  // MLP intermediate features

  int kv_heads() const { return kv_end - kv_begin; }
  int q_heads() const { return q_end - q_begin; }
  int intermediate() const { return inter_end - inter_begin; }
};

// Rank `rank`'s part of `config`. Throws seer::Error when ranks is out of [1, kv_heads] or rank
// out of [0, ranks). Ranks are GPUs (or, in the CPU test, threads).
TensorShard tensor_shard(const LlamaConfig& config, int rank, int ranks);

// Throws unless `shard` was made for a model of `config`'s head and feature counts.
void check_shard(const LlamaConfig& config, const TensorShard& shard);

// The rank's model as the single-device code sees it: its own head and feature counts, the full
// hidden size, and the same name (the base model's identity).
LlamaConfig shard_config(const LlamaConfig& config, const TensorShard& shard);

// The rank's slices of every weight (host copies; float, [out, in] as loaded).
LlamaWeights shard_weights(const LlamaWeights& weights, const TensorShard& shard);
// One layer's: an upload can slice a layer at a time, without a copy of the replicated tensors.
LlamaLayerWeights shard_layer(const LlamaLayerWeights& layer, const LlamaConfig& config, const TensorShard& shard);

// The rank's slices of a layer's gate: W_k's heads (query heads, or KV heads with W_q), W_q's and
// the block bias's query heads. The gate's config is given the shard's heads.
GateWeights<float> shard_gate(const GateWeights<float>& gate, const TensorShard& shard);

}  // namespace seer
