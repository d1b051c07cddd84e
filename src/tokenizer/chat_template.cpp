#include "tokenizer/chat_template.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace seer {
namespace {

// The template reduced to what recognition needs: its tags with the whitespace between Jinja
// tokens dropped and string literals unescaped (re-quoted with ' and \ escaped), plus the
// literals themselves.
struct Canonical {
  std::string text;
  std::vector<std::string> literals;
  bool prints_raw_text = false;
};

bool is_jinja_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Reads the string literal starting at source[i] (a quote) and returns the index after it.
size_t read_literal(std::string_view source, size_t i, std::string& value) {
  const char quote = source[i++];
  for (; i < source.size() && source[i] != quote; ++i) {
    if (source[i] != '\\' || i + 1 == source.size()) {
      value += source[i];
      continue;
    }
    switch (const char escaped = source[++i]) {
      case 'n': value += '\n'; break;
      case 't': value += '\t'; break;
      case 'r': value += '\r'; break;
      case '\\': case '\'': case '"': value += escaped; break;
      default: value += '\\', value += escaped;
    }
  }
  SEER_CHECK(i < source.size(), "chat template has an unterminated string literal");
  return i + 1;
}

// The part of the raw text source[begin, end) between two tags that Jinja prints, given the
// whitespace control of those tags: `-` on either side strips all whitespace on that side;
// otherwise trim_blocks drops one newline after a block tag, and lstrip_blocks drops the spaces
// and tabs before a block tag that starts its line.
std::string_view printed_raw(std::string_view source, size_t begin, size_t end, bool after_strip, bool after_block,
                             bool before_strip, bool before_block) {
  size_t lo = begin, hi = end;
  if (after_strip) {
    while (lo < hi && is_jinja_space(source[lo])) ++lo;
  } else if (after_block && lo < hi && source[lo] == '\n') {
    ++lo;
  }
  if (before_strip) {
    while (hi > lo && is_jinja_space(source[hi - 1])) --hi;
  } else if (before_block) {
    size_t line_start = end;
    while (line_start > 0 && (source[line_start - 1] == ' ' || source[line_start - 1] == '\t')) --line_start;
    if (line_start == 0 || source[line_start - 1] == '\n') hi = std::max(lo, std::min(hi, line_start));
  }
  return source.substr(lo, hi - lo);
}

Canonical canonicalize(std::string_view source) {
  // Jinja drops one newline at the very end of a template (keep_trailing_newline is off).
  if (source.ends_with('\n')) source.remove_suffix(1);
  Canonical c;
  bool after_strip = false, after_block = false;
  size_t i = 0;
  while (i < source.size()) {
    size_t tag = source.find('{', i);
    while (tag != std::string_view::npos && tag + 1 < source.size() && source[tag + 1] != '{' &&
           source[tag + 1] != '%' && source[tag + 1] != '#') {
      tag = source.find('{', tag + 1);
    }
    if (tag == std::string_view::npos || tag + 1 >= source.size()) tag = source.size();
    const char kind = tag < source.size() ? source[tag + 1] : '\0';
    const bool before_strip = tag + 2 < source.size() && source[tag + 2] == '-';
    const bool before_block = kind == '%' || kind == '#';
    if (!printed_raw(source, i, tag, after_strip, after_block, before_strip, before_block).empty()) {
      c.prints_raw_text = true;
    }
    if (tag == source.size()) break;

    const std::string_view close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    i = tag + 2 + (before_strip || (tag + 2 < source.size() && source[tag + 2] == '+') ? 1 : 0);
    std::string body;
    for (;;) {
      SEER_CHECK(i < source.size(), "chat template has an unterminated ", source.substr(tag, 2), " tag");
      if (kind != '#' && (source[i] == '\'' || source[i] == '"')) {
        std::string literal;
        i = read_literal(source, i, literal);
        body += '\'';
        for (char ch : literal) {
          if (ch == '\'' || ch == '\\') body += '\\';
          body += ch;
        }
        body += '\'';
        c.literals.push_back(std::move(literal));
      } else if (source.substr(i).starts_with(close) || (source[i] == '-' && source.substr(i + 1).starts_with(close))) {
        after_strip = source[i] == '-';
        i += close.size() + (after_strip ? 1 : 0);
        break;
      } else {
        if (!is_jinja_space(source[i])) body += source[i];
        ++i;
      }
    }
    after_block = kind != '{';
    if (kind == '#') continue;
    c.text += kind == '{' ? "{{" : "{%";
    c.text += body;
    c.text += kind == '{' ? "}}" : "%}";
  }
  // message.role and message['role'] are the same lookup.
  for (const auto& [attribute, item] : {std::pair{"message.role", "message['role']"},
                                        std::pair{"message.content", "message['content']"}}) {
    for (size_t at = c.text.find(attribute); at != std::string::npos; at = c.text.find(attribute, at)) {
      c.text.replace(at, std::string_view(attribute).size(), item);
    }
  }
  return c;
}

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

// Jinja's `trim`: Python's str.strip(), which strips the characters str.isspace() accepts.
std::string trim_python_space(std::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    const unicode::Decoded d = unicode::decode_utf8(text, begin);
    if (!unicode::is_python_space(d.code_point)) break;
    begin += d.length;
  }
  size_t end = begin;  // just after the last character that is not a space
  for (size_t pos = begin; pos < text.size();) {
    const unicode::Decoded d = unicode::decode_utf8(text, pos);
    pos += d.length;
    if (!unicode::is_python_space(d.code_point)) end = pos;
  }
  return std::string(text.substr(begin, end - begin));
}

