// The regexes are alternations tried in order at each position, and every character matches some
// alternative, so a pre-tokenizer is a function from a start position to the end of the first
// alternative that matches there. Each `match_*` below is that function, written out with the
// result Oniguruma's backtracking gives:
//  - `X+` is greedy and nothing after it in the same alternative can make it give characters back,
//    except the whitespace alternatives noted in match_whitespace;
//  - ` ?X+` takes the space only when X follows it (otherwise the alternative fails, since a space
//    is not in X);
//  - the end of the text being split (a stretch between added tokens or, for SmolLM, between
//    digits) is the end of the string for the lookahead (?!\S).
#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace seer {
namespace {

using unicode::CharClass;

struct Char {
  uint32_t code_point;
  uint32_t offset;  // of its first byte in the text
  CharClass cls;
};

std::vector<Char> decode(std::string_view text) {
  std::vector<Char> chars;
  chars.reserve(text.size() + 1);
  for (size_t pos = 0; pos < text.size();) {
    const unicode::Decoded d = unicode::decode_utf8(text, pos);
    chars.push_back({d.code_point, uint32_t(pos), unicode::char_class(d.code_point)});
    pos += d.length;
  }
  chars.push_back({0, uint32_t(text.size()), CharClass::other});  // sentinel: end offset
  return chars;
}

// End of the run of class `cls` starting at i (chars[i] is in it).
size_t run_end(const Char* c, size_t i, size_t n, CharClass cls) {
  while (i < n && c[i].cls == cls) ++i;
  return i;
}

bool is_cr_or_lf(uint32_t cp) { return cp == '\r' || cp == '\n'; }

// The whitespace alternatives once c[i] is known to be whitespace:
//   \s+(?!\S) takes the whole run at the end of the text, otherwise all but the last whitespace
//   character (which must stay in front of the next non-space); with a single whitespace character
//   before a non-space it fails and \s+ takes that one character.
size_t match_whitespace(const Char* c, size_t i, size_t n) {
  const size_t end = run_end(c, i, n, CharClass::space);
  if (end == n || end - i == 1) return end;
  return end - 1;
}

// 's|'t|'re|'ve|'m|'ll|'d, case-sensitively (GPT-2) or not (Llama 3, Qwen2): the end of the
// contraction starting at c[i], or i if there is none. Under (?i) Oniguruma also lets U+017F LATIN
// SMALL LETTER LONG S match 's'; no other non-ASCII character folds to one of these letters.
size_t match_contraction(const Char* c, size_t i, size_t n, bool ignore_case) {
  if (c[i].code_point != '\'' || i + 1 >= n) return i;
  const auto fold = [ignore_case](uint32_t cp) -> uint32_t {
    if (!ignore_case) return cp;
    if (cp >= 'A' && cp <= 'Z') return cp + ('a' - 'A');
    return cp == 0x17F ? 's' : cp;
  };
  const uint32_t first = fold(c[i + 1].code_point);
  if (first == 's' || first == 't' || first == 'm' || first == 'd') return i + 2;
  if (i + 2 < n) {
    const uint32_t second = fold(c[i + 2].code_point);
    if ((first == 'r' || first == 'v') && second == 'e') return i + 3;
    if (first == 'l' && second == 'l') return i + 3;
  }
  return i;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t match_gpt2(const Char* c, size_t i, size_t n) {
  if (const size_t end = match_contraction(c, i, n, false); end != i) return end;
  // ` ?` joins a space to a following letter, number or punctuation run.
  const size_t start = (c[i].code_point == ' ' && i + 1 < n && c[i + 1].cls != CharClass::space) ? i + 1 : i;
  if (c[start].cls != CharClass::space) return run_end(c, start, n, c[start].cls);
  return match_whitespace(c, i, n);
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t match_llama3(const Char* c, size_t i, size_t n, size_t max_digits) {
  if (const size_t end = match_contraction(c, i, n, true); end != i) return end;
  const CharClass cls = c[i].cls;
  if (cls == CharClass::letter) return run_end(c, i, n, CharClass::letter);
  // One character that is not a letter, number, CR or LF may lead a letter run.
  if (cls != CharClass::number && !is_cr_or_lf(c[i].code_point) && i + 1 < n &&
      c[i + 1].cls == CharClass::letter) {
    return run_end(c, i + 1, n, CharClass::letter);
  }
  if (cls == CharClass::number) return std::min(run_end(c, i, n, CharClass::number), i + max_digits);
  const size_t start = (c[i].code_point == ' ' && i + 1 < n && c[i + 1].cls == CharClass::other) ? i + 1 : i;
  if (c[start].cls == CharClass::other) {
    size_t end = run_end(c, start, n, CharClass::other);
    while (end < n && is_cr_or_lf(c[end].code_point)) ++end;
    return end;
  }
  // c[i] is whitespace. \s*[\r\n]+ backtracks to the last CR or LF of the whitespace run and
  // ends just after it.
  const size_t run = run_end(c, i, n, CharClass::space);
  for (size_t end = run; end > i; --end) {
    if (is_cr_or_lf(c[end - 1].code_point)) return end;
  }
  return match_whitespace(c, i, n);
}

// Splits chars [begin, end) with `match` and appends the pieces.
template <typename Match>
void split(std::string_view text, const Char* c, size_t begin, size_t end, Match match,
           std::vector<std::string_view>& pieces) {
  for (size_t i = begin; i < end;) {
    const size_t next = match(c, i, end);
    pieces.push_back(text.substr(c[i].offset, c[next].offset - c[i].offset));
    i = next;
  }
}

}  // namespace

PreTokenizer pre_tokenizer_from_name(std::string_view name) {
  if (name == "gpt2" || name == "gpt-2") return PreTokenizer::gpt2;
  if (name == "smollm") return PreTokenizer::smollm;
  if (name == "llama-bpe") return PreTokenizer::llama3;
  if (name == "qwen2") return PreTokenizer::qwen2;
  fail("unsupported pre-tokenizer \"", name, "\" (known: gpt2, smollm, llama-bpe, qwen2)");
}

std::string_view pre_tokenizer_name(PreTokenizer kind) {
  switch (kind) {
    case PreTokenizer::gpt2: return "gpt2";
    case PreTokenizer::smollm: return "smollm";
    case PreTokenizer::llama3: return "llama-bpe";
    case PreTokenizer::qwen2: return "qwen2";
  }
  fail("invalid PreTokenizer value ", int(kind));
}

void pre_tokenize(PreTokenizer kind, std::string_view text, std::vector<std::string_view>& pieces) {
  SEER_CHECK(text.size() < UINT32_MAX, "text of ", text.size(), " bytes is too long to tokenize at once");
  const std::vector<Char> chars = decode(text);
  const Char* c = chars.data();
  const size_t n = chars.size() - 1;
  switch (kind) {
    case PreTokenizer::gpt2:
      split(text, c, 0, n, match_gpt2, pieces);
      return;
    case PreTokenizer::smollm:
      for (size_t i = 0; i < n;) {
        if (c[i].cls == CharClass::number) {
          pieces.push_back(text.substr(c[i].offset, c[i + 1].offset - c[i].offset));
          ++i;
          continue;
        }
        size_t stretch_end = i;
        while (stretch_end < n && c[stretch_end].cls != CharClass::number) ++stretch_end;
        split(text, c, i, stretch_end, match_gpt2, pieces);
        i = stretch_end;
      }
      return;
    case PreTokenizer::llama3:
      split(text, c, 0, n, [](const Char* c, size_t i, size_t n) { return match_llama3(c, i, n, 3); }, pieces);
      return;
    case PreTokenizer::qwen2:
      split(text, c, 0, n, [](const Char* c, size_t i, size_t n) { return match_llama3(c, i, n, 1); }, pieces);
      return;
  }
  fail("invalid PreTokenizer value ", int(kind));
}

}  // namespace seer
