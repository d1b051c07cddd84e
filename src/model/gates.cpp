#include "model/gates.h"

#include <filesystem>

#include "core/error.h"
#include "formats/safetensors.h"
#include "model/llama_loader.h"

namespace seer {

std::vector<GateWeights<float>> load_gates(const std::string& path, const LlamaConfig& config) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  if (const auto it = file.metadata().find("seerattn_gate_block_size"); it != file.metadata().end())
    SEER_CHECK(it->second == "64", path, ": gate block size ", it->second, " is not supported (64)");
  const HeadDims heads{config.q_heads, config.kv_heads, config.head_dim};
  const int64_t d = config.head_dim;
  std::vector<GateWeights<float>> gates(size_t(config.layers));
  for (int l = 0; l < config.layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".self_attn.attn_gate.";
    const SafetensorsTensor* wk = file.find(prefix + "mask_linear_k.weight");
    SEER_CHECK(wk != nullptr, path, ": missing '", prefix, "mask_linear_k.weight'");
    SEER_CHECK(wk->shape.size() == 3 && wk->shape[0] == config.q_heads && wk->shape[1] == 3 * d && wk->shape[2] > 0,
               path, ": '", wk->name, "' must be [", config.q_heads, ", ", 3 * d, ", d_g]");
    GateWeights<float>& g = gates[size_t(l)];
    g.config = GateConfig{heads, int(wk->shape[2]), 64};
    g.wk = file.to_float(wk->name);
    if (g.config.has_q_proj()) {
      const SafetensorsTensor* wq = file.find(prefix + "mask_linear_q.weight");
      SEER_CHECK(wq != nullptr, path, ": gate dimension ", g.config.gate_dim, " differs from the head dimension ", d,
                 ", so '", prefix, "mask_linear_q.weight' is needed");
      SEER_CHECK(wq->shape == std::vector<int64_t>({config.q_heads, d, g.config.gate_dim}), path, ": '", wq->name,
                 "' must be [", config.q_heads, ", ", d, ", ", g.config.gate_dim, "]");
      g.wq = file.to_float(wq->name);
    }
    g.validate();
  }
  return gates;
}

std::string resolve_gates_path(const std::string& requested, const std::string& model_path) {
  namespace fs = std::filesystem;
  if (!requested.empty()) {
    SEER_CHECK(fs::exists(requested), "gates '", requested, "' do not exist");
    return requested;
  }
  SEER_CHECK(fs::path(model_path).filename() == fs::path(kBuiltinModel).filename(), "no trained gates ship for ",
             model_path, ": train them with `seer train-gates --model ", model_path, "` and pass --gates FILE");
  std::vector<fs::path> candidates;
#ifdef SEER_SOURCE_DIR
  candidates.push_back(fs::path(SEER_SOURCE_DIR) / kBuiltinGates);
#endif
  candidates.push_back(fs::current_path() / kBuiltinGates);
  for (const fs::path& c : candidates)
    if (fs::is_regular_file(c)) return c.string();
  fail("the built-in model's gates (", kBuiltinGates, ") are missing from the source tree");
}

}  // namespace seer
