// Llama-family models (llama, mistral, qwen2): configuration and weights in host memory, as loaded
// from a GGUF file or a Hugging Face safetensors directory. Every backend (CPU forward, CUDA
// runtime) starts from these.
//
// Matrices are row-major [out_features, in_features] float, as PyTorch's nn.Linear stores them, with
// Q and K rows in the rotate-half (Hugging Face) order: GGUF files written by llama.cpp store Q/K
// rows permuted for interleaved RoPE, and the loader undoes that permutation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gate/rope.h"

namespace seer {

struct LlamaConfig {
  std::string architecture;  // "llama", "mistral" or "qwen2"
  std::string name;          // general.name or the directory name: identifies the base model
  int layers = 0, hidden = 0, q_heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0, vocab = 0;
  double rms_eps = 1e-5;
  RopeConfig rope;
  int max_positions = 0;
  bool tied_embeddings = false;
  bool qkv_bias = false;  // qwen2
  int bos = -1, eos = -1;
  // Whether the tokenizer puts BOS before a text (GGUF tokenizer.ggml.add_bos_token, HF
  // tokenizer_config.json add_bos_token; false when the file does not say).
  bool add_bos = false;

  void validate() const;
};

struct LlamaLayerWeights {
  std::vector<float> attn_norm;           // [hidden]
  std::vector<float> wq, wk, wv, wo;      // [H_q*d, hidden], [H_kv*d, hidden] x2, [hidden, H_q*d]
  std::vector<float> bq, bk, bv;          // empty unless qkv_bias
  std::vector<float> ffn_norm;            // [hidden]
  std::vector<float> w_gate, w_up;        // [intermediate, hidden]
  std::vector<float> w_down;              // [hidden, intermediate]
};

struct LlamaWeights {
  LlamaConfig config;
  std::vector<float> embed;       // [vocab, hidden]
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> lm_head;     // [vocab, hidden]; empty when tied to embed
  std::vector<LlamaLayerWeights> layers;

  const std::vector<float>& output_matrix() const { return lm_head.empty() ? embed : lm_head; }
};

// LlamaConfig::validate is defined in llama_config.cpp, part of seer_cpu.

// Loads a .gguf file or a directory with config.json and model.safetensors (or a sharded index).
// Throws seer::Error naming the missing or malformed tensor or field.
LlamaWeights load_llama(const std::string& path);

}  // namespace seer
