// The Llama forward on the GPU: bf16 weights (dequantized once at upload), GEMMs through cuBLAS
// with fp32 accumulation, the residual stream in fp32, attention through the CUDA kernels — dense,
// ground truth (for gate training), or SeerAttention (gate -> selection -> block-sparse).
// A runtime is built for one batch shape (it allocates every activation then) and reused.
#pragma once
#include <cuda_bf16.h>

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "cuda/attention_cuda.h"
#include "cuda/communicator.h"
#include "cuda/decode_attention.h"
#include "cuda/gate_cuda.h"
#include "cuda/gemm.h"
#include "model/llama.h"
#include "model/tensor_shard.h"

namespace seer::cuda {

struct DeviceLlama {
  struct Layer {
    DeviceBuffer<float> attn_norm, ffn_norm;
    DeviceBuffer<__nv_bfloat16> wqkv;      // [(H_q + 2 H_kv) d, hidden]: q, k, v rows stacked
    DeviceBuffer<__nv_bfloat16> wo;        // [hidden, H_q d]
    DeviceBuffer<__nv_bfloat16> w_gate_up; // [2 I, hidden]: gate rows then up rows
    DeviceBuffer<__nv_bfloat16> w_down;    // [hidden, I]
  };
  LlamaConfig config;
  DeviceBuffer<__nv_bfloat16> embed;    // [vocab, hidden]
  DeviceBuffer<__nv_bfloat16> lm_head;  // [vocab, hidden]; empty when tied to embed
  DeviceBuffer<float> final_norm;
  std::vector<Layer> layers;

  // The rank's part under tensor parallelism (model/tensor_shard.h); the whole model on one GPU.
  // `config` is the part's: its own head and feature counts.
  TensorShard shard;

  // Throws seer::Error for what the GPU backend does not support (qkv biases, head dims other
  // than 64 and 128) and when the weights do not fit in GPU memory. Uploads to the current GPU.
  static DeviceLlama upload(const LlamaWeights& weights);
  static DeviceLlama upload(const LlamaWeights& weights, const TensorShard& shard);
  // Random bf16 weights of the given shape made on the GPU (timing at real scale, nothing
  // downloaded). A shard's weights are the same slices of the same tensors as the whole model's.
  static DeviceLlama synthetic(const LlamaConfig& config, uint64_t seed);
  static DeviceLlama synthetic(const LlamaConfig& config, uint64_t seed, const TensorShard& shard);
  const __nv_bfloat16* output_matrix() const { return lm_head.size() ? lm_head.data() : embed.data(); }
  int64_t parameter_count() const;
};

// The keys (RoPE applied) and values of one sequence for every layer, each [capacity, H_kv, d]
// bf16: filled by a prefill (ForwardOptions::kv_cache), extended one token at a time by LlamaDecoder.
struct DeviceKvCache {
  int64_t capacity = 0;
  int64_t length = 0;  // positions [0, length) hold keys and values
  std::vector<DeviceBuffer<__nv_bfloat16>> k, v;

  static DeviceKvCache create(const LlamaConfig& config, int64_t capacity);
  int64_t bytes() const;
};

// dense: exact attention. ground_truth: exact attention through the ground-truth kernel, the block
// map handed to on_layer (gate training). seer: gate -> selection -> block-sparse. custom_mask:
// block-sparse on the mask that mask_for_layer returns (baselines and oracles in evaluation).
enum class AttentionMode { dense, ground_truth, seer, custom_mask };

// One layer's attention inputs, valid during the callback (device pointers): pre-RoPE q [T, H_q, d]
// and k [T, H_kv, d], the attention call itself (rotated q/k, v, and its output buffers, which a
// callback may use as scratch), the layout, and for ground_truth the block map gt.
struct LayerCapture {
  int layer;
  const __nv_bfloat16* q_pre;
  const __nv_bfloat16* k_pre;
  const float* gt;
  AttentionArgs attention;
  const DeviceLayout* layout;
};

struct ForwardOptions {
  AttentionMode mode = AttentionMode::dense;
  const std::vector<DeviceGate>* gates = nullptr;  // one per layer, for AttentionMode::seer
  SelectionOptions selection;
  std::function<void(const LayerCapture&)> on_layer;                       // ground_truth
  GtPooling gt_pooling = GtPooling::max;                                   // ground_truth: the map's pooling
  std::function<const DeviceMask&(const LayerCapture&)> mask_for_layer;    // custom_mask
  bool all_logits = false;  // logits of every position, else the last of each sequence
  // One sequence only: its keys and values of every layer go to the cache (positions 0..T), which
  // then holds the prompt for LlamaDecoder.
  DeviceKvCache* kv_cache = nullptr;
};

// Token-wise work (projections, MLP, logits) runs over at most this many tokens at a time, so a
// 128k prompt needs activations for 8k tokens of the MLP rather than for all of them; attention
// still sees the whole prompt at once. GEMMs of 8k rows already run at full speed.
constexpr int64_t kPrefillChunkTokens = 8192;

class LlamaRuntime {
 public:
  // chunk_tokens: tokens per chunk of the token-wise work (kPrefillChunkTokens). Under tensor
  // parallelism, `model` is this rank's part and `comm` its end of the group: every rank runs the
  // same calls on its own thread and GPU, and each gets the whole model's logits.
  LlamaRuntime(const DeviceLlama& model, const Sequences& seqs, int64_t chunk_tokens = kPrefillChunkTokens,
               const Communicator* comm = nullptr);
  ~LlamaRuntime();
  LlamaRuntime(const LlamaRuntime&) = delete;
  LlamaRuntime& operator=(const LlamaRuntime&) = delete;

