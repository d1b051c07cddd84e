// AttnGate: the published `Qavg_Kmaxminavg` gate (and seer's `Qmaxminavg_Kmaxminavg`), and its
// distillation loss.
//
// From the layer's pre-RoPE q [T, H_q, d] and k [T, H_kv, d], per sequence and block of B tokens
// (a partial last block pools over its valid tokens only):
//   q_pool[i, h]  = mean of q over block i                                   [nb, H_q, d]
//                   (Qmaxminavg: concat(max, min, mean), as k               [nb, H_q, 3d])
//   k_pool[j, kv] = concat(max, min, mean) of k over block j                  [nb, H_kv, 3d]
//   q_g[h, i] = q_pool[i, h] (· W_q[h] when the gate has W_q),   k_g[h, j] = k_pool[j, h/g] · W_k[h]
//                                                          (no W_q) or · W_k[h/g] (with W_q)
//   both rotated by RoPE at position (first token of the block) = i*B, j*B
//   logits[h, i, j] = q_g·k_g / √d_g for j <= i, -inf above the diagonal    [H_q, nb, nb]
// Weights, as the reference code lays them out: with one Q pooling and d_g == d (every released
// gate) W_k [H_q, 3d, d_g] and no W_q; with d_g != d or several Q poolings, W_q [H_q, q_in, d_g]
// (q_in = d or 3d) and W_k [H_kv, 3d, d_g], one K projection per KV head shared by its group's query
// heads. No biases in the published gate; with seer's block bias (gate/block_bias.h) each logit also
// gets a learned number per query head and block distance.
//
// Why Q by max and min too: a gate imitates a block map pooled over the block's 64 query rows by a
// max (the published ground truth's, or peak-mass's), which the rows' mean blurs; the channel-wise
// extremes of q beside those of k let the bilinear score bound the largest q·k in the block pair,
// as Quest's bound does for one query.
#pragma once
#include <cstdint>
#include <span>
#include <string>
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
  int q_pools = 1;              // 1: q by mean (Qavg); 3: by max, min and mean (Qmaxminavg)

  int q_in_dim() const { return q_pools * heads.head_dim; }  // W_q's input: the pooled q's size
  bool has_q_proj() const { return gate_dim != heads.head_dim || q_pools != 1; }
  // W_k's leading dimension, and which of its heads query head h uses.
  int k_proj_heads() const { return has_q_proj() ? heads.kv_heads : heads.q_heads; }
  int k_proj_head(int h) const { return has_q_proj() ? h / heads.group() : h; }
  int64_t wk_size() const { return int64_t(k_proj_heads()) * 3 * heads.head_dim * gate_dim; }
  int64_t wq_size() const { return has_q_proj() ? int64_t(heads.q_heads) * q_in_dim() * gate_dim : 0; }
  int64_t bias_size() const { return has_block_bias ? int64_t(heads.q_heads) * kBiasColumns : 0; }
  void validate() const;
};

// The reference's name of the gate's poolings (its config's seerattn_gate_type): Qavg_Kmaxminavg
// or Qmaxminavg_Kmaxminavg; the Q poolings of such a name (throws for any other); every such name.
const char* gate_type_name(const GateConfig& config);
int parse_gate_type(const std::string& name);
std::vector<std::string> gate_type_names();

template <typename Real>
struct GateWeights {
  GateConfig config;
  std::vector<Real> wk;  // [k_proj_heads, 3d, d_g]
  std::vector<Real> wq;    // [H_q, q_in, d_g], empty without W_q
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

// seer's optional second term of the distillation loss: the KL over each row's tail, the key blocks
// 1 <= j <= i - local_blocks, with the target and the gate's softmax both renormalized over them.
// A selection that keeps the sink and the local blocks anyway (the (a+) and (p+) rows of
// bench/ACCURACY.md) decides only among the tail's blocks, and those hold a small part of a row's
// target, so the plain KL weighs their order little: it is spent on the sink and the diagonal. The
// tail's KL weighs their order as much as a whole row's. Rows with fewer than 2 tail blocks or no
// target mass on them add nothing.
struct TailKl {
  double weight = 0;      // 0: the published loss
  int local_blocks = 3;   // the blocks up to the diagonal left out of the tail (i - local_blocks + 1 .. i)

  void validate() const;
};

// Distillation loss KL(gt ‖ softmax(logits)) over key blocks j <= i, plus tail.weight × the tail's
// KL (TailKl), rows i < floor(nb * skip_fraction) of each sequence skipped, averaged over all
// elements of the kept rows (H_q · rows · nb per sequence, PyTorch's KLDivLoss 'mean'). When
// dlogits is non-empty it receives dLoss/dlogits.
template <typename Real>
Real gate_kl_loss(std::span<const Real> logits, std::span<const Real> gt, const BlockLayout& layout,
                  double skip_fraction, std::span<Real> dlogits, const TailKl& tail = {});

// Accumulates dLoss/dW (into grad, which must have the weights' sizes) given dLoss/dlogits,
// through the scores, RoPE, the projections and the pooling, and dLoss/dbias, the sums of
// dLoss/dlogits over each bias entry's block pairs.
template <typename Real, typename T>
void gate_backward(std::span<const T> q_pre, std::span<const T> k_pre, const Sequences& seqs,
                   const GateWeights<Real>& weights, const Rope& rope, std::span<const Real> dlogits,
                   GateWeights<Real>& grad);

}  // namespace seer
