// Choosing the next token from logits: greedy, or a draw at a temperature from the top-k / top-p
// (nucleus) candidates, reproducible from a seed.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace seer {

struct SamplingOptions {
  double temperature = 0.0;  // <= 0: greedy (the highest logit, the lowest id among ties)
  int top_k = 0;             // keep the k highest logits; 0 keeps all
  double top_p = 1.0;        // then the fewest most likely tokens whose probability reaches top_p
  uint64_t seed = 0;

  void validate() const;
};

class Sampler {
 public:
  Sampler(const SamplingOptions& options, int32_t vocab);

  // Filters in the order top-k, temperature, softmax, top-p (as Hugging Face's generate), then
  // draws. Allocates nothing: the candidate buffer is sized for the vocabulary up front.
  int32_t sample(std::span<const float> logits);

 private:
  SamplingOptions options_;
  int32_t vocab_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // (logit, then probability; id)
};

}  // namespace seer
