#include "model/sampling.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace seer {

void SamplingOptions::validate() const {
  SEER_CHECK(std::isfinite(temperature), "temperature must be finite, got ", temperature);
  SEER_CHECK(top_k >= 0, "top-k must be >= 0, got ", top_k);
  SEER_CHECK(top_p > 0.0 && top_p <= 1.0, "top-p must be in (0, 1], got ", top_p);
}

Sampler::Sampler(const SamplingOptions& options, int32_t vocab) : options_(options), vocab_(vocab), rng_(options.seed) {
  options.validate();
  SEER_CHECK(vocab > 0, "the vocabulary must not be empty");
  candidates_.resize(size_t(vocab));
}

int32_t Sampler::sample(std::span<const float> logits) {
  SEER_CHECK(int64_t(logits.size()) == vocab_, "sampling: ", logits.size(), " logits for a vocabulary of ", vocab_);
  if (options_.temperature <= 0.0) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());

  for (int32_t id = 0; id < vocab_; ++id) candidates_[size_t(id)] = {logits[size_t(id)], id};
  // Highest logit first, the lower id first among equal logits, so the order is fully determined.
  const auto higher = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t count = candidates_.size();
  if (options_.top_k > 0 && size_t(options_.top_k) < count) {
    count = size_t(options_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + std::ptrdiff_t(count), candidates_.end(), higher);
  } else if (options_.top_p < 1.0) {
    std::sort(candidates_.begin(), candidates_.end(), higher);
  }  // else the draw needs no order: candidates stay in id order

  double max = candidates_[0].first;
  for (size_t n = 1; n < count; ++n) max = std::max(max, double(candidates_[n].first));
  double sum = 0.0;
  for (size_t n = 0; n < count; ++n) {
    const double p = std::exp((candidates_[n].first - max) / options_.temperature);
    candidates_[n].first = float(p);
    sum += p;
  }
  if (options_.top_p < 1.0) {
    double cumulative = 0.0;
    size_t keep = 0;
    while (keep < count && cumulative < options_.top_p * sum) cumulative += candidates_[keep++].first;
    count = std::max<size_t>(keep, 1);
    sum = cumulative;
  }
  // 53 random bits give a uniform double in [0, 1) the same way on every standard library.
  const double u = double(rng_() >> 11) * 0x1.0p-53 * sum;
  double cumulative = 0.0;
  for (size_t n = 0; n < count; ++n) {
    cumulative += candidates_[n].first;
    if (u < cumulative) return candidates_[n].second;
  }
  return candidates_[count - 1].second;  // u within rounding of the total
}

}  // namespace seer
