#include "model/perplexity.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/fast_exp.h"

namespace seer {

std::vector<PerplexityWindow> perplexity_windows(int64_t tokens, int64_t context, int64_t stride) {
  SEER_CHECK(context >= 2, "the perplexity context must be at least 2 tokens, got ", context);
  SEER_CHECK(stride >= 0 && stride <= context, "the stride must be in [0, context = ", context, "], got ", stride);
  std::vector<PerplexityWindow> windows;
  if (tokens < 2) return windows;
  if (tokens < context) {
    const int64_t first = stride == 0 ? tokens / 2 : std::max<int64_t>(0, tokens - 1 - stride);
    windows.push_back({0, tokens, first});
    return windows;
  }
  const int64_t step = stride == 0 ? context : stride;
  const int64_t first = stride == 0 ? context / 2 : std::max<int64_t>(0, context - 1 - stride);
  for (int64_t begin = 0; begin + context <= tokens; begin += step) windows.push_back({begin, context, first});
  return windows;
}

double NllStats::perplexity() const { return std::exp(mean()); }

double NllStats::perplexity_error() const {
  if (count < 2) return 0.0;
  const double m = mean(), variance = sum_squares / double(count) - m * m;
  return variance > 0.0 ? perplexity() * std::sqrt(variance / double(count - 1)) : 0.0;
}

double token_nll(std::span<const float> logits, int32_t target) {
  SEER_CHECK(target >= 0 && size_t(target) < logits.size(), "target token ", target, " is outside the logits");
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (size_t n = 0; n < logits.size(); ++n) sum += double(fast_exp(logits[n] - max));
  return double(max) + std::log(sum) - double(logits[size_t(target)]);
}

void score_window(LlamaCpu& model, std::span<const int32_t> window, int64_t first, NllStats& stats) {
  const int64_t length = int64_t(window.size());
  SEER_CHECK(first >= 0 && first < length - 1, "scoring from index ", first, " leaves nothing to score in a window of ",
             length);
  model.reset();
  model.forward(window, first, [&](int64_t index, std::span<const float> logits) {
    if (index < length - 1) stats.add(token_nll(logits, window[size_t(index) + 1]));
  });
}

}  // namespace seer
