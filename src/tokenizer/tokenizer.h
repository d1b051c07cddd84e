// Byte-level BPE tokenizer (GPT-2 style) giving the same ids as Hugging Face `tokenizers` for the
// SmolLM2, Llama 3, Qwen2 and GPT-2 families. See docs/tokenizer.md.
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pre_tokenizer.h"

namespace seer {

// Token types, numbered as GGUF's tokenizer.ggml.token_type.
namespace token_type {
inline constexpr int32_t normal = 1;
inline constexpr int32_t unknown = 2;
inline constexpr int32_t control = 3;       // special added token: matched in text only when asked
inline constexpr int32_t user_defined = 4;  // non-special added token: always matched in text
inline constexpr int32_t unused = 5;
inline constexpr int32_t byte = 6;
}  // namespace token_type

struct TokenizerSpec {
  std::vector<std::string> tokens;   // vocabulary in byte-level form ("Ġthe"), index = id
  std::vector<std::string> merges;   // "left right", highest priority first
  std::vector<int32_t> token_types;  // token_type values per token; empty: all normal
  int32_t bos = -1, eos = -1, pad = -1;  // -1 if none
  std::string pre;                   // pre-tokenizer name, see pre_tokenizer_from_name
  // A word that is itself in the vocabulary is one token, without merging (tokenizer.json's
  // model.ignore_merges; Llama 3 sets it).
  bool ignore_merges = false;
  std::string chat_template;         // Jinja source, recognized by apply_chat_template
};

// The spec of a Hugging Face tokenizer.json: byte-level BPE with a known pre-tokenizer, no
// normalizer, ByteLevel decoder; added tokens become control (special) or user_defined tokens.
// bos, eos, pad and the chat template come from tokenizer_config.json beside it, when it exists.
// Throws seer::Error for anything else.
TokenizerSpec spec_from_hf_json(const std::string& path);

struct ChatMessage {
  std::string role;
  std::string content;
};

class Tokenizer {
 public:
  // Validates the spec: unique tokens, every merge made of tokens whose concatenation is a token,
  // special ids in range. Throws seer::Error otherwise.
  static Tokenizer from_spec(TokenizerSpec spec);
  // from_spec(spec_from_hf_json(path)).
  static Tokenizer from_json_file(const std::string& path);

  // Added tokens (types user_defined, and control when parse_special) are cut out of the text
  // first, leftmost-longest; the rest is pre-tokenized and BPE-encoded. Any bytes are accepted,
  // and decode(encode(text)) == text except that bytes the vocabulary has no token for are
  // dropped, as Hugging Face drops them.
  std::vector<int32_t> encode(std::string_view text, bool add_bos = false, bool parse_special = false) const;
  // The bytes the ids stand for (not necessarily valid UTF-8 on its own, e.g. half a character).
  std::string decode(std::span<const int32_t> ids) const;
  // The vocabulary entry of `id` as stored (byte-level form, e.g. "Ġthe").
  std::string token_text(int32_t id) const;
  int32_t token_type(int32_t id) const;

  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  int32_t pad() const { return pad_; }
  int32_t vocab_size() const { return int32_t(tokens_.size()); }
  PreTokenizer pre_tokenizer() const { return pre_; }
  const std::string& chat_template() const { return chat_template_; }

  // Renders a conversation with the chat template (ChatML or Llama 3, see chat_template.h).
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 private:
  Tokenizer() = default;
  void check_id(int32_t id) const;
  // Pre-tokenizes and BPE-encodes text that holds no added token.
  void encode_plain(std::string_view text, std::vector<std::string_view>& pieces, BpeEncoder& encoder,
                    std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;
  std::vector<int32_t> types_;
  std::vector<std::string> token_bytes_;  // what decode emits for each id
  std::unordered_map<std::string, int32_t> ids_;  // by vocabulary entry, for ignore_merges
  std::array<int32_t, 256> byte_tokens_{};  // -1: no token for that byte
  BpeMerges merges_;
  bool ignore_merges_ = false;
  PreTokenizer pre_ = PreTokenizer::gpt2;
  // Added tokens by first byte, longest first, for leftmost-longest matching.
  std::array<std::vector<int32_t>, 256> added_by_first_byte_;
  int32_t bos_ = -1, eos_ = -1, pad_ = -1;
  std::string chat_template_;
};

}  // namespace seer
