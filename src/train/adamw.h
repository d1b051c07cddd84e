// AdamW (Loshchilov and Hutter; PyTorch's torch.optim.AdamW): decoupled weight decay and
// bias-corrected moments, fp32 weights and moments updated in double. The plain CPU update below is
// GateTrainer's and the reference of the device's (cuda/adamw.h), which GpuGateStep runs.
//
// Per element, at 1-based step n with learning rate lr (times a per-tensor scale):
//   m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
//   w ← w − lr·( (m / (1 − β1ⁿ)) / (√(v / (1 − β2ⁿ)) + ε) + λ·w )
// and the gradient is zeroed for the next step's accumulation.
#pragma once
namespace seer {

// One step's hyperparameters; the corrections are 1 − βⁿ of the step.
struct AdamWStep {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  double correction1 = 1, correction2 = 1;
};

// One element's update at learning rate `lr` (the step's, times the tensor's scale). Compiled
// without fused multiply-adds (train/CMakeLists.txt), each operation rounded on its own as the
// device's are: the two give the same bits.
void adamw_update(float& w, float& g, float& m, float& v, const AdamWStep& s, double lr);

}  // namespace seer
