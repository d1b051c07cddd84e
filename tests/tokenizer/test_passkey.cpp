// Pass-key prompts (eval/passkey.h) with the SmolLM2 tokenizer: exact length, the key stated in the
// text, the template around it, reproducible from the seed.
#include <gtest/gtest.h>

#include "core/error.h"
#include "eval/passkey.h"
#include "test_data.h"

namespace seer {
namespace {

TEST(Passkey, PromptHasTheLengthTheKeyAndTheQuestion) {
  Tokenizer tokenizer = Tokenizer::from_json_file(test::smollm2_json_path());
  const std::vector<int32_t> filler =
      tokenizer.encode(std::string(3000, 'a') + " The quick brown fox jumps over the lazy dog. " + std::string(200, 'b'));
  std::mt19937_64 rng(1);
  for (const int64_t length : {300, 500}) {
    const PasskeyPrompt p = make_passkey_prompt(tokenizer, filler, length, rng);
    ASSERT_EQ(int64_t(p.prompt.size()), length);
    ASSERT_EQ(p.key.size(), 5u);
    const std::string text = tokenizer.decode(p.prompt);
    EXPECT_NE(text.find("The pass key is " + p.key + ". Remember it. " + p.key + " is the pass key."), std::string::npos);
    EXPECT_NE(text.find("There is a pass key hidden in this text."), std::string::npos);
    EXPECT_EQ(text.rfind("What is the pass key? Answer with the number only."), text.find("What is the pass key?"));
    EXPECT_NE(text.find("<|im_start|>user\n"), std::string::npos);  // the chat template's user turn
    EXPECT_NE(text.find("<|im_start|>assistant\n"), std::string::npos);
  }
  std::mt19937_64 a(7), b(7);
  EXPECT_EQ(make_passkey_prompt(tokenizer, filler, 400, a).prompt, make_passkey_prompt(tokenizer, filler, 400, b).prompt);
  EXPECT_THROW(make_passkey_prompt(tokenizer, filler, 20, rng), Error);                      // no room for text
  EXPECT_THROW(make_passkey_prompt(tokenizer, filler, int64_t(filler.size()) + 200, rng), Error);  // too little text
}

}  // namespace
}  // namespace seer