constexpr std::string_view kChatmlMessage =
    "'<|im_start|>'+message['role']+'\n'+message['content']+'<|im_end|>'+'\n'";
constexpr std::string_view kChatmlGenerationPrompt = "{%ifadd_generation_prompt%}{{'<|im_start|>assistant\n'}}";
constexpr std::string_view kChatmlSystemStart = "<|im_start|>system\n", kChatmlEnd = "<|im_end|>\n";

constexpr std::string_view kLlama3Message =
    "'<|start_header_id|>'+message['role']+'<|end_header_id|>\n\n'+message['content']|trim+'<|eot_id|>'";
constexpr std::string_view kLlama3Bos = "bos_token+content";
constexpr std::string_view kLlama3GenerationPrompt =
    "{%ifadd_generation_prompt%}{{'<|start_header_id|>assistant<|end_header_id|>\n\n'}}";
// Llama 3.1+ templates use these; they add a system turn with dates and tool instructions.
constexpr std::string_view kLlama31Markers[] = {"system_message", "date_string", "tools"};

}  // namespace

ChatTemplate ChatTemplate::recognize(std::string_view source) {
  SEER_CHECK(!source.empty(), "the tokenizer has no chat template");
  const Canonical c = canonicalize(source);
  SEER_CHECK(!c.prints_raw_text, "unsupported chat template: it prints text outside its tags");
  ChatTemplate t;
  if (contains(c.text, kChatmlMessage) && contains(c.text, kChatmlGenerationPrompt)) {
    t.format_ = Format::chatml;
    t.handles_tools_ = contains(c.text, "tool");
    for (const std::string& literal : c.literals) {
      if (literal.size() <= kChatmlSystemStart.size() + kChatmlEnd.size() || !literal.starts_with(kChatmlSystemStart) ||
          !literal.ends_with(kChatmlEnd)) {
        continue;
      }
      const std::string prompt =
          literal.substr(kChatmlSystemStart.size(), literal.size() - kChatmlSystemStart.size() - kChatmlEnd.size());
      SEER_CHECK(t.default_system_prompt_.empty() || t.default_system_prompt_ == prompt,
                 "unsupported chat template: two default system prompts");
      t.default_system_prompt_ = prompt;
    }
    return t;
  }
  if (contains(c.text, kLlama3Message) && contains(c.text, kLlama3Bos) && contains(c.text, kLlama3GenerationPrompt)) {
    for (std::string_view marker : kLlama31Markers) {
      SEER_CHECK(!contains(c.text, marker), "unsupported chat template: Llama 3.1+ style (uses ", marker, ")");
    }
    t.format_ = Format::llama3;
    return t;
  }
  fail("unsupported chat template (neither ChatML nor Llama 3): ", source.substr(0, 200));
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 std::string_view bos_text) const {
  SEER_CHECK(!messages.empty(), "chat template applied to an empty conversation");
  std::string out;
  switch (format_) {
    case Format::chatml:
      if (!default_system_prompt_.empty() && messages.front().role != "system") {
        out += std::string(kChatmlSystemStart) + default_system_prompt_ + std::string(kChatmlEnd);
      }
      for (const ChatMessage& m : messages) {
        SEER_CHECK(!handles_tools_ || m.role == "system" || m.role == "user" || m.role == "assistant",
                   "chat role \"", m.role, "\" is not supported with this template (only system, user, assistant)");
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case Format::llama3:
      SEER_CHECK(!bos_text.empty(), "the Llama 3 chat template needs a BOS token");
      out += bos_text;
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim_python_space(m.content) + "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
  }
  fail("invalid chat template format ", int(format_));
}

}  // namespace seer
