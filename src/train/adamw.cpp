#include "train/adamw.h"

#include <cmath>

namespace seer {

void adamw_update(float& w, float& g, float& m, float& v, const AdamWStep& s, double lr) {
  m = float(s.beta1 * m + (1 - s.beta1) * g);
  v = float(s.beta2 * v + (1 - s.beta2) * double(g) * g);
  const double step = (m / s.correction1) / (std::sqrt(v / s.correction2) + s.eps);
  w = float(w - lr * (step + s.weight_decay * w));
  g = 0.0f;
}

}  // namespace seer
