// Reading Llama-family models: the configuration from GGUF metadata or config.json, the weights
// (dequantized once to float), the tokenizer, and where the built-in model lives.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace seer {

// The built-in model, relative to the repository root (scripts/fetch_model.sh puts it there).
inline constexpr const char* kBuiltinModel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

// `requested` when it is non-empty (it must exist); otherwise the built-in model, looked for under
// the source tree this binary was built from and then under the current directory. Throws
// seer::Error telling the user to run scripts/setup.sh when it is nowhere.
std::string resolve_model_path(const std::string& requested);

// A GGUF file rather than a Hugging Face directory.
bool is_gguf_path(const std::string& path);

// Configuration only (no tensor data is read): for `seer info` and the loaders below.
// `fallback_name` names the model when the file has no general.name (GGUF) or for directories.
LlamaConfig llama_config_from_gguf(const GgufFile& file, const std::string& fallback_name);
LlamaConfig llama_config_from_hf(const SafetensorsModel& model, const std::string& dir);

LlamaWeights load_llama_gguf(const GgufFile& file, const std::string& fallback_name);
LlamaWeights load_llama_hf(const SafetensorsModel& model, const std::string& dir);

// llama.cpp's converter stores the rows of each head of Q and K (weights [heads*head_dim, row_length]
// or biases, row_length 1) as row 2i + s for the Hugging Face row s*head_dim/2 + i (s in {0, 1}), so
// that its interleaved RoPE rotates the pairs that rotate-half RoPE rotates. This puts them back.
void unpermute_rope_rows(std::vector<float>& rows, int heads, int head_dim, int64_t row_length);

// The model's tokenizer: from the GGUF metadata, or tokenizer.json in the directory.
Tokenizer load_llama_tokenizer(const std::string& path);

}  // namespace seer
