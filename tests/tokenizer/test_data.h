// Paths and loaders for the tokenizer reference data (tests/data/tokenizer, made by
// make_reference.py) and the dev corpus.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace seer::test {

inline const char* kFamilies[] = {"smollm", "gpt2", "llama-bpe", "qwen2"};

inline std::string data_path(const std::string& name) { return std::string(SEER_TOKENIZER_DATA_DIR) + "/" + name; }

inline std::string smollm2_json_path() { return data_path("smollm2/tokenizer.json"); }

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline const nlohmann::json& reference() {
  static const nlohmann::json j = nlohmann::json::parse(read_file(data_path("reference.json")));
  return j;
}

// SmolLM2's vocabulary and merges under the pre-tokenizer of `family`, as make_reference.py builds
// the Hugging Face tokenizers (Llama 3's sets ignore_merges).
inline const Tokenizer& family_tokenizer(const std::string& family) {
  static const std::vector<Tokenizer> tokenizers = [] {
    std::vector<Tokenizer> all;
    for (const char* name : kFamilies) {
      TokenizerSpec spec = spec_from_hf_json(smollm2_json_path());
      spec.pre = name;
      spec.ignore_merges = std::string(name) == "llama-bpe";
      all.push_back(Tokenizer::from_spec(std::move(spec)));
    }
    return all;
  }();
  for (size_t i = 0; i < std::size(kFamilies); ++i) {
    if (family == kFamilies[i]) return tokenizers[i];
  }
  throw std::runtime_error("unknown family " + family);
}

// The dev corpus: $SEER_CORPUS_DIR, else shared/corpus/dev beside the repository.
inline std::filesystem::path corpus_dir() {
  if (const char* dir = std::getenv("SEER_CORPUS_DIR")) return dir;
  return SEER_CORPUS_DIR;
}

}  // namespace seer::test
