#include "tokenizer/gguf_tokenizer.h"

#include "core/error.h"

namespace seer {

TokenizerSpec spec_from_gguf(const GgufFile& file) {
  const std::string model = file.get_string("tokenizer.ggml.model");
  SEER_CHECK(model == "gpt2", "GGUF tokenizer model \"", model, "\" is not supported (only byte-level BPE, \"gpt2\")");
  // Without tokenizer.ggml.pre llama.cpp falls back to a regex of its own that no Hugging Face
  // tokenizer uses; refuse rather than guess.
  SEER_CHECK(file.find("tokenizer.ggml.pre") != nullptr, "GGUF file has no tokenizer.ggml.pre");

  TokenizerSpec spec;
  spec.pre = file.get_string("tokenizer.ggml.pre");
  spec.tokens = file.get_string_array("tokenizer.ggml.tokens");
  spec.merges = file.get_string_array("tokenizer.ggml.merges");
  if (file.find("tokenizer.ggml.token_type")) spec.token_types = file.get_int_array("tokenizer.ggml.token_type");
  const auto optional_id = [&](const char* key) -> int32_t {
    if (!file.find(key)) return -1;
    const int64_t id = file.get_int(key);
    SEER_CHECK(id >= -1 && id < int64_t(spec.tokens.size()), "GGUF ", key, " = ", id, " is outside the vocabulary of ",
               spec.tokens.size());
    return int32_t(id);
  };
  spec.bos = optional_id("tokenizer.ggml.bos_token_id");
  spec.eos = optional_id("tokenizer.ggml.eos_token_id");
  spec.pad = optional_id("tokenizer.ggml.padding_token_id");
  if (file.find("tokenizer.chat_template")) spec.chat_template = file.get_string("tokenizer.chat_template");
  // GGUF does not store tokenizer.json's model.ignore_merges; llama.cpp sets it for Llama 3, the
  // one family here whose tokenizer.json has it.
  spec.ignore_merges = spec.pre == "llama-bpe";
  return spec;
}

}  // namespace seer
