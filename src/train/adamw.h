// AdamW (Loshchilov and Hutter; PyTorch's torch.optim.AdamW): decoupled weight decay and
// bias-corrected moments, fp32 weights and moments updated in double. The plain CPU update below is
// GateTrainer's and the reference of the device's (cuda/adamw.h), which GpuGateStep runs.
//
// Per element, at 1-based step n with learning rate lr (times a per-tensor scale):
//   m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
//   w ← w − lr·( (m / (1 − β1ⁿ)) / (√(v / (1 − β2ⁿ)) + ε) + λ·w )
// and the gradient is zeroed for the next step's accumulation.
#pragma once
#include <cmath>

namespace seer {

// One step's hyperparameters; the corrections are 1 − βⁿ of the step.
struct AdamWStep {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  double correction1 = 1, correction2 = 1;
};

// One element's update at learning rate `lr` (the step's, times the tensor's scale).
inline void adamw_update(float& w, float& g, float& m, float& v, const AdamWStep& s, double lr) {
  m = float(s.beta1 * m + (1 - s.beta1) * g);
  v = float(s.beta2 * v + (1 - s.beta2) * double(g) * g);
  const double step = (m / s.correction1) / (std::sqrt(v / s.correction2) + s.eps);
  w = float(w - lr * (step + s.weight_decay * w));
  g = 0.0f;
}

}  // namespace seer
