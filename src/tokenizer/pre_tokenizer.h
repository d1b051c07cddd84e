// Pre-tokenizers: split text into the pieces that BPE encodes one at a time, exactly as the
// Hugging Face `tokenizers` pre-tokenizer of each model family does. The regexes are matched by
// hand (see pre_tokenizer.cpp) with the character classes of unicode_tables.h.
#pragma once
#include <string_view>
#include <vector>

namespace seer {

enum class PreTokenizer {
  // GPT-2's ByteLevel regex:
  //   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  gpt2,
  // SmolLM: Digits(individual_digits) isolates every \p{N} character, then the GPT-2 regex runs
  // on each stretch between them.
  smollm,
  // Llama 3:
  //   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  //   \s*[\r\n]+|\s+(?!\S)|\s+
  llama3,
  // Qwen2: Llama 3's regex with single digits (\p{N} instead of \p{N}{1,3}).
  qwen2,
};

// Names as in GGUF's tokenizer.ggml.pre: "gpt2" (or llama.cpp's "gpt-2"), "smollm", "llama-bpe",
// "qwen2". Throws seer::Error for any other name.
PreTokenizer pre_tokenizer_from_name(std::string_view name);
std::string_view pre_tokenizer_name(PreTokenizer kind);

// Appends the pieces of `text` to `pieces`, in order; they cover text exactly. Bytes that are not
// valid UTF-8 count as punctuation (class [^\s\p{L}\p{N}]) one byte at a time, as the replacement
// character U+FFFD would, so invalid input splits like its lossily decoded text but keeps its bytes.
void pre_tokenize(PreTokenizer kind, std::string_view text, std::vector<std::string_view>& pieces);

}  // namespace seer
