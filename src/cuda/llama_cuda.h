// The Llama forward on the GPU: bf16 weights (dequantized once at upload), GEMMs through cuBLAS
// with fp32 accumulation, the residual stream in fp32, attention through the CUDA kernels — dense,
// ground truth (for gate training), or SeerAttention (gate -> selection -> block-sparse).
// A runtime is built for one batch shape (it allocates every activation then) and reused.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "cuda/attention_cuda.h"
#include "cuda/gate_cuda.h"
#include "model/llama.h"

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

  // Throws seer::Error for what the GPU backend does not support (qkv biases, head dims other
  // than 64 and 128) and when the weights do not fit in GPU memory.
  static DeviceLlama upload(const LlamaWeights& weights);
  // Random bf16 weights of the given shape made on the GPU (timing at real scale, nothing downloaded).
  static DeviceLlama synthetic(const LlamaConfig& config, uint64_t seed);
  const __nv_bfloat16* output_matrix() const { return lm_head.size() ? lm_head.data() : embed.data(); }
  int64_t parameter_count() const;
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
  std::function<const DeviceMask&(const LayerCapture&)> mask_for_layer;    // custom_mask
  bool all_logits = false;  // logits of every position, else the last of each sequence
};

class LlamaRuntime {
 public:
  LlamaRuntime(const DeviceLlama& model, const Sequences& seqs);
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
  void gemm(const __nv_bfloat16* w, const __nv_bfloat16* x, void* y, int64_t rows, int out, int in, bool accumulate_fp32);

  const DeviceLlama& model_;
  Sequences seqs_;
  DeviceLayout layout_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  int64_t logit_rows_ = 0, activation_bytes_ = 0;
  DeviceBuffer<int32_t> ids_, positions_, targets_, last_rows_;
  DeviceBuffer<float2> rope_;
  DeviceBuffer<float> residual_, logits_, nll_, gt_, gt_scratch_, gate_logits_;
  DeviceBuffer<__nv_bfloat16> normed_, qkv_, q_, k_, v_, q_pre_, k_pre_, attn_, gate_up_, mlp_, last_normed_;
  DeviceBuffer<float> lse_;
  std::unique_ptr<GateWorkspace> gate_work_;
  std::unique_ptr<SelectionWorkspace> select_work_;
  std::unique_ptr<DeviceMask> mask_;
  std::vector<int32_t> layer_nnz_;  // blocks each layer's mask kept (SeerAttention)
};

}  // namespace seer::cuda
