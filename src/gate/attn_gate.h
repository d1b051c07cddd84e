// AttnGate, the published `Qavg_Kmaxminavg` gate, and its distillation loss.
//
// From the layer's pre-RoPE q [T, H_q, d] and k [T, H_kv, d], per sequence and block of B tokens
// (a partial last block pools over its valid tokens only):
//   q_pool[i, h]  = mean of q over block i                                   [nb, H_q, d]
//   k_pool[j, kv] = concat(max, min, mean) of k over block j                  [nb, H_kv, 3d]
//   q_g[h, i] = q_pool[i, h] (· W_q[h] when d_g != d),   k_g[h, j] = k_pool[j, h/g] · W_k[h] (d_g == d)
//                                                                  or · W_k[h/g] (d_g != d)
//   both rotated by RoPE at position (first token of the block) = i*B, j*B
//   logits[h, i, j] = q_g·k_g / √d_g for j <= i, -inf above the diagonal    [H_q, nb, nb]
// Weights, as the reference code lays them out: with d_g == d (every released gate) W_k [H_q, 3d, d_g]
// and no W_q; with d_g != d, W_q [H_q, d, d_g] and W_k [H_kv, 3d, d_g], one K projection per KV head
// shared by its group's query heads. No biases in the published gate; with seer's block bias
// (gate/block_bias.h) each logit also gets a learned number per query head and block distance.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "attention/head_dims.h"
#include "core/sequences.h"
#include "gate/block_bias.h"
#include "gate/rope.h"

namespace seer {

struct GateConfig {
  HeadDims heads;
  int gate_dim = 0;  // d_g
  int block = 64;
  bool has_block_bias = false;  // gate/block_bias.h

  bool has_q_proj() const { return gate_dim != heads.head_dim; }
  // W_k's leading dimension, and which of its heads query head h uses.
  int k_proj_heads() const { return has_q_proj() ? heads.kv_heads : heads.q_heads; }
  int k_proj_head(int h) const { return has_q_proj() ? h / heads.group() : h; }
  int64_t wk_size() const { return int64_t(k_proj_heads()) * 3 * heads.head_dim * gate_dim; }
  int64_t wq_size() const { return has_q_proj() ? int64_t(heads.q_heads) * heads.head_dim * gate_dim : 0; }
  int64_t bias_size() const { return has_block_bias ? int64_t(heads.q_heads) * kBiasColumns : 0; }
  void validate() const;
};

template <typename Real>
struct GateWeights {
  GateConfig config;
  std::vector<Real> wk;  // [k_proj_heads, 3d, d_g]
  std::vector<Real> wq;    // [H_q, d, d_g], empty when d_g == d
  std::vector<Real> bias;  // [H_q, kBiasColumns], empty without the block bias

  // Zero weights of the right sizes (gradient buffers).
  static GateWeights zeros(const GateConfig& config);
  // normal(0, std) initialization of W_k and W_q, the reference code's default std being 0.02; the
  // block bias starts at zero, so that an untrained gate is the published one.
  static GateWeights random(const GateConfig& config, uint64_t seed, double std = 0.02);
  void validate() const;
};

// Gate logits, packed per sequence as [H_q, nb, nb] (BlockLayout(seqs, block, H_q).map_offset).
template <typename Real, typename T>
void gate_forward(std::span<const T> q_pre, std::span<const T> k_pre, const Sequences& seqs,
                  const GateWeights<Real>& weights, const Rope& rope, std::span<Real> logits);

// The distillation target with each row's causal part (j <= i) raised to `power` and normalized to
// sum 1 again (rows of zeros stay zero). power = 1 is the published target; power < 1 flattens a row,
// so that the KL weighs the blocks a top-k cut decides between (neither the sink nor the diagonal,
// which hold most of the mass) more against those that dominate it; the ranking within a row is
// unchanged.
template <typename Real>
void power_normalize_rows(std::span<Real> map, const BlockLayout& layout, double power);

// Distillation loss KL(gt ‖ softmax(logits)) over key blocks j <= i, rows i < floor(nb * skip_fraction)
// of each sequence skipped, averaged over all elements of the kept rows (H_q · rows · nb per sequence,
// PyTorch's KLDivLoss 'mean'). When dlogits is non-empty it receives dLoss/dlogits.
template <typename Real>
Real gate_kl_loss(std::span<const Real> logits, std::span<const Real> gt, const BlockLayout& layout,
                  double skip_fraction, std::span<Real> dlogits);

// Accumulates dLoss/dW (into grad, which must have the weights' sizes) given dLoss/dlogits,
// through the scores, RoPE, the projections and the pooling, and dLoss/dbias, the sums of
// dLoss/dlogits over each bias entry's block pairs.
template <typename Real, typename T>
void gate_backward(std::span<const T> q_pre, std::span<const T> k_pre, const Sequences& seqs,
                   const GateWeights<Real>& weights, const Rope& rope, std::span<const Real> dlogits,
                   GateWeights<Real>& grad);

}  // namespace seer
