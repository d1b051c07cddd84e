// SeerAttention gate weights of a model, one AttnGate per layer, from a safetensors file.
#pragma once
#include <string>
#include <vector>

#include "gate/attn_gate.h"
#include "model/llama.h"

namespace seer {

// Keys as the reference checkpoints name them: model.layers.{i}.self_attn.attn_gate.mask_linear_k.weight
// [H_q, 3d, d_g] and, when d_g != d, ...mask_linear_q.weight [H_q, d, d_g]; F32, F16 or BF16. The
// optional metadata entry seerattn_gate_block_size must be 64 (the block of the CPU forward).
// Throws seer::Error naming the missing or misshapen key.
std::vector<GateWeights<float>> load_gates(const std::string& path, const LlamaConfig& config);

// The gates trained for the built-in model, shipped in the source tree (seer train-gates made them;
// bench/ACCURACY.md measures them).
inline constexpr const char* kBuiltinGates = "gates/smollm2-135m-instruct.safetensors";

// `requested` when it is non-empty; otherwise the shipped gates if `model_path` is the built-in
// model. Throws seer::Error saying how to get gates for any other model.
std::string resolve_gates_path(const std::string& requested, const std::string& model_path);

}  // namespace seer
