#include "formats/hf_config.h"

#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "formats/mapped_file.h"

namespace seer {
namespace {

using nlohmann::json;

constexpr size_t kMaxConfigBytes = 16u << 20;

struct ArchitectureInfo {
  HfConfig::Architecture architecture;
  std::string_view model_type;    // config.json "model_type"
  std::string_view class_name;    // config.json "architectures"[0]
  int64_t default_max_positions;  // the transformers config class default
};

constexpr ArchitectureInfo kArchitectures[] = {
    {HfConfig::Architecture::llama, "llama", "LlamaForCausalLM", 2048},
    {HfConfig::Architecture::qwen2, "qwen2", "Qwen2ForCausalLM", 32768},
    {HfConfig::Architecture::mistral, "mistral", "MistralForCausalLM", 4096 * 32},
};

// Field readers: an absent or null field gives nullopt; a present one of the wrong kind throws.
std::optional<int64_t> optional_int(const json& j, const char* field) {
  if (!j.contains(field) || j[field].is_null()) return std::nullopt;
  const json& v = j[field];
  SEER_CHECK(v.is_number_integer(), "config.json: '", field, "' must be an integer, got ", v.dump());
  return v.get<int64_t>();
}

int64_t positive_int(const json& j, const char* field, std::optional<int64_t> fallback = std::nullopt) {
  const std::optional<int64_t> v = optional_int(j, field);
  SEER_CHECK(v || fallback, "config.json: missing '", field, "'");
  const int64_t value = v ? *v : *fallback;
  SEER_CHECK(value > 0, "config.json: '", field, "' must be positive, got ", value);
  return value;
}

std::optional<double> optional_number(const json& j, const char* field) {
  if (!j.contains(field) || j[field].is_null()) return std::nullopt;
  const json& v = j[field];
  SEER_CHECK(v.is_number(), "config.json: '", field, "' must be a number, got ", v.dump());
  return v.get<double>();
}

double required_number(const json& j, const char* field, std::string_view context) {
  const std::optional<double> v = optional_number(j, field);
  SEER_CHECK(v.has_value(), "config.json: ", context, " needs '", field, "'");
  return *v;
}

const ArchitectureInfo& find_architecture(const json& j) {
  if (j.contains("model_type")) {
    SEER_CHECK(j["model_type"].is_string(), "config.json: 'model_type' must be a string");
    const std::string type = j["model_type"].get<std::string>();
    for (const ArchitectureInfo& a : kArchitectures)
      if (a.model_type == type) return a;
    fail("config.json: unsupported architecture '", type, "' (model_type); supported: llama, qwen2, mistral");
  }
  SEER_CHECK(j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
                 j["architectures"][0].is_string(),
             "config.json: needs 'model_type' or 'architectures'");
  const std::string name = j["architectures"][0].get<std::string>();
  for (const ArchitectureInfo& a : kArchitectures)
    if (a.class_name == name) return a;
  fail("config.json: unsupported architecture '", name,
       "'; supported: LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM");
}

// rope_scaling (transformers 4.x) or rope_parameters (5.x, which also carries rope_theta). The
// scaling type is "rope_type", or "type" in older files.
void read_rope(const json& j, HfConfig& config) {
  const json* scaling = nullptr;
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    scaling = &j["rope_parameters"];
    SEER_CHECK(scaling->is_object(), "config.json: 'rope_parameters' must be an object");
    if (const auto theta = optional_number(*scaling, "rope_theta")) config.rope.theta = *theta;
  } else if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    scaling = &j["rope_scaling"];
    SEER_CHECK(scaling->is_object(), "config.json: 'rope_scaling' must be an object or null");
  }
  if (const auto theta = optional_number(j, "rope_theta")) config.rope.theta = *theta;
  if (scaling == nullptr) return;

