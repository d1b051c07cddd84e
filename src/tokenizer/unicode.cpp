#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>

namespace seer::unicode {
namespace {

// Almost all text is ASCII: look those classes up directly instead of searching the ranges.
constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> classes{};
  for (const ClassRange& range : kClassRanges) {
    for (uint32_t cp = range.first; cp <= range.last && cp < 128; ++cp) classes[cp] = range.cls;
  }
  return classes;
}
constexpr std::array<CharClass, 128> kAsciiClasses = make_ascii_classes();

bool is_continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

Decoded decode_utf8(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[pos + i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return {lead, 1};
  const size_t left = text.size() - pos;
  // Lead byte ranges and the allowed range of the first continuation byte (RFC 3629 table):
  // these exclude overlong forms, surrogates and code points above U+10FFFF.
  uint32_t length = 0, code_point = 0;
  unsigned char second_min = 0x80, second_max = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2, code_point = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3, code_point = lead & 0x0Fu;
    if (lead == 0xE0) second_min = 0xA0;
    if (lead == 0xED) second_max = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4, code_point = lead & 0x07u;
    if (lead == 0xF0) second_min = 0x90;
    if (lead == 0xF4) second_max = 0x8F;
  } else {
    return {kInvalid, 1};
  }
  if (left < length || byte(1) < second_min || byte(1) > second_max) return {kInvalid, 1};
  for (uint32_t i = 1; i < length; ++i) {
    if (!is_continuation(byte(i))) return {kInvalid, 1};
    code_point = (code_point << 6) | (byte(i) & 0x3Fu);
  }
  return {code_point, length};
}

CharClass char_class(uint32_t code_point) {
  if (code_point < 128) return kAsciiClasses[code_point];
  const auto* end = std::end(kClassRanges);
  const auto* it = std::upper_bound(std::begin(kClassRanges), end, code_point,
                                    [](uint32_t cp, const ClassRange& range) { return cp < range.first; });
  if (it == std::begin(kClassRanges)) return CharClass::other;
  --it;
  return code_point <= it->last ? it->cls : CharClass::other;
}

bool is_python_space(uint32_t code_point) {
  return (code_point >= 0x1C && code_point <= 0x1F) || char_class(code_point) == CharClass::space;
}

}  // namespace seer::unicode
