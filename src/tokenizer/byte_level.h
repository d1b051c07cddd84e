// GPT-2's byte-level alphabet: every byte is written as one printable character so that BPE
// vocabularies can be stored as text. Bytes that are printable Latin-1 characters ('!'..'~',
// U+00A1..U+00AC, U+00AE..U+00FF) stand for themselves; the other 68 bytes, in increasing order,
// become U+0100, U+0101, ... (so a space is 'Ġ' U+0120 and a newline 'Ċ' U+010A).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace seer::byte_level {

// The UTF-8 encoding of the character that stands for `byte`.
std::string_view char_of_byte(uint8_t byte);

// The bytes that `text` (a vocabulary entry) stands for, or nullopt when some character of it is
// not in the alphabet (an added token such as "<|reserved special token|>", whose space is not).
std::optional<std::string> bytes_of_text(std::string_view text);

}  // namespace seer::byte_level
