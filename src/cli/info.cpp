// `seer info`: what a model file holds, read from its metadata without loading the weights; with
// --gates, also what a gates file holds: its shapes (checked against the model), dtypes, how it was
// trained (the metadata seer train-gates writes) and the densities its budgets were calibrated for.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/gates.h"
#include "model/llama_loader.h"

namespace seer::cli {
namespace {

struct InfoOptions {
  std::string model, gates;
  bool json = false;
};

struct TypeCount {
  int64_t tensors = 0, elements = 0;
  uint64_t bytes = 0;
};

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return text;
}

std::string rope_text(const RopeConfig& rope) {
  switch (rope.scaling) {
    case RopeConfig::Scaling::none:
      return "none";
    case RopeConfig::Scaling::llama3:
      return "llama3 x" + std::to_string(rope.factor);
    case RopeConfig::Scaling::yarn:
      return "yarn x" + std::to_string(rope.factor);
  }
  return "?";
}

// The gates file at `path` for model `c`: shapes, dtypes, training metadata and calibrated densities.
nlohmann::json gates_info(const std::string& path, const LlamaConfig& c) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const std::vector<GateWeights<float>> gates = load_gates(file, c, path);  // checks keys and shapes
  const GateBudgets budgets = load_gate_budgets(file, c.layers, path);
  std::map<std::string, int64_t> dtypes;
  int64_t parameters = 0;  // the gate's weights: an int8 weight's scales (`<name>_scale`) are not counted
  for (const SafetensorsTensor& t : file.tensors()) {
    ++dtypes[std::string(safetensors_dtype_name(t.dtype))];
    if (!t.name.ends_with("_scale")) parameters += t.elements;
  }
  const GateConfig& g = gates.front().config;
  nlohmann::json j = {{"path", path},
                      {"file_bytes", std::filesystem::file_size(path)},
                      {"layers", gates.size()},
                      {"gate_type", gate_type_name(g)},
                      {"gate_dim", g.gate_dim},
                      {"block", g.block},
                      {"k_projection", {g.k_proj_heads(), 3 * g.heads.head_dim, g.gate_dim}},
                      {"q_projection", g.has_q_proj() ? nlohmann::json{g.heads.q_heads, g.q_in_dim(), g.gate_dim}
                                                      : nlohmann::json(nullptr)},
                      {"block_bias", g.has_block_bias ? nlohmann::json{g.heads.q_heads, kBiasColumns}
                                                      : nlohmann::json(nullptr)},
                      {"parameters", parameters},
                      {"dtypes", dtypes},
                      {"target_pooling", gt_pooling_name(gates_target_pooling(path))},
                      {"budget_densities", nlohmann::json::array()},
                      {"metadata", nlohmann::json::object()}};
  for (const auto& [density, masses] : budgets.layer_mass) j["budget_densities"].push_back(density);
  if (!budgets.layer_mass.empty())
    j["budgets"] = {{"context", budgets.context}, {"keep_sink", budgets.keep_sink},
                    {"local_blocks", budgets.local_blocks}};
  for (const auto& [key, value] : file.metadata())
    if (key != "seer_layer_budgets") j["metadata"][key] = value;  // summarized above
  return j;
}

void print_gates_info(const nlohmann::json& g) {
  std::string dtypes;
  for (const auto& [name, count] : g["dtypes"].items()) dtypes += (dtypes.empty() ? "" : ", ") + name;
  const auto& k = g["k_projection"];
  std::printf("gates         %s (safetensors, %s, %s): %lld layers, %s, d_g %d, W_k [%d, %d, %d]",
              g["path"].get<std::string>().c_str(), dtypes.c_str(),
              human_bytes(g["file_bytes"].get<double>()).c_str(), g["layers"].get<long long>(),
              g["gate_type"].get<std::string>().c_str(), g["gate_dim"].get<int>(), k[0].get<int>(), k[1].get<int>(),
              k[2].get<int>());
  if (const auto& q = g["q_projection"]; !q.is_null())
    std::printf(", W_q [%d, %d, %d]", q[0].get<int>(), q[1].get<int>(), q[2].get<int>());
  if (const auto& b = g["block_bias"]; !b.is_null())
    std::printf(", block bias [%d, %d]", b[0].get<int>(), b[1].get<int>());
  std::printf(", %.2f M parameters\n", g["parameters"].get<double>() / 1e6);
  const nlohmann::json& m = g["metadata"];
  std::printf("target        %s-pooled ground truth%s", g["target_pooling"].get<std::string>().c_str(),
              m.contains("training_target_pooling") ? "" : " (not recorded: the published target)");
  // What seer train-gates recorded, the numbers as %g.
  const std::pair<const char*, const char*> training[] = {{"training_steps", "steps"},
                                                          {"training_batch", "sequences per step"},
                                                          {"training_sequence_length", "tokens per sequence"},
                                                          {"training_target_power", "target power"},
                                                          {"training_skip_fraction", "skip fraction"},
                                                          {"training_tail_weight", "tail KL weight"},
                                                          {"training_tail_local_blocks", "tail local blocks"},
                                                          {"training_init_seed", "initialization seed"}};
  const char* separator = "; trained with";
  for (const auto& [key, label] : training)
    if (m.contains(key)) {
      const std::string value = m[key].get<std::string>();
      char* end = nullptr;
      const double x = std::strtod(value.c_str(), &end);
      // Integers (steps, seeds) as written; other numbers as %g (std::to_string's "0.250000" as 0.25).
      const bool integer = !value.empty() && value.find_first_not_of("0123456789") == std::string::npos;
      if (end && *end == '\0' && !value.empty() && !integer)
        std::printf("%s %s %g", separator, label, x);
      else
        std::printf("%s %s %s", separator, label, value.c_str());
      separator = ",";
    }
  std::printf("\n");
  if (!g["budget_densities"].empty()) {
    std::printf("budgets       calibrated for densities");
    for (const auto& d : g["budget_densities"]) std::printf(" %g", d.get<double>());
    const auto& b = g["budgets"];
    std::printf(" at %lld tokens (%s, %d local blocks)\n", b["context"].get<long long>(),
                b["keep_sink"].get<bool>() ? "sink kept" : "no sink", b["local_blocks"].get<int>());
  }
  if (m.contains("training_layer_kl"))
    std::printf("layer KL      %s\n", m["training_layer_kl"].get<std::string>().c_str());
}

