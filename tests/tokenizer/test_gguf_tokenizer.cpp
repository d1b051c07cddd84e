#include <gtest/gtest.h>

#include "test_data.h"
#include "tokenizer/gguf_tokenizer.h"

namespace seer {
namespace {

// The tokenizer read from the model's GGUF metadata equals the one from the reference
// tokenizer.json (which make_reference.py built from the same GGUF): same ids and template.
TEST(GgufTokenizer, MatchesTheReferenceTokenizer) {
  if (!std::filesystem::exists(SEER_MODEL_GGUF)) {
    GTEST_SKIP() << SEER_MODEL_GGUF << " not found (scripts/fetch_model.sh downloads it)";
  }
  const TokenizerSpec spec = spec_from_gguf(GgufFile::open(SEER_MODEL_GGUF));
  EXPECT_EQ(spec.pre, "smollm");
  EXPECT_FALSE(spec.ignore_merges);
  const Tokenizer gguf = Tokenizer::from_spec(spec);
  const Tokenizer json = Tokenizer::from_json_file(test::smollm2_json_path());
  EXPECT_EQ(gguf.vocab_size(), json.vocab_size());
  EXPECT_EQ(gguf.bos(), json.bos());
  EXPECT_EQ(gguf.eos(), json.eos());
  EXPECT_EQ(gguf.pad(), json.pad());
  EXPECT_EQ(gguf.chat_template(), json.chat_template());
  for (const auto& entry : test::reference()["strings"]) {
    const std::string text = entry["text"];
    EXPECT_EQ(gguf.encode(text, false, true), json.encode(text, false, true));
  }
}

}  // namespace
}  // namespace seer
