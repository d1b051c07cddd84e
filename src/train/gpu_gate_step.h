// One gate-training step on the GPU: the model forward with the ground-truth attention kernel in
// every layer (the attention output is the exact dense one, so the frozen model's activations are
// unchanged), and per layer, on the device and in the forward's stream, the gate forward, the KL
// loss and its weight gradient (cuda::gate_loss_backward). Only the gradients (a few hundred KB per
// layer) and the losses come back; GateTrainer adds them, steps AdamW on the host (fp32 master
// weights, checkpoints) and the new weights go back up.
#pragma once
#include <span>
#include <vector>

#include "cuda/llama_cuda.h"
#include "train/gate_trainer.h"

namespace seer {

class GpuGateStep {
 public:
  // The runtime fixes the batch shape; both must outlive this object.
  GpuGateStep(GateTrainer& trainer, const LlamaConfig& config, cuda::LlamaRuntime& runtime);

  // Runs one step on `tokens` (the runtime's shape); returns the step's loss (scale × Σ layer KL).
  double run(std::span<const int32_t> tokens);

 private:
  void upload_weights();

  GateTrainer& trainer_;
  cuda::LlamaRuntime& runtime_;
  std::vector<cuda::DeviceGate> gates_;
  cuda::GateWorkspace work_;
  cuda::GateGradWorkspace grad_work_;
  cuda::DeviceBuffer<float> logits_, dwk_, dwq_, dbias_;  // gradients [layers][W size]
  cuda::DeviceBuffer<float> target_;              // the ground truth raised to the target power, when not 1
  cuda::DeviceBuffer<double> kl_;                 // [layers]
  std::vector<float> host_dwk_, host_dwq_, host_dbias_;
  std::vector<double> host_kl_;
  cuda::ForwardOptions forward_;
};

}  // namespace seer
