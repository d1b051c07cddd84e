#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/chat_template.h"

namespace seer {
namespace {

bool is_added(int32_t type) { return type == token_type::control || type == token_type::user_defined; }

}  // namespace

Tokenizer Tokenizer::from_spec(TokenizerSpec spec) {
  const size_t n = spec.tokens.size();
  SEER_CHECK(n > 0, "tokenizer vocabulary is empty");
  SEER_CHECK(n < size_t(INT32_MAX), "tokenizer vocabulary of ", n, " tokens is too large");
  SEER_CHECK(spec.token_types.empty() || spec.token_types.size() == n, "tokenizer has ", n, " tokens but ",
             spec.token_types.size(), " token types");
  Tokenizer t;
  t.pre_ = pre_tokenizer_from_name(spec.pre);
  t.tokens_ = std::move(spec.tokens);
  t.types_ = spec.token_types.empty() ? std::vector<int32_t>(n, token_type::normal) : std::move(spec.token_types);
  t.ignore_merges_ = spec.ignore_merges;
  t.chat_template_ = std::move(spec.chat_template);

  t.ids_.reserve(n);
  for (size_t id = 0; id < n; ++id) {
    const auto [it, inserted] = t.ids_.emplace(t.tokens_[id], int32_t(id));
    SEER_CHECK(inserted, "tokens ", it->second, " and ", id, " are both \"", t.tokens_[id], "\"");
  }
  // Some vocabularies lack a few bytes (SmolLM2 has no token for 0x04, 0x06, 0x13, 0x14, 0x16, 0x1D
  // and the bytes that never occur in UTF-8); like Hugging Face, encode drops them.
  for (int byte = 0; byte < 256; ++byte) {
    const auto it = t.ids_.find(std::string(byte_level::char_of_byte(uint8_t(byte))));
    t.byte_tokens_[size_t(byte)] = it == t.ids_.end() ? -1 : it->second;
  }

  std::vector<std::array<int32_t, 3>> merges;
  merges.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const std::string& merge = spec.merges[rank];
    const size_t space = merge.find(' ');
    SEER_CHECK(space != std::string::npos && merge.find(' ', space + 1) == std::string::npos,
               "merge ", rank, " \"", merge, "\" is not two tokens separated by one space");
    const std::string left = merge.substr(0, space), right = merge.substr(space + 1);
    const auto l = t.ids_.find(left), r = t.ids_.find(right), m = t.ids_.find(left + right);
    SEER_CHECK(l != t.ids_.end() && r != t.ids_.end() && m != t.ids_.end(), "merge ", rank, " \"", merge,
               "\" uses or makes a token that is not in the vocabulary");
    merges.push_back({l->second, r->second, m->second});
  }
  t.merges_ = BpeMerges(merges);

  t.token_bytes_.resize(n);
  for (size_t id = 0; id < n; ++id) {
    // As Hugging Face's ByteLevel decoder: a token whose characters are not all in the byte-level
    // alphabet (in practice an added token, e.g. one with a space) stands for its own UTF-8 text.
    t.token_bytes_[id] = byte_level::bytes_of_text(t.tokens_[id]).value_or(t.tokens_[id]);
    if (is_added(t.types_[id])) {
      SEER_CHECK(!t.tokens_[id].empty(), "added token ", id, " is empty");
      t.added_by_first_byte_[uint8_t(t.tokens_[id][0])].push_back(int32_t(id));
    }
  }
  for (std::vector<int32_t>& candidates : t.added_by_first_byte_) {
    std::stable_sort(candidates.begin(), candidates.end(),
                     [&](int32_t a, int32_t b) { return t.tokens_[size_t(a)].size() > t.tokens_[size_t(b)].size(); });
  }

  const auto check_special = [n](int32_t id, const char* what) {
    SEER_CHECK(id >= -1 && id < int32_t(n), what, " token id ", id, " is outside the vocabulary of ", n);
  };
  check_special(spec.bos, "BOS");
  check_special(spec.eos, "EOS");
  check_special(spec.pad, "padding");
  t.bos_ = spec.bos, t.eos_ = spec.eos, t.pad_ = spec.pad;
  return t;
}

void Tokenizer::encode_plain(std::string_view text, std::vector<std::string_view>& pieces, BpeEncoder& encoder,
                             std::vector<int32_t>& out) const {
  if (text.empty()) return;
  pieces.clear();
  pre_tokenize(pre_, text, pieces);
  std::string word;
  for (std::string_view piece : pieces) {
    if (ignore_merges_) {
      word.clear();
      for (char byte : piece) word += byte_level::char_of_byte(uint8_t(byte));
      if (const auto it = ids_.find(word); it != ids_.end()) {
        out.push_back(it->second);
        continue;
      }
    }
    encoder.encode(piece, byte_tokens_, merges_, out);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos) {
    SEER_CHECK(bos_ >= 0, "encode with add_bos, but the tokenizer has no BOS token");
    out.push_back(bos_);
  }
  std::vector<std::string_view> pieces;
  BpeEncoder encoder;
  size_t plain_start = 0;
  for (size_t i = 0; i < text.size();) {
    int32_t match = -1;
    for (int32_t id : added_by_first_byte_[uint8_t(text[i])]) {
      if (types_[size_t(id)] == token_type::control && !parse_special) continue;
      if (text.substr(i).starts_with(tokens_[size_t(id)])) {
        match = id;
        break;
      }
    }
    if (match < 0) {
      ++i;
      continue;
    }
    encode_plain(text.substr(plain_start, i - plain_start), pieces, encoder, out);
    out.push_back(match);
    i += tokens_[size_t(match)].size();
    plain_start = i;
  }
  encode_plain(text.substr(plain_start), pieces, encoder, out);
  return out;
}

void Tokenizer::check_id(int32_t id) const {
  SEER_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is outside the vocabulary of ", vocab_size());
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (int32_t id : ids) {
    check_id(id);
    text += token_bytes_[size_t(id)];
  }
  return text;
}

std::string Tokenizer::token_text(int32_t id) const {
  check_id(id);
  return tokens_[size_t(id)];
}

int32_t Tokenizer::token_type(int32_t id) const {
  check_id(id);
  return types_[size_t(id)];
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages,
                                           bool add_generation_prompt) const {
  const ChatTemplate recognized = ChatTemplate::recognize(chat_template_);
  return recognized.render(messages, add_generation_prompt, bos_ >= 0 ? tokens_[size_t(bos_)] : std::string());
}

}  // namespace seer
