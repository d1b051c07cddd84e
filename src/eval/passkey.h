// Pass-key retrieval prompts: a random 5-digit key stated once at a random depth of filler text,
// asked for at the end through the model's chat template (`seer eval-sparsity`). Built from token
// pieces (the template around the user turn, the filler's own tokens, the key sentence), so a prompt
// has an exact length.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace seer {

struct PasskeyPrompt {
  std::string key;
  std::vector<int32_t> prompt;  // up to and including the assistant turn's opening
};

// A prompt of exactly `length` tokens: the filler, a window of `filler` (BOS-free text tokens) from a
// random offset, takes what the template, the instruction, the key sentence and the question leave.
// Throws if `filler` or `length` is too short for that.
PasskeyPrompt make_passkey_prompt(const Tokenizer& tokenizer, std::span<const int32_t> filler, int64_t length,
                                  std::mt19937_64& rng);

}  // namespace seer
