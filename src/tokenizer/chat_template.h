// Chat templates without a Jinja engine: the template source is recognized as one of two known
// formats and rendered natively, byte for byte as transformers' apply_chat_template would.
//
//  - ChatML (SmolLM2, Qwen2, Qwen2.5): `<|im_start|>{role}\n{content}<|im_end|>\n` per message,
//    `<|im_start|>assistant\n` as the generation prompt, and, when the template carries a default
//    system prompt (a literal `<|im_start|>system\n...<|im_end|>\n`), that system turn first unless
//    the conversation starts with one.
//  - Llama 3: `{bos}<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>`, the
//    BOS text only before the first message, `<|start_header_id|>assistant<|end_header_id|>\n\n`
//    as the generation prompt. The 3.1+ templates (tools, dates, a forced system turn) are not
//    recognized.
//
// Recognition looks for the format's expressions in a canonical form of the source (whitespace
// between Jinja tokens removed, string literals unescaped, `message.x` written `message['x']`);
// a template without the expressions, or with raw text outside its tags that would be printed,
// throws seer::Error. The whitespace rules are those transformers sets up (trim_blocks,
// lstrip_blocks). Recognition is by expressions, not a proof of equivalence: a template that
// contains them but also prints something else (e.g. a system prompt built from variables) is
// rendered without that something.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace seer {

class ChatTemplate {
 public:
  enum class Format { chatml, llama3 };

  static ChatTemplate recognize(std::string_view source);

  // bos_text is the BOS token's text; Llama 3 needs it. Throws for an empty conversation (the
  // ChatML templates disagree on it) and, for templates that handle tool calls, for roles other
  // than system, user and assistant.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     std::string_view bos_text) const;

  Format format() const { return format_; }
  const std::string& default_system_prompt() const { return default_system_prompt_; }

 private:
  Format format_ = Format::chatml;
  std::string default_system_prompt_;  // empty: none
  bool handles_tools_ = false;
};

}  // namespace seer
