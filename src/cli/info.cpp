// `seer info`: what a model file holds, read from its metadata without loading the weights.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/llama_loader.h"

namespace seer::cli {
namespace {

struct InfoOptions {
  std::string model;
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
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto options = std::make_shared<InfoOptions>();
  CLI::App* cmd = app.add_subcommand("info", "show a model's configuration, tensors, parameters and memory use");
  cmd->add_option("--model", options->model, "GGUF file or Hugging Face directory (default: the built-in model)");
  cmd->add_flag("--json", options->json, "print JSON");
  cmd->callback([options] { run_info(*options); });
}

}  // namespace seer::cli
