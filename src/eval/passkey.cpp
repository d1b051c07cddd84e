#include "eval/passkey.h"

#include "core/error.h"

namespace seer {
namespace {

constexpr const char* kInstruction = "There is a pass key hidden in this text. Find it and remember it.\n\n";
constexpr const char* kQuestion = "\n\nWhat is the pass key? Answer with the number only.";
constexpr const char* kMarker = "\x01PASSKEY-FILLER\x01";

struct Pieces {
  std::vector<int32_t> before, after;  // the template and the instruction / the question and the template
};

Pieces template_pieces(const Tokenizer& tokenizer) {
  const std::string chat = tokenizer.apply_chat_template({{"user", kInstruction + std::string(kMarker) + kQuestion}}, true);
  const size_t at = chat.find(kMarker);
  SEER_CHECK(at != std::string::npos, "pass key: the chat template dropped the user's text");
  return {tokenizer.encode(chat.substr(0, at), false, true),
          tokenizer.encode(chat.substr(at + std::string(kMarker).size()), false, true)};
}

std::vector<int32_t> key_sentence(const Tokenizer& tokenizer, const std::string& key) {
  return tokenizer.encode("\nThe pass key is " + key + ". Remember it. " + key + " is the pass key.\n");
}

}  // namespace

PasskeyPrompt make_passkey_prompt(const Tokenizer& tokenizer, std::span<const int32_t> filler, int64_t length,
                                  std::mt19937_64& rng) {
  PasskeyPrompt p;
  p.key = std::to_string(10000 + rng() % 90000);
  const Pieces pieces = template_pieces(tokenizer);
  const std::vector<int32_t> sentence = key_sentence(tokenizer, p.key);
  const int64_t filler_tokens = length - int64_t(pieces.before.size() + sentence.size() + pieces.after.size());
  SEER_CHECK(filler_tokens > 0, "pass key: a prompt of ", length, " tokens leaves no room for text");
  SEER_CHECK(int64_t(filler.size()) >= filler_tokens, "pass key: ", filler.size(), " filler tokens, ", filler_tokens,
             " needed");
  const int64_t start = int64_t(rng() % uint64_t(int64_t(filler.size()) - filler_tokens + 1));
  const int64_t depth = int64_t(rng() % uint64_t(filler_tokens));
  const auto text = filler.subspan(size_t(start), size_t(filler_tokens));
  p.prompt = pieces.before;
  p.prompt.insert(p.prompt.end(), text.begin(), text.begin() + depth);
  p.prompt.insert(p.prompt.end(), sentence.begin(), sentence.end());
  p.prompt.insert(p.prompt.end(), text.begin() + depth, text.end());
  p.prompt.insert(p.prompt.end(), pieces.after.begin(), pieces.after.end());
  return p;
}

}  // namespace seer