void run_info(const InfoOptions& o) {
  const std::string path = resolve_model_path(o.model);
  LlamaConfig c;
  std::string format;
  std::map<std::string, TypeCount> types;  // by tensor type name
  uint64_t file_bytes = 0;
  if (is_gguf_path(path)) {
    const GgufFile file = GgufFile::open(path);
    c = llama_config_from_gguf(file, std::filesystem::path(path).stem().string());
    format = "GGUF v" + std::to_string(file.version());
    for (const GgufTensorInfo& t : file.tensors()) {
      TypeCount& tc = types[std::string(ggml_type_name(t.type))];
      ++tc.tensors;
      tc.elements += t.elements;
      tc.bytes += t.bytes;
    }
    file_bytes = std::filesystem::file_size(path);
  } else {
    const SafetensorsModel model = SafetensorsModel::open(path);
    c = llama_config_from_hf(model, path);
    format = "safetensors, " + std::to_string(model.shard_count()) + " shard(s)";
    for (const std::string& name : model.tensor_names()) {
      const SafetensorsTensor& t = *model.find(name);
      TypeCount& tc = types[std::string(safetensors_dtype_name(t.dtype))];
      ++tc.tensors;
      tc.elements += t.elements;
      tc.bytes += t.end - t.begin;
      file_bytes += t.end - t.begin;
    }
  }
  int64_t parameters = 0, tensors = 0;
  for (const auto& [name, tc] : types) {
    parameters += tc.elements;
    tensors += tc.tensors;
  }
  const double kv_per_token = 2.0 * c.layers * c.kv_heads * c.head_dim * sizeof(float);

  nlohmann::json j = {{"path", path},
                      {"format", format},
                      {"architecture", c.architecture},
                      {"name", c.name},
                      {"layers", c.layers},
                      {"hidden", c.hidden},
                      {"q_heads", c.q_heads},
                      {"kv_heads", c.kv_heads},
                      {"head_dim", c.head_dim},
                      {"intermediate", c.intermediate},
                      {"vocab", c.vocab},
                      {"max_positions", c.max_positions},
                      {"rope_theta", c.rope.theta},
                      {"rope_scaling", rope_text(c.rope)},
                      {"rms_eps", c.rms_eps},
                      {"tied_embeddings", c.tied_embeddings},
                      {"qkv_bias", c.qkv_bias},
                      {"bos", c.bos},
                      {"eos", c.eos},
                      {"add_bos", c.add_bos},
                      {"tensors", tensors},
                      {"parameters", parameters},
                      {"file_bytes", file_bytes},
                      {"float32_weight_bytes", double(parameters) * sizeof(float)},
                      {"kv_cache_bytes_per_token", kv_per_token},
                      {"tensor_types", nlohmann::json::object()}};
  for (const auto& [name, tc] : types)
    j["tensor_types"][name] = {{"tensors", tc.tensors}, {"elements", tc.elements}, {"bytes", tc.bytes}};
  if (!o.gates.empty()) j["gates"] = gates_info(o.gates, c);
  if (o.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("model         %s (%s, %s)\n", path.c_str(), format.c_str(), human_bytes(double(file_bytes)).c_str());
  std::printf("name          %s\n", c.name.c_str());
  std::printf("architecture  %s: %d layers, hidden %d, %d query / %d KV heads x %d, MLP %d, vocab %d\n",
              c.architecture.c_str(), c.layers, c.hidden, c.q_heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab);
  std::printf("positions     %d, RoPE theta %g, scaling %s; RMSNorm eps %g\n", c.max_positions, c.rope.theta,
              rope_text(c.rope).c_str(), c.rms_eps);
  std::printf("embeddings    %s; Q/K/V bias %s; BOS %d, EOS %d, BOS added to texts: %s\n",
              c.tied_embeddings ? "tied to the LM head" : "separate LM head", c.qkv_bias ? "yes" : "no", c.bos, c.eos,
              c.add_bos ? "yes" : "no");
  std::printf("tensors       %lld:", (long long)tensors);
  for (const auto& [name, tc] : types)
    std::printf(" %s %lld (%s)", name.c_str(), (long long)tc.tensors, human_bytes(double(tc.bytes)).c_str());
  std::printf("\nparameters    %.2f M\n", double(parameters) / 1e6);
  std::printf("memory        float32 weights %s; KV cache %s per token, %s at %d tokens\n",
              human_bytes(double(parameters) * sizeof(float)).c_str(), human_bytes(kv_per_token).c_str(),
              human_bytes(kv_per_token * c.max_positions).c_str(), c.max_positions);
  if (j.contains("gates")) print_gates_info(j["gates"]);
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto options = std::make_shared<InfoOptions>();
  CLI::App* cmd = app.add_subcommand("info", "show a model's configuration, tensors, parameters and memory use");
  cmd->add_option("--model", options->model, "GGUF file or Hugging Face directory (default: the built-in model)");
  cmd->add_option("--gates", options->gates, "also show a gates file (safetensors) for the model");
  cmd->add_flag("--json", options->json, "print JSON");
  cmd->callback([options] { run_info(*options); });
}

}  // namespace seer::cli
