// The CPU forward pass of the built-in model against itself: decoding through the KV cache, chunked
// prefill and SeerAttention at full density all give the logits of one plain prefill; sampling
// from the model is reproducible from its seed.
#include <gtest/gtest.h>

#include <cmath>

#include "builtin_model.h"
#include "model/forward_cpu.h"
#include "model/sampling.h"

namespace seer {
namespace {

// Different product shapes (matrix-vector vs matrix-matrix, other tilings) round differently.
constexpr double kTolerance = 5e-4;

std::vector<int32_t> passage(size_t count) {
  const std::vector<int32_t> ids = test::numpy_reference()["passage"]["ids"].get<std::vector<int32_t>>();
  return {ids.begin(), ids.begin() + std::ptrdiff_t(count)};
}

// Logits of every position, one prefill.
std::vector<std::vector<float>> all_logits(LlamaCpu& model, std::span<const int32_t> ids) {
  std::vector<std::vector<float>> out;
  model.forward(ids, 0, [&](int64_t, std::span<const float> row) { out.emplace_back(row.begin(), row.end()); });
  return out;
}

double max_diff(std::span<const float> a, std::span<const float> b) {
  double worst = 0.0;
  for (size_t n = 0; n < a.size(); ++n) {
    if (!std::isfinite(a[n]) || !std::isfinite(b[n])) return INFINITY;
    worst = std::max(worst, double(std::abs(a[n] - b[n])));
  }
  return worst;
}

TEST(Forward, DecodeThroughTheCacheEqualsPrefill) {
  SEER_REQUIRE_BUILTIN_MODEL(weights);
  const std::vector<int32_t> ids = passage(100);
  CpuForwardOptions options;
  options.context = 100;
  LlamaCpu model(*weights, options);
  const std::vector<std::vector<float>> full = all_logits(model, ids);
  EXPECT_EQ(model.position(), 100);

  model.reset();
  std::span<const float> logits = model.prefill(std::span(ids).first(60));
  double worst = max_diff(logits, full[59]);
  for (size_t p = 60; p < ids.size(); ++p) {
    logits = model.decode(ids[p]);
    worst = std::max(worst, max_diff(logits, full[p]));
  }
  std::cout << "[ decode ] max |logit diff| decode vs prefill: " << worst << "\n";
  EXPECT_LT(worst, kTolerance);
  EXPECT_EQ(model.position(), 100);
  EXPECT_THROW(model.decode(ids[0]), Error);  // the cache is full
}

TEST(Forward, ChunkedPrefillEqualsOneChunk) {
  SEER_REQUIRE_BUILTIN_MODEL(weights);
  const std::vector<int32_t> ids = passage(200);
  CpuForwardOptions whole;
  whole.context = 200;
  LlamaCpu one(*weights, whole);
  const std::vector<std::vector<float>> reference = all_logits(one, ids);
  for (const int64_t chunk : {64, 37}) {
    CpuForwardOptions chunked = whole;
    chunked.chunk = chunk;
    LlamaCpu model(*weights, chunked);
    const std::vector<std::vector<float>> logits = all_logits(model, ids);
    double worst = 0.0;
    for (size_t p = 0; p < ids.size(); ++p) worst = std::max(worst, max_diff(logits[p], reference[p]));
    EXPECT_LT(worst, kTolerance) << "chunk " << chunk;
  }
}

TEST(Forward, SeerAttentionAtFullDensityEqualsDense) {
  SEER_REQUIRE_BUILTIN_MODEL(weights);
  const LlamaConfig& c = weights->config;
  const std::vector<int32_t> ids = passage(300);
  CpuForwardOptions dense;
  dense.context = 310;
  LlamaCpu reference_model(*weights, dense);
  const std::vector<std::vector<float>> reference = all_logits(reference_model, ids);

  const std::span<const float> next = reference_model.decode(ids[0]);
  const std::vector<float> reference_next(next.begin(), next.end());
  // d_g = d (the published gates) and d_g = 8 (W_q beside a per-KV-head W_k, as the shipped d_g = 16 gates).
  for (const int gate_dim : {c.head_dim, 8}) {
    std::vector<GateWeights<float>> gates;
    for (int l = 0; l < c.layers; ++l)
      gates.push_back(GateWeights<float>::random(GateConfig{{c.q_heads, c.kv_heads, c.head_dim}, gate_dim, 64}, 7 + l));
    CpuForwardOptions seer = dense;
    seer.attention = AttentionMethod::seer;
    seer.gates = gates;
    seer.selection.density = 1.0;
    LlamaCpu full(*weights, seer);
    const std::vector<std::vector<float>> logits = all_logits(full, ids);
    EXPECT_DOUBLE_EQ(full.last_density(), 1.0);
    double worst = 0.0;
    for (size_t p = 0; p < ids.size(); ++p) worst = std::max(worst, max_diff(logits[p], reference[p]));
    EXPECT_LT(worst, kTolerance) << "d_g " << gate_dim;
    // Decoding after a sparse prefill attends densely: one more token matches dense decoding.
    EXPECT_LT(max_diff(full.decode(ids[0]), reference_next), kTolerance);

    seer.selection.density = 0.3;
    LlamaCpu sparse(*weights, seer);
    const std::vector<std::vector<float>> sparse_logits = all_logits(sparse, ids);
    EXPECT_GT(sparse.last_density(), 0.2);
    EXPECT_LT(sparse.last_density(), 0.6);
    // The first query block attends to its only block either way; later rows lose keys.
    EXPECT_LT(max_diff(sparse_logits[10], reference[10]), kTolerance);
    EXPECT_GT(max_diff(sparse_logits.back(), reference.back()), 10 * kTolerance) << "d_g " << gate_dim;
  }
}

TEST(Forward, RejectsBadInput) {
  SEER_REQUIRE_BUILTIN_MODEL(weights);
  CpuForwardOptions options;
  options.context = 8;
  LlamaCpu model(*weights, options);
  EXPECT_THROW(model.prefill(std::vector<int32_t>{1, weights->config.vocab}), Error);
  EXPECT_THROW(model.prefill(std::vector<int32_t>(9, 1)), Error);
  EXPECT_THROW(model.prefill({}), Error);
  options.attention = AttentionMethod::seer;  // without gates
  EXPECT_THROW(LlamaCpu(*weights, options), Error);
}

std::vector<int32_t> sample_tokens(const LlamaWeights& weights, uint64_t seed, int count) {
  const std::vector<int32_t> prompt = {504, 3575, 282, 4649, 314};  // "The capital of France is"
  CpuForwardOptions options;
  options.context = int64_t(prompt.size()) + count;
  LlamaCpu model(weights, options);
  Sampler sampler(SamplingOptions{.temperature = 1.0, .top_k = 50, .top_p = 0.95, .seed = seed}, weights.config.vocab);
  std::vector<int32_t> out;
  std::span<const float> logits = model.prefill(prompt);
  for (int i = 0; i < count; ++i) {
    out.push_back(sampler.sample(logits));
    if (i + 1 < count) logits = model.decode(out.back());
  }
  return out;
}

TEST(Forward, SamplingIsReproducibleFromTheSeed) {
  SEER_REQUIRE_BUILTIN_MODEL(weights);
  const std::vector<int32_t> a = sample_tokens(*weights, 11, 12);
  EXPECT_EQ(a, sample_tokens(*weights, 11, 12));
  EXPECT_NE(a, sample_tokens(*weights, 12, 12));
}

}  // namespace
}  // namespace seer
