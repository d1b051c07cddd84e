#include <gtest/gtest.h>

#include <map>

#include "core/error.h"
#include "test_data.h"
#include "tokenizer/chat_template.h"

namespace seer {
namespace {

std::vector<ChatMessage> messages_of(const nlohmann::json& j) {
  std::vector<ChatMessage> messages;
  for (const auto& m : j) messages.push_back({m["role"], m["content"]});
  return messages;
}

// Each reference conversation renders as jinja2 renders the template, set up as in transformers.
TEST(ChatTemplate, MatchesJinjaOnReferenceConversations) {
  for (const auto& chat : test::reference()["chats"]) {
    const ChatTemplate t = ChatTemplate::recognize(chat["template"].get<std::string>());
    EXPECT_EQ(t.render(messages_of(chat["messages"]), chat["add_generation_prompt"], chat["bos_token"].get<std::string>()),
              chat["text"].get<std::string>())
        << chat["template_name"];
  }
}

TEST(ChatTemplate, RecognizesFormatsAndDefaultSystemPrompts) {
  std::map<std::string, std::pair<ChatTemplate::Format, std::string>> seen;
  for (const auto& chat : test::reference()["chats"]) {
    const ChatTemplate t = ChatTemplate::recognize(chat["template"].get<std::string>());
    seen[chat["template_name"]] = {t.format(), t.default_system_prompt()};
  }
  using F = ChatTemplate::Format;
  EXPECT_EQ(seen["smollm2"], std::pair(F::chatml, std::string("You are a helpful AI assistant named SmolLM, trained by Hugging Face")));
  EXPECT_EQ(seen["qwen2"], std::pair(F::chatml, std::string("You are a helpful assistant.")));
  EXPECT_EQ(seen["qwen2.5"], std::pair(F::chatml, std::string("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")));
  EXPECT_EQ(seen["llama3"], std::pair(F::llama3, std::string()));
}

// The SmolLM2 tokenizer renders its own template (from tokenizer_config.json).
TEST(ChatTemplate, TokenizerAppliesItsTemplate) {
  const Tokenizer t = Tokenizer::from_json_file(test::smollm2_json_path());
  for (const auto& chat : test::reference()["chats"]) {
    if (chat["template_name"] != "smollm2") continue;
    EXPECT_EQ(t.apply_chat_template(messages_of(chat["messages"]), chat["add_generation_prompt"]),
              chat["text"].get<std::string>());
  }
  const std::vector<int32_t> ids =
      t.encode(t.apply_chat_template({{"user", "Hi"}}, true), false, true);
  EXPECT_EQ(ids.front(), 1);  // <|im_start|> parsed as the control token
}

TEST(ChatTemplate, RejectsWhatItCannotRender) {
  // Unknown format, a Llama 3.1-style template, printed raw text, no template at all.
  EXPECT_THROW(ChatTemplate::recognize("{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"), Error);
  EXPECT_THROW(ChatTemplate::recognize(
                   "{% set date_string = '26 Jul 2024' %}{% for message in messages %}{{ '<|start_header_id|>' + "
                   "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}{% set x = "
                   "bos_token + content %}{% endfor %}{% if add_generation_prompt %}{{ "
                   "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
               Error);
  const std::string chatml =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
      "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  EXPECT_NO_THROW(ChatTemplate::recognize(chatml));
  EXPECT_NO_THROW(ChatTemplate::recognize(chatml + "\n"));  // trim_blocks drops a newline after a block tag
  EXPECT_THROW(ChatTemplate::recognize(chatml + "\nSystem:"), Error);
  // lstrip_blocks drops indentation before a block tag only at the start of a line.
  EXPECT_NO_THROW(ChatTemplate::recognize(chatml + "\n  {% if x %}{% endif %}"));
  EXPECT_THROW(ChatTemplate::recognize(chatml + "  {% if x %}{% endif %}"), Error);
  EXPECT_THROW(ChatTemplate::recognize(chatml + "{{ x }}\n{% if x %}{% endif %}"), Error);  // trim_blocks: block tags only
  EXPECT_NO_THROW(ChatTemplate::recognize(chatml + "{{ x }}\n"));  // Jinja drops the template's final newline
  EXPECT_THROW(ChatTemplate::recognize(""), Error);
  EXPECT_THROW(ChatTemplate::recognize("{{ 'unterminated }}"), Error);
  EXPECT_THROW(ChatTemplate::recognize(chatml).render({}, true, ""), Error);

  // Tool-aware templates (Qwen2.5) render tool turns differently; plain ChatML does not care.
  for (const auto& chat : test::reference()["chats"]) {
    if (chat["template_name"] != "qwen2.5") continue;
    EXPECT_THROW(ChatTemplate::recognize(chat["template"].get<std::string>()).render({{"tool", "42"}}, false, ""), Error);
    break;
  }
  EXPECT_EQ(ChatTemplate::recognize(chatml).render({{"tool", "42"}}, false, ""), "<|im_start|>tool\n42<|im_end|>\n");
}

}  // namespace
}  // namespace seer
