// The parts of a Hugging Face config.json that a Llama-family forward pass needs.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "gate/rope.h"

namespace seer {

struct HfConfig {
  enum class Architecture { llama, qwen2, mistral };
  Architecture architecture = Architecture::llama;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;    // num_hidden_layers
  int64_t num_heads = 0;     // num_attention_heads
  int64_t num_kv_heads = 0;  // num_key_value_heads (default: num_heads)
  int64_t head_dim = 0;      // default: hidden_size / num_heads
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;  // default: the architecture's HF default
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  RopeConfig rope;  // rope_theta and rope_scaling (or rope_parameters)
};

std::string_view architecture_name(HfConfig::Architecture architecture);

// Parses and validates config.json text; throws seer::Error naming the field for a missing or
// ill-typed field, an unsupported architecture (only llama, qwen2 and mistral are) or RoPE scaling
// type (only llama3 and yarn are), or inconsistent sizes.
HfConfig parse_hf_config(std::string_view json_text);
HfConfig read_hf_config(const std::string& path);

}  // namespace seer
