// The Llama-family forward pass on the CPU, with a KV cache.
//
// Per token: embedding; per layer RMSNorm, Q/K/V projections (+ biases for qwen2), rotate-half
// RoPE, attention over the cache (model/cached_attention.h), output projection and residual,
// RMSNorm, SwiGLU MLP and residual; then the final RMSNorm and the LM head. Weights are used as
// loaded (float, [out, in]); matrix products go through OpenBLAS (model/linear.h), the rest are
// OpenMP loops. Every buffer is allocated at construction or when a longer prefill chunk first
// arrives, so decoding allocates nothing.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "gate/attn_gate.h"
#include "gate/rope.h"
#include "gate/selection.h"
#include "model/cached_attention.h"
#include "model/llama.h"

namespace seer {

enum class AttentionMethod { dense, seer };

struct CpuForwardOptions {
  int64_t context = 0;  // KV cache capacity in tokens; 0: the model's max_positions
  // Prefill runs a prompt through all layers `chunk` tokens at a time, each chunk attending to the
  // cache, so activations grow with the chunk and not with the prompt.
  int64_t chunk = 2048;
  AttentionMethod attention = AttentionMethod::dense;
  // SeerAttention: one gate per layer (kept alive by the caller) and the block selection. The gate
  // scores the block map of the whole prompt, so a prefill from an empty cache runs as one chunk
  // through gate_forward and select_blocks, then attends to the selected blocks. Tokens added
  // later (decode, further prefill) attend densely: the released gates are prefill-only.
  std::span<const GateWeights<float>> gates;
  SelectionOptions selection;
  // Tensor parallelism (model/tensor_shard.h): the weights (and gates) are rank `rank`'s shard, and
  // all_reduce sums a residual-stream buffer over the ranks in place. Rank 0 adds its partial
  // W_o and W_down products to the residual stream, the other ranks write theirs in its place, so
  // the sum is the stream plus the whole update on every rank. Unset: one device.
  int rank = 0;
  std::function<void(std::span<float>)> all_reduce = nullptr;
};

class LlamaCpu {
 public:
  // Receives the logits [vocab] of the token at `index` of the tokens passed to forward().
  using LogitsVisitor = std::function<void(int64_t index, std::span<const float> logits)>;

  // Keeps a reference to `weights`, which must outlive this object.
  explicit LlamaCpu(const LlamaWeights& weights, const CpuForwardOptions& options = {});

  const LlamaConfig& config() const { return weights_.config; }
  int64_t position() const { return position_; }  // tokens in the cache
  int64_t capacity() const { return capacity_; }
  void reset() { position_ = 0; }  // empties the cache

  // Appends `tokens` to the cache, running them through the model, and calls `visit` in order for
  // every index >= logits_from (the LM head runs only for those rows).
  void forward(std::span<const int32_t> tokens, int64_t logits_from, const LogitsVisitor& visit);
  // forward() returning the logits of the last token (valid until the next call).
  std::span<const float> prefill(std::span<const int32_t> tokens);
  std::span<const float> decode(int32_t token);

  // Fraction of the causal blocks that the last SeerAttention prefill attended to, averaged over
  // layers; 1 after a dense prefill.
  double last_density() const { return last_density_; }

 private:
  static constexpr int64_t kLogitRows = 64;  // LM-head rows per product: bounds the logits buffer

  void ensure_rows(int64_t rows);
  // One chunk through every layer; `index0` is the index of its first token in forward()'s tokens.
  void step(std::span<const int32_t> tokens, int64_t logits_from, int64_t index0, const LogitsVisitor& visit,
            bool sparse);
  void set_rope_table(int64_t first, int64_t n);
  void rotate(float* x, int64_t n, int heads) const;

  const LlamaWeights& weights_;
  CpuForwardOptions options_;
  int64_t capacity_ = 0;
  int64_t position_ = 0;
  Rope rope_;
  std::vector<Rope> gate_ropes_;  // per layer, over its gate's d_g (SeerAttention)
  CachedAttention attention_;
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer [capacity, H_kv, d]
  int64_t rows_ = 0;                                   // tokens the activation buffers hold
  std::vector<float> x_, xn_, q_, attn_, gate_, up_;   // [rows, hidden | H_q d | intermediate]
  std::vector<float> cos_, sin_;                       // [rows, d/2] for the chunk's positions
  std::vector<float> logits_;                          // [kLogitRows, vocab]
  std::vector<float> last_;                            // [vocab]
  std::vector<float> gate_logits_;                     // [H_q, nb, nb], SeerAttention
  double last_density_ = 1.0;
};

}  // namespace seer
