// Perplexity as llama.cpp's llama-perplexity measures it: the text is cut into windows of the
// context length, each window runs from an empty cache, and only predictions with enough context
// before them are scored.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "model/forward_cpu.h"

namespace seer {

// Tokens [begin, begin + length) of the text; the logits at window indices [first, length - 1)
// are scored, each predicting the next token.
struct PerplexityWindow {
  int64_t begin = 0, length = 0, first = 0;
};

// stride 0 (llama.cpp's default): consecutive non-overlapping windows of `context` tokens, scoring
// their second half (from index context/2). stride S in [1, context]: windows start every S tokens
// and score their last S tokens, so every scored token sees at least context - S tokens. Whole
// windows only; a text shorter than the context is one window of its own length. Texts under 2
// tokens give no window.
std::vector<PerplexityWindow> perplexity_windows(int64_t tokens, int64_t context, int64_t stride);

// Running statistics of token negative log-likelihoods (natural log).
struct NllStats {
  int64_t count = 0;
  double sum = 0.0, sum_squares = 0.0;

  void add(double nll) {
    ++count;
    sum += nll;
    sum_squares += nll * nll;
  }
  double mean() const { return count ? sum / double(count) : 0.0; }
  double perplexity() const;
  // Standard error of the perplexity by the delta method: exp(mean) × the standard error of the
  // mean NLL (population variance over count - 1, as llama.cpp reports it).
  double perplexity_error() const;
};

// Empties the model's cache, runs `window` through it and adds the NLL of each scored prediction.
void score_window(LlamaCpu& model, std::span<const int32_t> window, int64_t first, NllStats& stats);

// -log softmax(logits)[target], the log-sum-exp accumulated in double.
double token_nll(std::span<const float> logits, int32_t target);

}  // namespace seer
