// LlamaConfig checks (in seer_cpu: every backend, the CUDA runtime included, validates configs;
// model/tensor_shard.cpp, the tensor-parallel split, is there for the same reason).
#include "core/error.h"
#include "model/llama.h"

namespace seer {

void LlamaConfig::validate() const {
  SEER_CHECK(architecture == "llama" || architecture == "mistral" || architecture == "qwen2",
             "unsupported architecture '", architecture, "' (supported: llama, mistral, qwen2)");
  SEER_CHECK(layers > 0 && hidden > 0 && intermediate > 0 && vocab > 0, "model config: layers (", layers,
             "), hidden (", hidden, "), intermediate (", intermediate, ") and vocab (", vocab, ") must be positive");
  SEER_CHECK(q_heads > 0 && kv_heads > 0 && q_heads % kv_heads == 0, "model config: ", q_heads,
             " query heads are not a multiple of ", kv_heads, " KV heads");
  SEER_CHECK(head_dim > 0 && head_dim % 2 == 0, "model config: head dim must be positive and even, got ", head_dim);
  SEER_CHECK(rms_eps > 0, "model config: RMSNorm epsilon must be positive, got ", rms_eps);
  rope.validate();
}

}  // namespace seer
