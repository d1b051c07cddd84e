#include "gate/rope.h"

#include <algorithm>
#include <numbers>

#include "core/error.h"

namespace seer {

void RopeConfig::validate() const {
  SEER_CHECK(theta > 1.0, "RoPE theta must be > 1, got ", theta);
  if (scaling != Scaling::none) {
    SEER_CHECK(factor >= 1.0, "RoPE scaling factor must be >= 1, got ", factor);
    SEER_CHECK(original_max_positions > 0, "RoPE original_max_position_embeddings must be positive");
  }
  if (scaling == Scaling::llama3)
    SEER_CHECK(high_freq_factor > low_freq_factor && low_freq_factor > 0, "llama3 RoPE needs high_freq_factor (",
               high_freq_factor, ") > low_freq_factor (", low_freq_factor, ") > 0");
}

Rope::Rope(const RopeConfig& config, int dim) : dim_(dim) {
  config.validate();
  SEER_CHECK(dim > 0 && dim % 2 == 0, "RoPE dimension must be positive and even, got ", dim);
  const int half = dim / 2;
  inv_freq_.resize(size_t(half));
  for (int i = 0; i < half; ++i) inv_freq_[size_t(i)] = 1.0 / std::pow(config.theta, 2.0 * i / dim);
  const double pi = std::numbers::pi;
  switch (config.scaling) {
    case RopeConfig::Scaling::none:
      break;
    case RopeConfig::Scaling::llama3: {  // HF _compute_llama3_parameters
      const double low_wavelen = config.original_max_positions / config.low_freq_factor;
      const double high_wavelen = config.original_max_positions / config.high_freq_factor;
      for (double& f : inv_freq_) {
        const double wavelen = 2 * pi / f;
        if (wavelen > low_wavelen) {
          f /= config.factor;
        } else if (wavelen >= high_wavelen) {
          const double smooth = (config.original_max_positions / wavelen - config.low_freq_factor) /
                                (config.high_freq_factor - config.low_freq_factor);
          f = (1 - smooth) * f / config.factor + smooth * f;
        }
      }
      break;
    }
    case RopeConfig::Scaling::yarn: {  // HF _compute_yarn_parameters
      const auto correction_dim = [&](double rotations) {
        return dim * std::log(config.original_max_positions / (rotations * 2 * pi)) / (2 * std::log(config.theta));
      };
      const double low = std::max(0.0, std::floor(correction_dim(config.beta_fast)));
      double high = std::min(double(dim - 1), std::ceil(correction_dim(config.beta_slow)));
      if (high == low) high += 0.001;
      for (int i = 0; i < half; ++i) {
        const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
        const double extrapolation = 1.0 - ramp;
        const double f = inv_freq_[size_t(i)];
        inv_freq_[size_t(i)] = f / config.factor * (1 - extrapolation) + f * extrapolation;
      }
      attention_scaling_ = config.yarn_attention_factor > 0
                               ? config.yarn_attention_factor
                               : (config.factor <= 1 ? 1.0 : 0.1 * std::log(config.factor) + 1.0);
      break;
    }
  }
}

}  // namespace seer