  const char* type_field = scaling->contains("rope_type") ? "rope_type" : "type";
  SEER_CHECK(scaling->contains(type_field) && (*scaling)[type_field].is_string(),
             "config.json: RoPE scaling needs a string 'rope_type'");
  const std::string type = (*scaling)[type_field].get<std::string>();
  RopeConfig& rope = config.rope;
  if (type == "default") return;
  if (type == "llama3") {
    rope.scaling = RopeConfig::Scaling::llama3;
    rope.factor = required_number(*scaling, "factor", "llama3 RoPE scaling");
    rope.low_freq_factor = required_number(*scaling, "low_freq_factor", "llama3 RoPE scaling");
    rope.high_freq_factor = required_number(*scaling, "high_freq_factor", "llama3 RoPE scaling");
    rope.original_max_positions = required_number(*scaling, "original_max_position_embeddings", "llama3 RoPE scaling");
    return;
  }
  if (type == "yarn") {
    // mscale / mscale_all_dim (DeepSeek's variant) change the attention factor in ways the RoPE
    // implementation does not model; refusing them beats silently computing something else.
    SEER_CHECK(!scaling->contains("mscale") && !scaling->contains("mscale_all_dim"),
               "config.json: YaRN with mscale / mscale_all_dim is not supported");
    rope.scaling = RopeConfig::Scaling::yarn;
    rope.factor = required_number(*scaling, "factor", "YaRN RoPE scaling");
    rope.original_max_positions =
        optional_number(*scaling, "original_max_position_embeddings").value_or(double(config.max_position_embeddings));
    rope.beta_fast = optional_number(*scaling, "beta_fast").value_or(32.0);
    rope.beta_slow = optional_number(*scaling, "beta_slow").value_or(1.0);
    rope.yarn_attention_factor = optional_number(*scaling, "attention_factor").value_or(0.0);
    return;
  }
  fail("config.json: unsupported RoPE scaling type '", type, "' (supported: default, llama3, yarn)");
}

}  // namespace

std::string_view architecture_name(HfConfig::Architecture architecture) {
  for (const ArchitectureInfo& a : kArchitectures)
    if (a.architecture == architecture) return a.model_type;
  return "unknown";
}

HfConfig parse_hf_config(std::string_view json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail("config.json: invalid JSON: ", e.what());
  }
  SEER_CHECK(j.is_object(), "config.json: must be a JSON object");

  HfConfig config;
  const ArchitectureInfo& arch = find_architecture(j);
  config.architecture = arch.architecture;
  config.hidden_size = positive_int(j, "hidden_size");
  config.num_layers = positive_int(j, "num_hidden_layers");
  config.num_heads = positive_int(j, "num_attention_heads");
  config.num_kv_heads = positive_int(j, "num_key_value_heads", config.num_heads);
  config.intermediate_size = positive_int(j, "intermediate_size");
  config.vocab_size = positive_int(j, "vocab_size");
  config.max_position_embeddings = positive_int(j, "max_position_embeddings", arch.default_max_positions);
  SEER_CHECK(config.num_heads % config.num_kv_heads == 0, "config.json: num_attention_heads (", config.num_heads,
             ") is not a multiple of num_key_value_heads (", config.num_kv_heads, ")");
  if (optional_int(j, "head_dim")) {
    config.head_dim = positive_int(j, "head_dim");
  } else {
    SEER_CHECK(config.hidden_size % config.num_heads == 0, "config.json: hidden_size (", config.hidden_size,
               ") is not a multiple of num_attention_heads (", config.num_heads, ") and head_dim is absent");
    config.head_dim = config.hidden_size / config.num_heads;
  }
  SEER_CHECK(config.head_dim % 2 == 0, "config.json: head_dim ", config.head_dim, " must be even for RoPE");

  config.rms_norm_eps = optional_number(j, "rms_norm_eps").value_or(1e-6);
  SEER_CHECK(config.rms_norm_eps > 0, "config.json: 'rms_norm_eps' must be positive");
  if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null()) {
    SEER_CHECK(j["tie_word_embeddings"].is_boolean(), "config.json: 'tie_word_embeddings' must be true or false");
    config.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  read_rope(j, config);
  try {
    config.rope.validate();
  } catch (const Error& e) {
    fail("config.json: ", e.what());
  }
  return config;
}

HfConfig read_hf_config(const std::string& path) {
  const std::string text = read_text_file(path, kMaxConfigBytes);
  try {
    return parse_hf_config(text);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

}  // namespace seer
