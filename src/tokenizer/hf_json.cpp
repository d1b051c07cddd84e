// Hugging Face tokenizer.json (+ tokenizer_config.json) to a TokenizerSpec.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace seer {
namespace {

using nlohmann::json;

// The Split regexes of the Llama 3 and Qwen2 tokenizer.json files, as the JSON decodes them.
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  SEER_CHECK(in, "cannot open ", path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(path.string(), ": ", e.what());
  }
}

std::string type_of(const json& j) { return j.is_object() ? j.value("type", std::string()) : std::string(); }

bool is_byte_level(const json& j, bool use_regex) {
  return type_of(j) == "ByteLevel" && !j.value("add_prefix_space", false) && j.value("use_regex", true) == use_regex;
}

// The pre_tokenizer section as one of the known pre-tokenizer names.
std::string pre_tokenizer_of(const json& pre) {
  if (is_byte_level(pre, true)) return "gpt2";
  if (type_of(pre) == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].size() == 2) {
    const json& first = pre["pretokenizers"][0];
    const json& second = pre["pretokenizers"][1];
    if (type_of(first) == "Digits" && first.value("individual_digits", false) && is_byte_level(second, true)) {
      return "smollm";
    }
    if (type_of(first) == "Split" && first.value("behavior", "") == "Isolated" && !first.value("invert", false) &&
        first.contains("pattern") && first["pattern"].contains("Regex") && is_byte_level(second, false)) {
      const std::string regex = first["pattern"]["Regex"].get<std::string>();
      if (regex == kLlama3Regex) return "llama-bpe";
      if (regex == kQwen2Regex) return "qwen2";
    }
  }
  fail("unsupported pre_tokenizer ", pre.dump().substr(0, 300),
       " (known: GPT-2 ByteLevel, SmolLM Digits+ByteLevel, Llama 3 and Qwen2 Split+ByteLevel)");
}

bool null_or_empty(const json& model, const char* key) {
  return !model.contains(key) || model[key].is_null() || (model[key].is_string() && model[key].get<std::string>().empty());
}

// A special token entry of tokenizer_config.json: a string, an AddedToken object or null.
int32_t special_id(const json& config, const char* key, const std::vector<std::string>& tokens) {
  if (!config.contains(key) || config[key].is_null()) return -1;
  const json& entry = config[key];
  const std::string content = entry.is_object() ? entry.at("content").get<std::string>() : entry.get<std::string>();
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (tokens[id] == content) return int32_t(id);
  }
  fail("tokenizer_config.json: ", key, " \"", content, "\" is not in the vocabulary");
}

// tokenizer_config.json's chat_template: a string, or a list of {name, template} whose "default"
// entry is the one used for plain chats.
std::string chat_template_of(const json& config) {
  if (!config.contains("chat_template") || config["chat_template"].is_null()) return {};
  const json& entry = config["chat_template"];
  if (entry.is_string()) return entry.get<std::string>();
  for (const json& named : entry) {
    if (named.value("name", "") == "default") return named.at("template").get<std::string>();
  }
  fail("tokenizer_config.json: chat_template list has no \"default\" entry");
}

TokenizerSpec spec_from_json(const json& j) {
  const json& model = j.at("model");
  SEER_CHECK(type_of(model) == "BPE", "tokenizer model type \"", type_of(model), "\" is not BPE");
  SEER_CHECK(!model.value("byte_fallback", false), "BPE byte_fallback is not supported (not a byte-level BPE)");
  SEER_CHECK(null_or_empty(model, "continuing_subword_prefix") && null_or_empty(model, "end_of_word_suffix"),
             "BPE continuing_subword_prefix / end_of_word_suffix are not supported");
  SEER_CHECK(!model.contains("dropout") || model["dropout"].is_null(), "BPE dropout is not supported");
  SEER_CHECK(!j.contains("normalizer") || j["normalizer"].is_null(), "tokenizer normalizer ",
             j.value("normalizer", json()).dump().substr(0, 100), " is not supported");
  SEER_CHECK(j.contains("decoder") && type_of(j["decoder"]) == "ByteLevel", "tokenizer decoder is not ByteLevel");

  TokenizerSpec spec;
  spec.pre = pre_tokenizer_of(j.at("pre_tokenizer"));
  spec.ignore_merges = model.value("ignore_merges", false);

  std::vector<bool> filled;
  const auto place = [&](int64_t id, const std::string& text, int32_t type) {
    SEER_CHECK(id >= 0 && id < INT32_MAX, "token id ", id, " of \"", text, "\" is out of range");
    if (size_t(id) >= spec.tokens.size()) {
      spec.tokens.resize(size_t(id) + 1);
      spec.token_types.resize(size_t(id) + 1, token_type::normal);
      filled.resize(size_t(id) + 1, false);
    }
    SEER_CHECK(!filled[size_t(id)] || spec.tokens[size_t(id)] == text, "token id ", id, " is both \"",
               spec.tokens[size_t(id)], "\" and \"", text, "\"");
    spec.tokens[size_t(id)] = text;
    spec.token_types[size_t(id)] = type;
    filled[size_t(id)] = true;
  };
  for (const auto& [text, id] : model.at("vocab").items()) place(id.get<int64_t>(), text, token_type::normal);
  if (j.contains("added_tokens")) {
    for (const json& added : j["added_tokens"]) {
      const std::string content = added.at("content").get<std::string>();
      SEER_CHECK(!added.value("lstrip", false) && !added.value("rstrip", false) && !added.value("single_word", false),
                 "added token \"", content, "\" uses lstrip, rstrip or single_word, which are not supported");
      place(added.at("id").get<int64_t>(), content,
            added.value("special", false) ? token_type::control : token_type::user_defined);
    }
  }
  for (size_t id = 0; id < filled.size(); ++id) SEER_CHECK(filled[id], "token id ", id, " is missing");

  for (const json& merge : model.at("merges")) {
    // Older files write a merge as "left right", newer ones as ["left", "right"].
    spec.merges.push_back(merge.is_string() ? merge.get<std::string>()
                                            : merge.at(0).get<std::string>() + " " + merge.at(1).get<std::string>());
  }
  return spec;
}

}  // namespace

TokenizerSpec spec_from_hf_json(const std::string& path) {
  TokenizerSpec spec;
  try {
    spec = spec_from_json(read_json(path));
    const std::filesystem::path config_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
    if (std::filesystem::exists(config_path)) {
      const json config = read_json(config_path);
      spec.bos = special_id(config, "bos_token", spec.tokens);
      spec.eos = special_id(config, "eos_token", spec.tokens);
      spec.pad = special_id(config, "pad_token", spec.tokens);
      spec.chat_template = chat_template_of(config);
    }
  } catch (const json::exception& e) {
    fail(path, ": unexpected tokenizer.json structure: ", e.what());
  }
  return spec;
}

Tokenizer Tokenizer::from_json_file(const std::string& path) { return from_spec(spec_from_hf_json(path)); }

}  // namespace seer
