// Sampling, perplexity windows and statistics, on hand-made inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "core/error.h"
#include "model/perplexity.h"
#include "model/sampling.h"

namespace seer {
namespace {

TEST(Sampler, GreedyTakesTheHighestLogitAndTheLowestIdAmongTies) {
  Sampler greedy(SamplingOptions{}, 5);
  EXPECT_EQ(greedy.sample(std::vector<float>{0.1f, 3.0f, -1.0f, 3.0f, 2.0f}), 1);
  // top-k 1 is greedy at any temperature.
  Sampler top1(SamplingOptions{.temperature = 5.0, .top_k = 1, .seed = 3}, 5);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(top1.sample(std::vector<float>{0.1f, 3.0f, -1.0f, 3.0f, 2.0f}), 1);
}

std::map<int32_t, int> histogram(const SamplingOptions& options, const std::vector<float>& logits, int draws) {
  Sampler sampler(options, int32_t(logits.size()));
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[sampler.sample(logits)];
  return counts;
}

TEST(Sampler, DrawsFromTheTemperatureSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.0f, 1.5f};
  const double temperature = 0.7;
  const int draws = 40000;
  const std::map<int32_t, int> counts = histogram({.temperature = temperature, .seed = 5}, logits, draws);
  double z = 0.0;
  for (const float l : logits) z += std::exp(l / temperature);
  for (int32_t id = 0; id < 4; ++id) {
    const double p = std::exp(logits[size_t(id)] / temperature) / z;
    const double sigma = std::sqrt(p * (1 - p) / draws);
    const double freq = counts.count(id) ? double(counts.at(id)) / draws : 0.0;
    EXPECT_NEAR(freq, p, 5 * sigma) << "id " << id;
  }
}

TEST(Sampler, TopKAndTopPRestrictTheCandidates) {
  // Probabilities at temperature 1: 0.5, 0.3, 0.15, 0.05.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  const std::map<int32_t, int> top_p = histogram({.temperature = 1.0, .top_p = 0.7, .seed = 1}, logits, 2000);
  EXPECT_EQ(top_p.size(), 2u);  // 0.5 < 0.7 <= 0.8: ids 0 and 1
  EXPECT_NEAR(double(top_p.at(0)) / 2000, 0.5 / 0.8, 0.05);
  const std::map<int32_t, int> top_k = histogram({.temperature = 1.0, .top_k = 3, .seed = 1}, logits, 2000);
  EXPECT_EQ(top_k.size(), 3u);
  EXPECT_EQ(top_k.count(3), 0u);
}

TEST(Sampler, TheSeedDeterminesTheDraws) {
  const std::vector<float> flat(64, 0.0f);
  const auto draws = [&](uint64_t seed) {
    Sampler sampler({.temperature = 1.0, .top_p = 0.9, .seed = seed}, 64);
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(sampler.sample(flat));
    return out;
  };
  EXPECT_EQ(draws(42), draws(42));
  EXPECT_NE(draws(42), draws(43));
}

TEST(Sampler, RejectsBadOptions) {
  EXPECT_THROW(Sampler({.temperature = 1.0, .top_k = -1}, 4), Error);
  EXPECT_THROW(Sampler({.temperature = 1.0, .top_p = 0.0}, 4), Error);
  EXPECT_THROW(Sampler({.temperature = 1.0, .top_p = 1.5}, 4), Error);
  Sampler sampler({}, 4);
  EXPECT_THROW(sampler.sample(std::vector<float>(3)), Error);
}

TEST(Perplexity, WindowsLikeLlamaCpp) {
  const std::vector<PerplexityWindow> w = perplexity_windows(10000, 4096, 0);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[1].begin, 4096);
  EXPECT_EQ(w[1].length, 4096);
  EXPECT_EQ(w[1].first, 2048);
  const std::vector<PerplexityWindow> short_text = perplexity_windows(100, 4096, 0);
  ASSERT_EQ(short_text.size(), 1u);
  EXPECT_EQ(short_text[0].length, 100);
  EXPECT_EQ(short_text[0].first, 50);
  EXPECT_TRUE(perplexity_windows(1, 4096, 0).empty());
}

TEST(Perplexity, StridedWindowsScoreTheirLastStrideTokens) {
  const std::vector<PerplexityWindow> w = perplexity_windows(5000, 2048, 1024);
  ASSERT_EQ(w.size(), 3u);  // begins 0, 1024, 2048; 3072 + 2048 > 5000
  EXPECT_EQ(w[2].begin, 2048);
  EXPECT_EQ(w[2].first, 2048 - 1 - 1024);  // logits at [1023, 2047) predict the last 1024 tokens
  EXPECT_EQ(perplexity_windows(5000, 2048, 2048)[0].first, 0);
  EXPECT_THROW(perplexity_windows(5000, 2048, 4096), Error);
  EXPECT_THROW(perplexity_windows(5000, 1, 0), Error);
}

TEST(Perplexity, StatisticsAndDeltaMethodError) {
  NllStats s;
  for (const double x : {1.0, 2.0, 3.0, 2.0}) s.add(x);
  EXPECT_DOUBLE_EQ(s.mean(), 2.0);
  EXPECT_DOUBLE_EQ(s.perplexity(), std::exp(2.0));
  // Population variance 0.5, over count - 1 = 3: standard error sqrt(1/6).
  EXPECT_NEAR(s.perplexity_error(), std::exp(2.0) * std::sqrt(0.5 / 3.0), 1e-12);
  // -log softmax, checked against the closed form.
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f};
  const double lse = std::log(1.0 + std::exp(1.0) + std::exp(2.0));
  EXPECT_NEAR(token_nll(logits, 1), lse - 1.0, 1e-6);
  EXPECT_THROW(token_nll(logits, 3), Error);
}

}  // namespace
}  // namespace seer
