#include "model/gates.h"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "formats/safetensors.h"
#include "model/llama_loader.h"

namespace seer {

namespace {

// A gate weight [heads, in, d_g] as float: F32, F16 or BF16 as stored, or I8 beside `<name>_scale`
// ([heads, 1, d_g], F32/F16/BF16), one scale per head and output column: w = q · scale
// (scripts/quantize_gates.py --format int8, how gates fit in a fraction of their bf16 size).
std::vector<float> gate_weight(const SafetensorsFile& file, const SafetensorsTensor& w, const std::string& path) {
  const std::string scale_name = w.name + "_scale";
  const SafetensorsTensor* scale = file.find(scale_name);
  if (w.dtype != SafetensorsDtype::i8) {
    SEER_CHECK(scale == nullptr, path, ": '", scale_name, "' beside '", w.name, "', which is ",
               safetensors_dtype_name(w.dtype), ", not I8");
    return file.to_float(w.name);
  }
  SEER_CHECK(scale != nullptr, path, ": '", w.name, "' is I8 and needs '", scale_name, "'");
  SEER_CHECK(scale->shape == std::vector<int64_t>({w.shape[0], 1, w.shape[2]}), path, ": '", scale_name,
             "' must be [", w.shape[0], ", 1, ", w.shape[2], "]");
  const std::vector<float> s = file.to_float(scale_name);
  for (const float x : s) SEER_CHECK(std::isfinite(x) && x >= 0, path, ": '", scale_name, "' holds ", x);
  const std::span<const uint8_t> q = file.data(w.name);
  std::vector<float> out(q.size());
  const int64_t in = w.shape[1], cols = w.shape[2];
  for (size_t e = 0; e < out.size(); ++e) {
    const int64_t head = int64_t(e) / (in * cols), col = int64_t(e) % cols;
    out[e] = float(int8_t(q[e])) * s[size_t(head * cols + col)];
  }
  return out;
}

}  // namespace

std::vector<GateWeights<float>> load_gates(const std::string& path, const LlamaConfig& config) {
  return load_gates(SafetensorsFile::open(path), config, path);
}

std::vector<GateWeights<float>> load_gates(const SafetensorsFile& file, const LlamaConfig& config,
                                           const std::string& path) {
  if (const auto it = file.metadata().find("seerattn_gate_block_size"); it != file.metadata().end())
    SEER_CHECK(it->second == "64", path, ": gate block size ", it->second, " is not supported (64)");
  const HeadDims heads{config.q_heads, config.kv_heads, config.head_dim};
  const int64_t d = config.head_dim;
  // The metadata's gate type, when the file has one, must be a known one and match the shapes.
  int type_q_pools = 0;  // 0: none recorded
  if (const auto it = file.metadata().find("seerattn_gate_type"); it != file.metadata().end()) {
    try {
      type_q_pools = parse_gate_type(it->second);
    } catch (const Error& e) {
      fail(path, ": ", e.what());
    }
  }
  std::vector<GateWeights<float>> gates(size_t(config.layers));
  for (int l = 0; l < config.layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".self_attn.attn_gate.";
    const SafetensorsTensor* wk = file.find(prefix + "mask_linear_k.weight");
    SEER_CHECK(wk != nullptr, path, ": missing '", prefix, "mask_linear_k.weight'");
    SEER_CHECK(wk->shape.size() == 3 && wk->shape[1] == 3 * d && wk->shape[2] > 0 && wk->shape[2] % 2 == 0, path,
               ": '", wk->name, "' must be [heads, ", 3 * d, ", d_g] with an even d_g");
    GateWeights<float>& g = gates[size_t(l)];
    g.config = GateConfig{heads, int(wk->shape[2]), 64};
    // W_q's input is the pooled q: d (mean) or 3d (max, min, mean).
    const SafetensorsTensor* wq = file.find(prefix + "mask_linear_q.weight");
    if (wq != nullptr) {
      SEER_CHECK(wq->shape.size() == 3 && wq->shape[0] == config.q_heads &&
                     (wq->shape[1] == d || wq->shape[1] == 3 * d) && wq->shape[2] == g.config.gate_dim,
                 path, ": '", wq->name, "' must be [", config.q_heads, ", ", d, " or ", 3 * d, ", ",
                 g.config.gate_dim, "]");
      g.config.q_pools = int(wq->shape[1] / d);
      SEER_CHECK(g.config.has_q_proj(), path, ": '", wq->name,
                 "' beside a gate dimension equal to the head dimension and one Q pooling (the reference's "
                 "seerattn_gate_force_double gates) is not supported");
    }
    SEER_CHECK(type_q_pools == 0 || type_q_pools == g.config.q_pools, path, ": gate type ",
               file.metadata().at("seerattn_gate_type"), " does not match '", prefix, "mask_linear_q.weight'");
    SEER_CHECK(wq != nullptr || !g.config.has_q_proj(), path, ": gate dimension ", g.config.gate_dim,
               " differs from the head dimension ", d, ", so '", prefix, "mask_linear_q.weight' is needed");
    // W_k is per query head without W_q, per KV head with it (the reference's layouts).
    SEER_CHECK(wk->shape[0] == g.config.k_proj_heads(), path, ": '", wk->name, "' must be [",
               g.config.k_proj_heads(), ", ", 3 * d, ", ", g.config.gate_dim, "]",
               g.config.has_q_proj() ? " (the gate has W_q: one K projection per KV head)" : "");
    g.wk = gate_weight(file, *wk, path);
    if (wq != nullptr) g.wq = gate_weight(file, *wq, path);
    if (const SafetensorsTensor* bias = file.find(prefix + "block_bias")) {
      SEER_CHECK(bias->shape == std::vector<int64_t>({config.q_heads, kBiasColumns}), path, ": '", bias->name,
                 "' must be [", config.q_heads, ", ", kBiasColumns, "] (gate/block_bias.h)");
      g.config.has_block_bias = true;
      g.bias = file.to_float(bias->name);
    }
    SEER_CHECK(g.config.q_pools == gates.front().config.q_pools, path, ": layer ", l,
               " pools q differently from layer 0");
    SEER_CHECK(g.config.has_block_bias == gates.front().config.has_block_bias, path, ": layer ", l,
               g.config.has_block_bias ? " has" : " lacks", " a block bias, layer 0",
               g.config.has_block_bias ? " does not" : " has one");
    g.validate();
  }
  return gates;
}

namespace {
constexpr const char* kBudgetKey = "seer_layer_budgets";
}

const std::vector<double>& GateBudgets::masses_for(double density) const {
  for (const auto& [d, masses] : layer_mass)
    if (std::abs(d - density) < 1e-9) return masses;
  std::ostringstream have;
  for (const auto& [d, masses] : layer_mass) have << (have.tellp() > 0 ? ", " : "") << d;
  fail("the gates have no calibrated budget for density ", density,
       layer_mass.empty() ? std::string(" (none: run `seer calibrate`)") : " (calibrated: " + have.str() + ")");
}

SelectionOptions budget_selection(const GateBudgets& budgets, double density) {
  return SelectionOptions{.method = SelectionOptions::Method::top_p,
                          .keep_sink = budgets.keep_sink,
                          .local_blocks = budgets.local_blocks,
                          .layer_mass = budgets.masses_for(density)};
}

GtPooling gates_target_pooling(const std::string& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto it = file.metadata().find("training_target_pooling");
  return it == file.metadata().end() ? GtPooling::max : parse_gt_pooling(it->second);
}

GateBudgets load_gate_budgets(const std::string& path, int layers) {
  return load_gate_budgets(SafetensorsFile::open(path), layers, path);
}

GateBudgets load_gate_budgets(const SafetensorsFile& file, int layers, const std::string& path) {
  GateBudgets b;
  const auto it = file.metadata().find(kBudgetKey);
  if (it == file.metadata().end()) return b;
  try {
    const nlohmann::json j = nlohmann::json::parse(it->second);
    const auto integer = [&](const char* name, int64_t lo, int64_t hi) {
      const nlohmann::json& v = j.at(name);
      SEER_CHECK(v.is_number_integer() && v.get<int64_t>() >= lo && v.get<int64_t>() <= hi, name,
                 " must be an integer in [", lo, ", ", hi, "], got ", v.dump());
      return v.get<int64_t>();
    };
    b.keep_sink = j.at("keep_sink").get<bool>();
    b.local_blocks = int(integer("local_blocks", 0, 1 << 20));
    b.context = integer("context", 1, int64_t(1) << 40);
    b.calibration = j.value("calibration", "");
    for (const auto& [key, masses] : j.at("top_p").items()) {
      double density = 0;
      const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), density);
      SEER_CHECK(error == std::errc() && end == key.data() + key.size() && density > 0 && density <= 1, "density '",
                 key, "'");
      std::vector<double> m = masses.get<std::vector<double>>();
      SEER_CHECK(int(m.size()) == layers, m.size(), " masses at density ", key, " for ", layers, " layers");
      for (const double x : m) SEER_CHECK(x > 0 && x <= 1, "mass ", x, " at density ", key);
      b.layer_mass[density] = std::move(m);
    }
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": malformed ", kBudgetKey, ": ", e.what());
  } catch (const Error& e) {
    fail(path, ": malformed ", kBudgetKey, ": ", e.what());
  }
  return b;
}

void save_gate_budgets(const std::string& path, const std::string& out, const GateBudgets& budgets) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  std::vector<SafetensorsWriteTensor> tensors;
  for (const SafetensorsTensor& t : file.tensors()) tensors.push_back({t.name, t.dtype, t.shape, file.data(t.name)});
  nlohmann::json top_p = nlohmann::json::object();
  for (const auto& [density, masses] : budgets.layer_mass) {
    char key[32];  // the shortest text that reads back as the same double
    const auto [end, error] = std::to_chars(key, key + sizeof key, density);
    SEER_CHECK(error == std::errc(), "budget density ", density, " does not print");
    top_p[std::string(key, end)] = masses;
  }
  std::map<std::string, std::string> metadata = file.metadata();
  metadata[kBudgetKey] = nlohmann::json{{"keep_sink", budgets.keep_sink},
                                        {"local_blocks", budgets.local_blocks},
                                        {"context", budgets.context},
                                        {"calibration", budgets.calibration},
                                        {"top_p", top_p}}
                             .dump();
  write_safetensors(out, tensors, metadata);
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
