// Rotary position embedding, rotate-half convention (Llama / HF): for i < dim/2,
//   x'[i]         = x[i] cos(p w_i) - x[i + dim/2] sin(p w_i)
//   x'[i + dim/2] = x[i + dim/2] cos(p w_i) + x[i] sin(p w_i),   w_i = inv_freq[i],
// times the attention scaling (YaRN's mscale, folded into cos and sin as HF does; 1 otherwise).
#pragma once
#include <cmath>
#include <span>
#include <vector>

namespace seer {

struct RopeConfig {
  enum class Scaling { none, llama3, yarn };
  double theta = 10000.0;
  Scaling scaling = Scaling::none;
  double factor = 1.0;                    // llama3 and YaRN
  double low_freq_factor = 1.0;           // llama3
  double high_freq_factor = 4.0;          // llama3
  double original_max_positions = 8192;   // llama3 and YaRN
  double beta_fast = 32.0, beta_slow = 1.0;  // YaRN
  double yarn_attention_factor = 0.0;     // YaRN mscale; 0 means HF's default 0.1 ln(factor) + 1

  void validate() const;
};

// The inverse frequencies and scaling of one rotary dimension, computed once.
class Rope {
 public:
  Rope(const RopeConfig& config, int dim);
  int dim() const { return dim_; }
  double attention_scaling() const { return attention_scaling_; }
  const std::vector<double>& inv_freq() const { return inv_freq_; }

  // Rotates x (dim values) to position `pos`; inverse=true applies the transpose (the gradient).
  template <typename Real>
  void apply(std::span<Real> x, double pos, bool inverse = false) const {
    const int half = dim_ / 2;
    for (int i = 0; i < half; ++i) {
      const double angle = pos * inv_freq_[size_t(i)];
      const double c = std::cos(angle) * attention_scaling_;
      const double s = (inverse ? -std::sin(angle) : std::sin(angle)) * attention_scaling_;
      const double a = double(x[size_t(i)]), b = double(x[size_t(i + half)]);
      x[size_t(i)] = Real(a * c - b * s);
      x[size_t(i + half)] = Real(b * c + a * s);
    }
  }

 private:
  int dim_;
  double attention_scaling_ = 1.0;
  std::vector<double> inv_freq_;
};

}  // namespace seer
