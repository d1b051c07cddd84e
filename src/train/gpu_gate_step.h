// One gate-training step on the GPU: the model forward with the ground-truth attention kernel in
// every layer (the attention output is the exact dense one, so the frozen model's activations are
// unchanged), and per layer, on the device and in the forward's stream, the gate forward, the KL
// loss and its weight gradient (cuda::gate_loss_backward); then AdamW on the device (cuda/adamw.h).
// Only the losses come back each step: the weights and moments stay on the GPU, the trainers'
// host copies stale (GateTrainer::finish_step_updated_elsewhere) until sync_host() brings them
// back, for a checkpoint or the end. A trainer whose state changed on the host since (its first
// step here, or GateTrainer::resume) is uploaded again first; one stepped by another GpuGateStep
// meanwhile is refused.
//
// Several gates can learn from one forward: each trainer (its gate shape, loss and optimizer
// settings its own) gets its loss and gradient from the same layers' q, k and ground truth, so a
// run trains each exactly as a run of its own would, for one forward's cost.
#pragma once
#include <array>
#include <optional>
#include <span>
#include <vector>

#include "cuda/adamw.h"
#include "cuda/llama_cuda.h"
#include "train/gate_trainer.h"

namespace seer {

class GpuGateStep {
 public:
  // The runtime fixes the batch shape; it and the trainers must outlive this object. The trainers
  // must share the target pooling (the forward's ground truth).
  //
  // Data parallelism: with `data_parallel` (a group of several ranks), each rank runs its own
  // GpuGateStep on its own GPU, with a whole copy of the model and trainers in the same state, on
  // its own sequences; the gradients and losses are averaged over the ranks before AdamW, so every
  // rank takes the same step, the one a single GPU would take on all the ranks' sequences at once.
  GpuGateStep(std::vector<GateTrainer*> trainers, const LlamaConfig& config, cuda::LlamaRuntime& runtime,
              const cuda::Communicator* data_parallel = nullptr);
  GpuGateStep(GateTrainer& trainer, const LlamaConfig& config, cuda::LlamaRuntime& runtime,
              const cuda::Communicator* data_parallel = nullptr)
      : GpuGateStep(std::vector<GateTrainer*>{&trainer}, config, runtime, data_parallel) {}
  // The forward's per-layer callback holds `this`.
  GpuGateStep(const GpuGateStep&) = delete;
  GpuGateStep& operator=(const GpuGateStep&) = delete;

  // Runs one step on `tokens` (the runtime's shape); returns each trainer's loss (scale × Σ layer
  // KL, averaged over the data-parallel ranks), in the constructor's order.
  std::vector<double> run(std::span<const int32_t> tokens);
  // Every trainer's weights and AdamW moments, from the device into the trainer (set_state).
  void sync_host();

 private:
  // One trainer's device state.
  struct Variant {
    GateTrainer* trainer;
    std::vector<cuda::DeviceGate> gates;  // the weights
    cuda::GateWorkspace work;
    cuda::GateGradWorkspace grad_work;
    cuda::DeviceBuffer<float> logits;
    // Per kind of tensor (W_k, W_q, the block bias), [layers][its size]: the gradients and the moments.
    std::array<cuda::DeviceBuffer<float>, 3> grad, exp_avg, exp_avg_sq;
    cuda::DeviceBuffer<float> target;  // the ground truth raised to the target power, when not 1
    cuda::DeviceBuffer<double> kl;     // [layers]
    cuda::DeviceAdamW adamw;
    std::vector<double> host_kl;
    // The trainer's state_version that the device's weights and moments are; none before the first
    // upload.
    std::optional<uint64_t> device_version;
  };
  void upload_state(Variant& v);
  void check_not_stepped_elsewhere(const Variant& v) const;
  void layer_loss(Variant& v, const cuda::LayerCapture& c);

  cuda::LlamaRuntime& runtime_;
  const cuda::Communicator* data_parallel_;
  std::vector<Variant> variants_;
  cuda::ForwardOptions forward_;
};

}  // namespace seer
