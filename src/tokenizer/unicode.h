// UTF-8 decoding that never fails, and the regex character classes of a code point.
#pragma once
#include <cstdint>
#include <string_view>

#include "tokenizer/unicode_tables.h"

namespace seer::unicode {

// The code point reported for a byte that does not start a valid UTF-8 sequence (a stray
// continuation byte, a truncated or overlong sequence, a surrogate, anything above U+10FFFF).
inline constexpr uint32_t kInvalid = 0xFFFFFFFFu;

struct Decoded {
  uint32_t code_point;  // kInvalid for an invalid byte
  uint32_t length;      // bytes consumed: 1..4, and 1 for an invalid byte
};

// Decodes the sequence starting at text[pos] (pos < text.size()).
Decoded decode_utf8(std::string_view text, size_t pos);

// \p{L}, \p{N} or \s as the Hugging Face regex engine sees them; `other` for everything else,
// including kInvalid.
CharClass char_class(uint32_t code_point);

// Python's str.isspace(), which Jinja's `trim` filter strips: White_Space plus U+001C..U+001F.
bool is_python_space(uint32_t code_point);

}  // namespace seer::unicode
