#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/unicode.h"

namespace seer::byte_level {
namespace {

bool stands_for_itself(uint32_t byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
}

// Highest code point of the alphabet: 256 + 68 - 1.
constexpr uint32_t kLastChar = 0x143;

struct Alphabet {
  std::array<std::string, 256> char_of_byte;
  std::array<int16_t, kLastChar + 1> byte_of_char;  // -1: not in the alphabet

  Alphabet() {
    byte_of_char.fill(-1);
    uint32_t next_extra = 256;
    for (uint32_t byte = 0; byte < 256; ++byte) {
      const uint32_t cp = stands_for_itself(byte) ? byte : next_extra++;
      byte_of_char[cp] = int16_t(byte);
      // Every character is below U+0800: one or two UTF-8 bytes.
      char_of_byte[byte] = cp < 0x80 ? std::string(1, char(cp))
                                     : std::string{char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet instance;
  return instance;
}

}  // namespace

std::string_view char_of_byte(uint8_t byte) { return alphabet().char_of_byte[byte]; }

std::optional<std::string> bytes_of_text(std::string_view text) {
  const Alphabet& a = alphabet();
  std::string bytes;
  bytes.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const unicode::Decoded d = unicode::decode_utf8(text, pos);
    if (d.code_point > kLastChar || a.byte_of_char[d.code_point] < 0) return std::nullopt;
    bytes.push_back(char(a.byte_of_char[d.code_point]));
    pos += d.length;
  }
  return bytes;
}

}  // namespace seer::byte_level
