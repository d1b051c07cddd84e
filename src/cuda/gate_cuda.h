// AttnGate and block selection on the GPU: pre-RoPE q/k -> gate logits [H_q, nb, nb] per sequence
// -> CSR block mask, all on the device (the CPU operators in src/gate are the reference).
//
// Pipeline: pool each 64-token block (q mean, or max, min, mean; k max, min, mean) -> project per
// query head (W_k[h], or W_q[h] and W_k[h/g] when the gate has W_q) and rotate by RoPE at the
// block's first position -> scores q_g·k_g/√d_g (+ the block bias) with the causal block mask ->
// per row: the top-k cut by radix select on the logits (or the softmax threshold's cut, or the
// top-p cut by the same select weighted by each block's probability mass), counted, scanned into
// indptr, then the sorted indices written.
#pragma once
#include <cuda_runtime_api.h>

#include "cuda/attention_cuda.h"
#include "gate/attn_gate.h"
#include "gate/selection.h"

namespace seer::cuda {

// Gate weights (float) and the RoPE cos/sin table of block positions, on the device.
struct DeviceGate {
  GateConfig config;
  DeviceBuffer<float> wk, wq, bias;  // bias [H_q, kBiasColumns] (gate/block_bias.h), empty without one
  DeviceBuffer<float2> rope;  // [max_blocks][d_g/2]: (cos, sin)·attention_scaling at position i·64, from double
  int64_t rope_blocks = 0;

  static DeviceGate upload(const GateWeights<float>& weights, const RopeConfig& rope, int64_t max_blocks);
};

// Scratch of one gate call for a given layout (allocated once, reused by every layer).
struct GateWorkspace {
  // [rows, H_q, q_in] (written only with W_q: without it, q is rotated as it is pooled), [rows, H_kv, 3d]
  DeviceBuffer<float> q_pool, k_pool;
  DeviceBuffer<float> q_gate, k_gate;  // [H_q, rows, d_g] after RoPE
  static GateWorkspace create(const DeviceLayout& layout, const GateConfig& config);
};

// logits: layout.host.map_elements() floats ([H_q, nb, nb] per sequence, -inf above the diagonal).
void gate_forward(const void* q_pre, const void* k_pre, DType dtype, const DeviceLayout& layout,
                  const DeviceGate& gate, GateWorkspace& work, float* logits, cudaStream_t stream);

// ---- training (src/cuda/gate_backward.cu; the CPU gate_kl_loss and gate_backward are the reference)

// Buffers of one gate_loss_backward call for a given layout (allocated once, reused by every layer).
struct GateGradWorkspace {
  DeviceBuffer<float> dlogits;           // the layout's map
  DeviceBuffer<float> dq_gate, dk_gate;  // [H_q, rows, d_g], back through RoPE (before the rotation)
  double elements = 0;                   // kept map elements: the KL's averaging count
  double skip_fraction = 0;
  TailKl tail;                           // the loss's tail term (gate/attn_gate.h)
  static GateGradWorkspace create(const DeviceLayout& layout, const GateConfig& config, double skip_fraction,
                                  const TailKl& tail = {});
};

// power_normalize_rows (src/gate/attn_gate.h) on the device: out = in with each row's causal part
// raised to `power` and normalized again (in and out may be the same map).
void power_normalize_rows(const float* in, float* out, const DeviceLayout& layout, int q_heads, float power,
                          cudaStream_t stream);

// From the logits of gate_forward (whose workspace `work` still holds that call's pooled and rotated
// vectors) and the ground-truth map gt: adds the loss of gate_kl_loss, KL(gt ‖ softmax(logits)) plus
// the workspace's tail term, averaged over the kept elements (the first skip_fraction of each
// sequence's block rows left out) to *kl (a device double), and writes loss_scale · dLoss/dW_k into
// dwk [k_proj_heads, 3d, d_g] (and dW_q into dwq [H_q, q_in, d_g] when the gate has W_q, dbias into
// dbias [H_q, kBiasColumns] when it has a block bias; each may be null otherwise). The gradient is of this call only: it is written, not
// accumulated.
void gate_loss_backward(const float* logits, const float* gt, const DeviceLayout& layout, const DeviceGate& gate,
                        const GateWorkspace& work, float loss_scale, GateGradWorkspace& grad_work, double* kl,
                        float* dwk, float* dwq, float* dbias, cudaStream_t stream);

struct SelectionWorkspace {
  DeviceBuffer<int4> row_cut;     // per mask row: (cut key, ties kept, extra block, count)
  DeviceBuffer<int32_t> counts;   // rows + 1
  DeviceBuffer<unsigned char> scan_temp;
  static SelectionWorkspace create(const DeviceLayout& layout, int q_heads);
};

// Fills `mask` (capacity: layout.host.causal_pairs() entries) with the blocks SelectionOptions
// chooses from `logits`; identical to select_blocks() on the CPU.
void select_blocks(const float* logits, const DeviceLayout& layout, int q_heads, const SelectionOptions& options,
                   SelectionWorkspace& work, DeviceMask& mask, cudaStream_t stream);

// values[i] = log(values[i]) in place: turns a map of block probabilities (the ground truth) into
// logits whose softmax over a row is that row, so every selection method can run on it (zeros, the
// entries above the diagonal, become -inf as in the gate's logits).
void probabilities_to_logits(float* values, int64_t count, cudaStream_t stream);

}  // namespace seer::cuda
