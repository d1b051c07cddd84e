#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "test_data.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"

namespace seer {
namespace {

std::vector<std::string> pieces_of(PreTokenizer kind, std::string_view text) {
  std::vector<std::string_view> views;
  pre_tokenize(kind, text, views);
  return {views.begin(), views.end()};
}

TEST(PreTokenizer, ExamplesOfEachFamily) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces_of(PreTokenizer::gpt2, "Hello  world's 2024!\n"), (V{"Hello", " ", " world", "'s", " 2024", "!", "\n"}));
  EXPECT_EQ(pieces_of(PreTokenizer::smollm, "Hello  world's 2024!\n"),
            (V{"Hello", " ", " world", "'s", " ", "2", "0", "2", "4", "!", "\n"}));
  EXPECT_EQ(pieces_of(PreTokenizer::llama3, "I'LL pay 12345\t\tnow  \n\n  x"),
            (V{"I", "'LL", " pay", " ", "123", "45", "\t", "\tnow", "  \n\n", " ", " x"}));
  EXPECT_EQ(pieces_of(PreTokenizer::qwen2, "pay 123."), (V{"pay", " ", "1", "2", "3", "."}));
  EXPECT_EQ(pieces_of(PreTokenizer::gpt2, ""), V{});
}

// Piece byte lengths equal those of Hugging Face's pre-tokenizers on every reference string.
TEST(PreTokenizer, MatchesHuggingFaceOnReferenceStrings) {
  for (const char* family : test::kFamilies) {
    const PreTokenizer kind = pre_tokenizer_from_name(family);
    int mismatches = 0;
    for (const auto& entry : test::reference()["strings"]) {
      const std::string text = entry["text"];
      std::vector<size_t> lengths;
      for (const std::string& piece : pieces_of(kind, text)) lengths.push_back(piece.size());
      const auto expected = entry["pieces"][family].get<std::vector<size_t>>();
      if (lengths != expected && ++mismatches <= 5) {
        ADD_FAILURE() << family << ": pieces of " << nlohmann::json(text).dump() << " have byte lengths "
                      << nlohmann::json(lengths).dump() << ", Hugging Face " << nlohmann::json(expected).dump();
      }
    }
    EXPECT_EQ(mismatches, 0) << family;
  }
}

// Invalid bytes split as U+FFFD would: the pieces of a random byte string, with each invalid byte
// replaced by U+FFFD, are the pieces of the replaced string.
TEST(PreTokenizer, InvalidBytesSplitLikeReplacementCharacters) {
  std::mt19937 rng(7);
  // Bias towards bytes that form (and break) UTF-8 sequences, spaces and letters.
  const std::string alphabet = "\x80\xBF\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\xFF\xED\xA0 \n\t'sa1!";
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    const int length = int(rng() % 24);
    for (int i = 0; i < length; ++i) text += alphabet[rng() % alphabet.size()];
    std::string replaced;
    std::vector<size_t> replaced_offset;  // offset in `replaced` of each byte offset in `text`
    for (size_t pos = 0; pos < text.size();) {
      const unicode::Decoded d = unicode::decode_utf8(text, pos);
      for (uint32_t k = 0; k < d.length; ++k) replaced_offset.push_back(replaced.size() + k);
      replaced += d.code_point == unicode::kInvalid ? std::string("\xEF\xBF\xBD") : text.substr(pos, d.length);
      pos += d.length;
    }
    replaced_offset.push_back(replaced.size());
    for (const char* family : test::kFamilies) {
      const PreTokenizer kind = pre_tokenizer_from_name(family);
      std::vector<size_t> mapped_ends, replaced_ends;
      size_t end = 0;
      for (const std::string& piece : pieces_of(kind, text)) mapped_ends.push_back(replaced_offset[end += piece.size()]);
      end = 0;
      for (const std::string& piece : pieces_of(kind, replaced)) replaced_ends.push_back(end += piece.size());
      ASSERT_EQ(mapped_ends, replaced_ends) << family << " on " << nlohmann::json(replaced).dump();
    }
  }
}

TEST(PreTokenizer, Names) {
  for (const char* family : test::kFamilies) EXPECT_EQ(pre_tokenizer_name(pre_tokenizer_from_name(family)), family);
  EXPECT_EQ(pre_tokenizer_from_name("gpt-2"), PreTokenizer::gpt2);
  EXPECT_THROW(pre_tokenizer_from_name("default"), Error);
}

TEST(Unicode, DecodeRejectsMalformedSequences) {
  const auto first = [](std::string_view s) { return unicode::decode_utf8(s, 0); };
  EXPECT_EQ(first("\xC3\xA9").code_point, 0xE9u);
  EXPECT_EQ(first("\xF0\x9F\x98\x80").code_point, 0x1F600u);
  for (std::string_view bad : {"\x80", "\xC0\xAF", "\xC3", "\xE0\x80\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                               "\xF8\x88\x80\x80\x80", "\xE4\xB8"}) {
    const unicode::Decoded d = first(bad);
    EXPECT_EQ(d.code_point, unicode::kInvalid) << testing::PrintToString(std::string(bad));
    EXPECT_EQ(d.length, 1u);
  }
}

TEST(Unicode, Classes) {
  using unicode::CharClass;
  EXPECT_EQ(unicode::char_class('a'), CharClass::letter);
  EXPECT_EQ(unicode::char_class(0x4E2D), CharClass::letter);   // 中
  EXPECT_EQ(unicode::char_class(0x0663), CharClass::number);   // Arabic-Indic three
  EXPECT_EQ(unicode::char_class(0x216B), CharClass::number);   // Roman numeral twelve (Nl)
  EXPECT_EQ(unicode::char_class(0x3000), CharClass::space);
  EXPECT_EQ(unicode::char_class(0x1C), CharClass::other);      // str.isspace() but not White_Space
  EXPECT_EQ(unicode::char_class(0x200B), CharClass::other);    // zero width space is not White_Space
  EXPECT_EQ(unicode::char_class(0x0301), CharClass::other);    // combining mark
  EXPECT_EQ(unicode::char_class(unicode::kInvalid), CharClass::other);
  EXPECT_TRUE(unicode::is_python_space(0x1C));
}

}  // namespace
}  // namespace seer
