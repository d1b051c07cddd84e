// The built-in model and the numpy reference data, loaded once per test process.
#pragma once
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "model/llama_loader.h"

namespace seer::test {

// nullptr when models/ lacks the file (scripts/setup.sh fetches it); tests then skip.
inline const LlamaWeights* builtin_model() {
  static const std::unique_ptr<LlamaWeights> weights = []() -> std::unique_ptr<LlamaWeights> {
    if (!std::filesystem::exists(SEER_MODEL_GGUF)) return nullptr;
    return std::make_unique<LlamaWeights>(load_llama(SEER_MODEL_GGUF));
  }();
  return weights.get();
}

// tests/data/model/reference.json, written by tests/model/reference_forward.py.
inline const nlohmann::json& numpy_reference() {
  static const nlohmann::json j = nlohmann::json::parse(std::ifstream(SEER_MODEL_DATA_DIR "/reference.json"));
  return j;
}

}  // namespace seer::test

#define SEER_REQUIRE_BUILTIN_MODEL(weights)                            \
  const ::seer::LlamaWeights* weights = ::seer::test::builtin_model(); \
  if (weights == nullptr) GTEST_SKIP() << SEER_MODEL_GGUF << " is absent: run scripts/setup.sh"
