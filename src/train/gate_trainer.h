// Self-distillation of AttnGates with the LLM frozen (SeerAttention's post-training).
//
// Per step, every layer contributes KL(ground truth ‖ softmax(gate logits)) over key blocks (plus,
// optionally, seer's tail term: TailKl), the first quarter of block rows skipped, averaged over
// elements; the step's loss is 10 × the sum over layers. Gradients come from gate_backward
// (src/gate); AdamW (train/adamw.h) with fp32 master weights, linear warm-up then cosine decay. Only
// gate weights learn. Checkpoints hold the weights (with the published key layout), the AdamW
// moments and the step, written atomically.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "attention/gt_pooling.h"
#include "core/bf16.h"
#include "gate/attn_gate.h"
#include "gate/rope.h"
#include "train/adamw.h"

namespace seer {

class SafetensorsFile;

struct TrainOptions {
  int64_t steps = 300;
  double lr = 1e-3;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t warmup = 20;
  double skip_fraction = 0.25;  // leading block rows left out of the loss
  double loss_scale = 10.0;
  double target_power = 1.0;  // rows of the ground truth raised to it and renormalized (power_normalize_rows)
  TailKl tail{};              // the loss's optional tail term (gate/attn_gate.h); weight 0: the published loss
  GtPooling target_pooling = GtPooling::max;  // the ground truth's block pooling (the trainer's caller applies it)
  // The block bias (gate/block_bias.h) learns at lr × this: its entries are on the scale of the
  // logits (several units), the projections' on that of 0.02-sized weights, and Adam moves every
  // parameter by about lr per step whatever its scale.
  double bias_lr_scale = 10.0;

  void validate() const;
};

class GateTrainer {
 public:
  GateTrainer(std::vector<GateWeights<float>> init, const TrainOptions& options);

  // Adds layer `layer`'s loss and gradient for the current step, from its pre-RoPE q [T, H_q, d],
  // k [T, H_kv, d] and ground-truth map (packed [H_q, nb, nb] per sequence). Returns the layer's
  // KL (unscaled; with TrainOptions::tail, the KL plus the tail term). Layers may be given in any
  // order; each once per step.
  double accumulate_layer(int layer, std::span<const bf16> q_pre, std::span<const bf16> k_pre,
                          std::span<const float> gt, const Sequences& seqs, const Rope& rope);
  // Adds layer `layer`'s gradient computed elsewhere (the GPU: cuda::gate_loss_backward, which
  // already includes the loss scale) and its KL (unscaled). Sizes must match the weights' (dbias
  // empty when the gates have no block bias).
  void add_layer_gradient(int layer, double kl, std::span<const float> dwk, std::span<const float> dwq,
                          std::span<const float> dbias);
  // AdamW update with this step's learning rate; returns the step's loss (scale × Σ layer KL).
  double finish_step();

  // A step whose gradients and AdamW update (adamw_step(), the block bias at bias_lr_scale times its
  // lr) run elsewhere: GpuGateStep, on the device. Each layer gives its KL (unscaled), then
  // finish_step_updated_elsewhere() counts the step and returns its loss. From then on the weights
  // and moments here are stale until set_state() brings the updated ones back; weights(),
  // exp_avg(), exp_avg_sq(), save() and the host's own steps refuse them until it does.
  void add_layer_kl(int layer, double kl);
  double finish_step_updated_elsewhere();
  AdamWStep adamw_step() const;  // the current step's hyperparameters
  bool host_state_current() const { return host_state_current_; }
  void set_state(std::vector<GateWeights<float>> weights, std::vector<GateWeights<float>> exp_avg,
                 std::vector<GateWeights<float>> exp_avg_sq);
  const std::vector<GateWeights<float>>& exp_avg() const;
  const std::vector<GateWeights<float>>& exp_avg_sq() const;
  // Changes whenever the weights do, wherever they live (each finished step, set_state, resume): a
  // holder of a copy (GpuGateStep) knows by it whether its copy is still the trainer's.
  uint64_t state_version() const { return state_version_; }

  // Each layer's KL (unscaled) in the last finished step: where the gates imitate their target
  // least. Empty before the first step.
  const std::vector<double>& last_layer_kl() const { return last_layer_kl_; }

  double learning_rate(int64_t step) const;  // for the 0-based step index
  int64_t step() const { return step_; }
  const TrainOptions& options() const { return options_; }
  const std::vector<GateWeights<float>>& weights() const;

  // Published layout (model.layers.{i}.self_attn.attn_gate.mask_linear_k.weight [k_proj_heads, 3d,
  // d_g], mask_linear_q [H_q, q_in, d_g] when the gates have W_q; seer's attn_gate.block_bias [H_q, 10] when the
  // gates have it) plus `metadata`; with_optimizer adds the AdamW
  // moments and the step so that resume() continues exactly.
  void save(const std::string& path, const std::map<std::string, std::string>& metadata, bool with_optimizer) const;
  // Restores weights, moments and step from a checkpoint written by save(..., true). Throws if the
  // checkpoint's shapes do not match this trainer's.
  void resume(const std::string& path);
  // The step of a checkpoint written by save (its training_step metadata); `path` names it in errors.
  static int64_t checkpoint_step(const SafetensorsFile& file, const std::string& path);

 private:
  TrainOptions options_;
  std::vector<GateWeights<float>> weights_, grads_, exp_avg_, exp_avg_sq_;
  std::vector<bool> layer_done_;
  std::vector<double> layer_kl_, last_layer_kl_;  // this step's, the last finished step's
  double step_loss_ = 0;
  int64_t step_ = 0;
  bool host_state_current_ = true;  // false while the weights and moments live elsewhere (the device)
  uint64_t state_version_ = 0;

  void check_host_state(const char* what) const;
  void check_layer_open(int layer) const;  // in range and not yet given this step
  void check_every_layer_given() const;    // before either finish_step kind changes anything
  void record_layer_kl(int layer, double kl);  // after check_layer_open

  double end_step();  // the bookkeeping of both finish_step kinds
};

}  // namespace seer
