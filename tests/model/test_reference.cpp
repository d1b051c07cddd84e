// The CPU forward pass of the built-in model against an independent numpy implementation
// (tests/model/reference_forward.py: gguf-py dequantization, llama.cpp's interleaved RoPE on the
// file's permuted Q/K rows, float64). Agreement checks the loader's un-permutation as well.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "builtin_model.h"
#include "model/forward_cpu.h"
#include "model/perplexity.h"

namespace seer {
namespace {

using nlohmann::json;

// float32 against float64 over 30 layers: observed 2e-5 (printed below).
constexpr double kLogitTolerance = 1e-3;

TEST(NumpyReference, PromptLogits) {
  SEER_REQUIRE_BUILTIN_MODEL(weights);
  const int32_t vocab = weights->config.vocab;
  for (const auto& [name, p] : test::numpy_reference()["prompts"].items()) {
    const std::vector<int32_t> ids = p["ids"].get<std::vector<int32_t>>();
    CpuForwardOptions options;
    options.context = int64_t(ids.size());
    LlamaCpu model(*weights, options);
    std::vector<std::vector<float>> logits;
    model.forward(ids, 0, [&](int64_t, std::span<const float> row) { logits.emplace_back(row.begin(), row.end()); });
    ASSERT_EQ(logits.size(), ids.size());

    // The last position: a sample of 1024 logits (the top 64 and a spread) and the log-sum-exp of all.
    const std::vector<float>& last = logits.back();
    const std::vector<int32_t> sample = p["last_logit_ids"].get<std::vector<int32_t>>();
    const std::vector<double> expected = p["last_logits"].get<std::vector<double>>();
    double worst = 0.0;
    for (size_t n = 0; n < sample.size(); ++n) worst = std::max(worst, std::abs(last[size_t(sample[n])] - expected[n]));
    double max = last[0], sum = 0.0;
    for (const float x : last) max = std::max(max, double(x));
    for (const float x : last) sum += std::exp(double(x) - max);
    const double lse_error = std::abs(max + std::log(sum) - p["last_logsumexp"].get<double>());
    std::cout << "[ numpy ] " << name << ": " << ids.size() << " tokens, max |logit diff| " << worst
              << ", log-sum-exp diff " << lse_error << "\n";
    RecordProperty(name + "_max_logit_diff", std::to_string(worst));
    EXPECT_LT(worst, kLogitTolerance) << name;
    EXPECT_LT(lse_error, kLogitTolerance) << name;

    // Every position: the top-5 logits in order (exact ids wherever the reference's gap to the next
    // candidate exceeds the tolerance).
    const json& top_ids = p["top_ids"];
    const json& top_logits = p["top_logits"];
    for (size_t pos = 0; pos < ids.size(); ++pos)
      for (size_t r = 0; r < 5; ++r) {
        const int32_t id = top_ids[pos][r].get<int32_t>();
        ASSERT_TRUE(id >= 0 && id < vocab);
        EXPECT_NEAR(logits[pos][size_t(id)], top_logits[pos][r].get<double>(), kLogitTolerance)
            << name << " position " << pos << " rank " << r;
        const bool separated =
            r + 1 == 5 || top_logits[pos][r].get<double>() - top_logits[pos][r + 1].get<double>() > 2 * kLogitTolerance;
        if (r == 0 && separated) {
          EXPECT_EQ(std::max_element(logits[pos].begin(), logits[pos].end()) - logits[pos].begin(), id)
              << name << " position " << pos;
        }
      }
  }
}

TEST(NumpyReference, PassageNll) {
  SEER_REQUIRE_BUILTIN_MODEL(weights);
  const json& passage = test::numpy_reference()["passage"];
  const std::vector<int32_t> ids = passage["ids"].get<std::vector<int32_t>>();
  CpuForwardOptions options;
  options.context = int64_t(ids.size());
  options.chunk = 200;  // chunked prefill, as the perplexity tool runs long windows
  LlamaCpu model(*weights, options);
  NllStats stats;
  score_window(model, ids, 0, stats);
  const double expected = passage["mean_nll"].get<double>();
  std::cout << "[ numpy ] passage " << passage["book"].get<std::string>() << ": " << stats.count
            << " predictions, mean NLL " << stats.mean() << " (numpy " << expected << "), relative diff "
            << std::abs(stats.mean() - expected) / expected << ", PPL " << stats.perplexity() << "\n";
  EXPECT_EQ(stats.count, passage["predictions"].get<int64_t>());
  EXPECT_NEAR(stats.mean(), expected, 1e-5 * expected);
}

// The reference tokenized the passage with Hugging Face tokenizers; seer's tokenizer must agree,
// or perplexities would be measured on other tokens.
TEST(NumpyReference, PassageTokens) {
  const json& passage = test::numpy_reference()["passage"];
  const std::string path = std::string(SEER_CORPUS_DIR) + "/" + passage["book"].get<std::string>();
  if (!std::filesystem::exists(path) || test::builtin_model() == nullptr)
    GTEST_SKIP() << "needs " << path << " and the built-in model";
  std::ifstream in(path, std::ios::binary);
  std::string text(size_t(passage["bytes"].get<int64_t>()), '\0');
  in.read(text.data(), std::streamsize(text.size()));
  const std::vector<int32_t> ids = load_llama_tokenizer(SEER_MODEL_GGUF).encode(text);
  const std::vector<int32_t> expected = passage["ids"].get<std::vector<int32_t>>();
  ASSERT_GE(ids.size(), expected.size());
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + std::ptrdiff_t(expected.size())), expected);
}

}  // namespace
}  // namespace seer
