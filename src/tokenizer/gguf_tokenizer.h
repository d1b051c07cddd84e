// TokenizerSpec from the tokenizer.* metadata of a GGUF model file. Kept apart from the tokenizer
// so that the tokenizer itself does not depend on the GGUF reader.
#pragma once
#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

namespace seer {

// Reads tokenizer.ggml.{model,pre,tokens,token_type,merges,bos_token_id,eos_token_id,
// padding_token_id} and tokenizer.chat_template. Only byte-level BPE (model "gpt2") with a known
// pre-tokenizer is supported; anything else throws seer::Error.
TokenizerSpec spec_from_gguf(const GgufFile& file);

}  // namespace seer
