// SeerAttention gate weights of a model, one AttnGate per layer, from a safetensors file.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "attention/gt_pooling.h"
#include "gate/attn_gate.h"
#include "gate/selection.h"
#include "model/llama.h"

namespace seer {

class SafetensorsFile;

// Keys and layouts as the reference checkpoints have them: model.layers.{i}.self_attn.attn_gate.
// mask_linear_k.weight [H_q, 3d, d_g] when d_g == d; when d_g != d, ...mask_linear_q.weight
// [H_q, d, d_g] beside mask_linear_k [H_kv, 3d, d_g]; Qmaxminavg gates (q pooled by max, min and
// mean) have mask_linear_q [H_q, 3d, d_g] and mask_linear_k [H_kv, 3d, d_g] at any d_g. A
// mask_linear_q [H_q, d, d] (the reference's seerattn_gate_force_double) is refused rather than
// ignored; so is a seerattn_gate_type that is unknown or does not match the shapes. seer's optional
// ...attn_gate.block_bias [H_q, 10] (gate/block_bias.h), in every layer or none. F32, F16 or BF16, or
// a projection in I8 beside `<name>_scale` [heads, 1, d_g], a scale per head and output column
// (scripts/quantize_gates.py). The optional metadata entry seerattn_gate_block_size must be 64 (the
// block of the CPU forward). Throws seer::Error naming the missing or misshapen key.
std::vector<GateWeights<float>> load_gates(const std::string& path, const LlamaConfig& config);
// The same from a parsed file; `name` (its path) prefixes the errors.
std::vector<GateWeights<float>> load_gates(const SafetensorsFile& file, const LlamaConfig& config,
                                           const std::string& name);

// Per-layer top-p masses calibrated for a set of gates by `seer calibrate` (gate/budget.h), one
// list per target density, measured at `context` tokens with the forced blocks given; stored as
// JSON in the gates file's metadata entry "seer_layer_budgets".
struct GateBudgets {
  std::map<double, std::vector<double>> layer_mass = {};  // target density -> one mass per layer
  bool keep_sink = false;
  int local_blocks = 0;
  int64_t context = 0;
  std::string calibration = {};  // what it was calibrated on, for the record

  // The masses for `density` (within 1e-9); throws, listing the calibrated densities, if absent.
  const std::vector<double>& masses_for(double density) const;
};

// The budgets in the gates file at `path` (an empty layer_mass when it has none); throws if they
// are malformed or do not have one mass per layer of a `layers`-layer model.
GateBudgets load_gate_budgets(const std::string& path, int layers);
GateBudgets load_gate_budgets(const SafetensorsFile& file, int layers, const std::string& name);

// Top-p selection with the budgets' per-layer masses for `density` and their forced blocks.
SelectionOptions budget_selection(const GateBudgets& budgets, double density);

// Writes the gates of `path` (tensors and metadata unchanged) with `budgets` to `out`, atomically
// (`out` may be `path`).
void save_gate_budgets(const std::string& path, const std::string& out, const GateBudgets& budgets);

// The ground-truth pooling the gates at `path` were trained to imitate: their metadata entry
// "training_target_pooling" (seer train-gates writes it), else GtPooling::max, the published target
// (the official checkpoints). Throws if the entry names no pooling.
GtPooling gates_target_pooling(const std::string& path);

// The gates trained for the built-in model, shipped in the source tree (seer train-gates made them;
// bench/ACCURACY.md measures them).
inline constexpr const char* kBuiltinGates = "gates/smollm2-135m-instruct.safetensors";

// `requested` when it is non-empty; otherwise the shipped gates if `model_path` is the built-in
// model. Throws seer::Error saying how to get gates for any other model.
std::string resolve_gates_path(const std::string& requested, const std::string& model_path);

}  // namespace seer