  // Runs the model on tokens [T] (host), asynchronously on the runtime's stream.
  void forward(std::span<const int32_t> tokens, const ForwardOptions& options);
  // Next-token NLL of each position t (target tokens[t + 1] within its sequence); the last
  // position of each sequence gets NaN. Needs forward(..., all_logits = true). Synchronizes.
  std::vector<float> next_token_nll(std::span<const int32_t> tokens);
  // Logits [rows, vocab] of the last forward (rows: T or one per sequence). Synchronizes.
  std::vector<float> logits() const;
  int64_t logit_rows() const { return logit_rows_; }
  cudaStream_t stream() const { return stream_; }
  const DeviceLayout& layout() const { return layout_; }
  // SeerAttention: the kept fraction of causal blocks in the last forward, averaged over layers.
  // Synchronizes.
  double last_density() const;
  // Device memory this runtime allocated for activations, in bytes.
  int64_t activation_bytes() const { return activation_bytes_; }

 private:
  const DeviceLlama& model_;
  const Communicator* comm_;
  Sequences seqs_;
  DeviceLayout layout_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Gemm> gemm_;
  int64_t chunk_ = 0, logit_rows_ = 0, activation_bytes_ = 0;
  DeviceBuffer<int32_t> ids_, positions_, targets_;
  DeviceBuffer<float2> rope_;
  DeviceBuffer<float> residual_, logits_, nll_, gt_, gt_scratch_, gate_logits_;
  DeviceBuffer<__nv_bfloat16> normed_, qkv_, q_, k_, v_, q_pre_, k_pre_, attn_, gate_up_, mlp_, last_normed_;
  DeviceBuffer<float> lse_;
  std::unique_ptr<GateWorkspace> gate_work_;
  std::unique_ptr<SelectionWorkspace> select_work_;
  std::unique_ptr<DeviceMask> mask_;
  std::vector<int32_t> layer_nnz_;  // blocks each layer's mask kept (SeerAttention)

  // Split over GPUs, the token-wise work after attention alternates its chunks between stream_ and
  // side_stream_ (each with its own GEMM handle and scratch), so that one chunk's all-reduces run
  // while the other's products do; at least two chunks then, and the layer's end joins the streams.
  void overlapped_output_and_mlp(int layer);
  cudaStream_t side_stream_ = nullptr;
  std::unique_ptr<Gemm> side_gemm_;
  cudaEvent_t attention_done_ = nullptr, side_done_ = nullptr, collective_done_ = nullptr;
  DeviceBuffer<__nv_bfloat16> side_normed_, side_gate_up_, side_mlp_;
};

// Generation after a prefill: appends one token per step at position cache.length, attends through
// decode_attention (dense: released gates are prefill-only, as in the paper) and returns the new
// token's next-token logits. Every buffer is allocated here; a step allocates nothing. The step's
// ~15 kernels per layer are captured once as a CUDA graph (they read the token, its position and the
// attended length from the device) and replayed: at batch 1 their launch cost is comparable to the
// step's memory traffic.
class LlamaDecoder {
 public:
  // The cache must be complete (its prefill's stream synchronized, e.g. by LlamaRuntime::logits()).
  // Under tensor parallelism, as LlamaRuntime: the rank's part, its cache and its communicator.
  LlamaDecoder(const DeviceLlama& model, DeviceKvCache& cache, const Communicator* comm = nullptr);
  ~LlamaDecoder();
  LlamaDecoder(const LlamaDecoder&) = delete;
  LlamaDecoder& operator=(const LlamaDecoder&) = delete;

  // Throws when the cache is full. Synchronizes (the logits come back to the host).
  std::span<const float> step(int32_t token);
  cudaStream_t stream() const { return stream_; }

 private:
  const DeviceLlama& model_;
  DeviceKvCache& cache_;
  const Communicator* comm_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Gemm> gemm_;  // its workspace is allocated up front: nothing allocates while a graph is captured
  DecodeWorkspace attention_work_;
  DeviceBuffer<float2> rope_;
  DeviceBuffer<int32_t> step_ids_;  // [3]: the step's token id, its position, the attended length
  cudaGraphExec_t graph_ = nullptr;

  void record_step();  // the kernels of one step, on stream_
  DeviceBuffer<float> residual_, logits_;
  DeviceBuffer<__nv_bfloat16> normed_, qkv_, q_, attn_, gate_up_, mlp_;
  std::vector<float> host_logits_;
};

}  // namespace seer::cuda
