// Several GPUs through NCCL (cuda/communicator.h): a model split over two GPUs (and four, where
// there are four; tensor parallelism, cuda/tensor_parallel.h) gives the one-GPU logits within bf16
// rounding, dense, with SeerAttention and when decoding through the split KV cache; gate training
// data-parallel over two GPUs takes the step one GPU takes on both GPUs' sequences at once. The
// one-GPU run is the reference: the split changes only the order of fp32 sums (the CPU test of the
// same split, tests/model/test_tensor_parallel.cpp, runs the built-in model). Skipped with fewer
// than 2 GPUs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cuda/communicator.h"
#include "cuda/tensor_parallel.h"
#include "reference.h"
#include "test_support.h"
#include "train/gpu_gate_step.h"

namespace seer {
namespace {

#define SEER_REQUIRE_GPUS(n) \
  if (cuda::device_count() < (n)) GTEST_SKIP() << "needs " << (n) << " GPUs, this machine has " << cuda::device_count()

// Small Llama shapes: GQA with d = 128 split evenly; the built-in model's heads (9 query, 3 KV of
// d = 64) split unevenly, 1 + 2 KV heads; and an MLP of 1000 features, cut feature by feature
// (not on 64-wide tiles: odd GEMM sizes).
LlamaConfig small_config(int q_heads, int kv_heads, int head_dim, int hidden, int intermediate) {
  LlamaConfig c;
  c.architecture = "llama";
  c.name = "synthetic";
  c.layers = 4;
  c.hidden = hidden;
  c.q_heads = q_heads;
  c.kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.intermediate = intermediate;
  c.vocab = 8192;
  c.rope = RopeConfig{.theta = 10000.0};
  c.max_positions = 8192;
  return c;
}

std::vector<LlamaConfig> configs() {
  return {small_config(16, 4, 128, 2048, 5632), small_config(9, 3, 64, 576, 1536), small_config(8, 2, 128, 1024, 1000)};
}

std::vector<int32_t> some_tokens(int64_t n, int vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (size_t i = 0; i < t.size(); ++i) t[i] = int32_t((i * 7919 + 13) % size_t(vocab));
  return t;
}

struct Comparison {
  double max_diff = 0, mean_diff = 0, max_logit = 0;
};

Comparison compare(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  Comparison c;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double d = std::abs(double(got[i]) - double(want[i]));
    c.max_diff = std::isfinite(d) ? std::max(c.max_diff, d) : INFINITY;
    c.mean_diff += d;
    c.max_logit = std::max(c.max_logit, std::abs(double(want[i])));
  }
  c.mean_diff /= double(std::max<size_t>(got.size(), 1));
  return c;
}

// Every position's logits of the model split over `ranks` GPUs (rank 0's; each rank gets the same).
// mode: dense or SeerAttention (random gates at the density given).
std::vector<float> split_logits(const LlamaConfig& c, int ranks, const std::vector<int32_t>& tokens,
                                const std::vector<GateWeights<float>>* gates, double density, double* kept = nullptr) {
  cuda::TensorParallelLlama model(c, 5, ranks);
  std::vector<std::vector<float>> logits(static_cast<size_t>(ranks));
  std::vector<double> densities(static_cast<size_t>(ranks));
  model.run([&](int r) {
    const Sequences seqs = Sequences::single(int64_t(tokens.size()));
    std::vector<cuda::DeviceGate> own;
    if (gates) own = model.upload_gates(r, *gates, ceil_div(seqs.tokens(), cuda::kBlock));
    cuda::LlamaRuntime runtime(model.part(r), seqs, 1000, model.communicator(r));  // chunks of 1000 tokens
    cuda::ForwardOptions options;
    options.all_logits = true;
    if (gates) {
      options.mode = cuda::AttentionMode::seer;
      options.gates = &own;
      options.selection.density = density;
    }
    runtime.forward(tokens, options);
    logits[size_t(r)] = runtime.logits();
    densities[size_t(r)] = runtime.last_density();
  });
  for (int r = 1; r < ranks; ++r) EXPECT_EQ(logits[size_t(r)], logits[0]) << "rank " << r << " of " << ranks;
  if (kept) {  // each rank's kept fraction weighed by its share of the heads
    *kept = 0;
    for (int r = 0; r < ranks; ++r) *kept += densities[size_t(r)] * tensor_shard(c, r, ranks).q_heads() / c.q_heads;
  }
  return logits[0];
}

// On 2 GPUs, and on 4 where the machine and the model's KV heads allow.
TEST(TensorParallelCuda, TwoGpusGiveTheOneGpuLogits) {
  SEER_REQUIRE_GPUS(2);
  for (const LlamaConfig& c : configs()) {
    const std::vector<int32_t> tokens = some_tokens(2300, c.vocab);
    const std::vector<float> one = split_logits(c, 1, tokens, nullptr, 1.0);
    for (int gpus = 2; gpus <= std::min(cuda::device_count(), c.kv_heads); gpus *= 2) {
      const Comparison d = compare(split_logits(c, gpus, tokens, nullptr, 1.0), one);
      std::printf("[measured] %d/%d heads, d = %d, MLP %d, dense, %d GPUs vs 1: max |logit diff| %.3g, mean %.3g "
                  "(max |logit| %.3g)\n",
                  c.q_heads, c.kv_heads, c.head_dim, c.intermediate, gpus, d.max_diff, d.mean_diff, d.max_logit);
      EXPECT_LT(d.max_diff, 0.05 * d.max_logit) << gpus << " GPUs";
      EXPECT_LT(d.mean_diff, 2e-3 * d.max_logit) << gpus << " GPUs";
    }
  }
}

// Both W_k layouts: per query head (d_g = d, the released gates), and per KV head beside a W_q
// (d_g = 16, the shipped gates), the latter on the uneven split.
TEST(TensorParallelCuda, TwoGpusRunSeerAttentionOnTheirOwnHeads) {
  SEER_REQUIRE_GPUS(2);
  for (const auto& [c, gate_dim] : {std::pair{configs()[0], 128}, std::pair{configs()[1], 16}}) {
    const GateConfig gc{{c.q_heads, c.kv_heads, c.head_dim}, gate_dim, 64};
    std::vector<GateWeights<float>> gates;
    for (int l = 0; l < c.layers; ++l) gates.push_back(GateWeights<float>::random(gc, 11 + l));
    const std::vector<int32_t> tokens = some_tokens(4096, c.vocab);
    double one_density = 0, two_density = 0;
    const std::vector<float> one = split_logits(c, 1, tokens, &gates, 0.2, &one_density);
    const Comparison d = compare(split_logits(c, 2, tokens, &gates, 0.2, &two_density), one);
    const Comparison dense = compare(split_logits(c, 1, tokens, nullptr, 1.0), one);
    std::printf("[measured] %d/%d heads, d_g %d, SeerAttention at density %.3f (2 GPUs: %.3f): 2 GPUs vs 1: max "
                "|logit diff| %.3g, mean %.3g; dense vs sparse: mean %.3g\n",
                c.q_heads, c.kv_heads, gate_dim, one_density, two_density, d.max_diff, d.mean_diff, dense.mean_diff);
    EXPECT_LT(one_density, 0.5);
    EXPECT_NEAR(two_density, one_density, 2e-3);
    // A near-tie in a gate's top-k may fall the other way; the logits stay far closer than dense's.
    EXPECT_LT(d.mean_diff, 0.1 * dense.mean_diff);
    EXPECT_LT(d.mean_diff, 2e-3 * d.max_logit);
  }
}

TEST(TensorParallelCuda, TwoGpusDecodeThroughTheirCacheParts) {
  SEER_REQUIRE_GPUS(2);
  const LlamaConfig c = configs()[1];
  const std::vector<int32_t> tokens = some_tokens(1030, c.vocab);
  constexpr int64_t kPrompt = 1000;
  std::vector<std::vector<float>> steps[2];
  for (const int ranks : {1, 2}) {
    cuda::TensorParallelLlama model(c, 5, ranks);
    std::vector<std::vector<float>> rank0;
    model.run([&](int r) {
      cuda::DeviceKvCache cache = cuda::DeviceKvCache::create(model.part(r).config, int64_t(tokens.size()));
      {
        cuda::LlamaRuntime runtime(model.part(r), Sequences::single(kPrompt), 256, model.communicator(r));
        cuda::ForwardOptions options;
        options.kv_cache = &cache;
        runtime.forward(std::span(tokens).first(kPrompt), options);
        runtime.logits();
      }
      cuda::LlamaDecoder decoder(model.part(r), cache, model.communicator(r));
      for (size_t t = kPrompt; t < tokens.size(); ++t) {
        const std::span<const float> logits = decoder.step(tokens[t]);
        if (r == 0) rank0.emplace_back(logits.begin(), logits.end());
      }
    });
    steps[ranks - 1] = std::move(rank0);
  }
  ASSERT_EQ(steps[0].size(), steps[1].size());
  double worst = 0, scale = 0;
  for (size_t s = 0; s < steps[0].size(); ++s) {
    const Comparison d = compare(steps[1][s], steps[0][s]);
    worst = std::max(worst, d.max_diff);
    scale = std::max(scale, d.max_logit);
  }
  std::printf("[measured] 30 decode steps after 1000 tokens, 2 GPUs vs 1: max |logit diff| %.3g (max |logit| %.3g)\n",
              worst, scale);
  EXPECT_LT(worst, 0.05 * scale);
}

// One GPU stepping on two sequences at once against two GPUs with one each: the same losses, and
// the same weights after three AdamW steps (Adam's first steps move each weight by about lr
// whatever the gradient's size, so a few elements whose gradient is near zero may differ by that).
TEST(TensorParallelCuda, DataParallelTrainingTakesTheBatchStep) {
  SEER_REQUIRE_GPUS(2);
  const LlamaConfig c = configs()[0];
  const GateConfig gc{{c.q_heads, c.kv_heads, c.head_dim}, c.head_dim, 64};
  std::vector<GateWeights<float>> init;
  for (int l = 0; l < c.layers; ++l) init.push_back(GateWeights<float>::random(gc, uint64_t(l)));
  const TrainOptions options{.steps = 3, .warmup = 1};
  constexpr int64_t kLen = 1024;
  const std::vector<int32_t> tokens = some_tokens(2 * kLen, c.vocab);

  GateTrainer one(init, options);
  std::vector<double> one_losses;
  cuda::run_on_ranks(1, [&](int) {
    const cuda::DeviceLlama model = cuda::DeviceLlama::synthetic(c, 5);
    cuda::LlamaRuntime runtime(model, Sequences::from_lengths({kLen, kLen}));
    GpuGateStep step(one, c, runtime);
    for (int s = 0; s < 3; ++s) one_losses.push_back(step.run(tokens).front());
    step.sync_host();
  });

  std::vector<GateTrainer> two{GateTrainer(init, options), GateTrainer(init, options)};
  std::vector<double> two_losses[2];
  cuda::CommunicatorGroup group(2);
  cuda::run_on_ranks(2, [&](int r) {
    const cuda::DeviceLlama model = cuda::DeviceLlama::synthetic(c, 5);
    cuda::LlamaRuntime runtime(model, Sequences::single(kLen));
    GpuGateStep step(two[size_t(r)], c, runtime, &group.rank(r));
    for (int s = 0; s < 3; ++s)
      two_losses[r].push_back(step.run(std::span(tokens).subspan(size_t(r * kLen), kLen)).front());
    step.sync_host();
  }, &group);

  for (int s = 0; s < 3; ++s) {
    std::printf("[measured] data-parallel step %d: loss %.6f on 1 GPU, %.6f on 2\n", s, one_losses[size_t(s)],
                two_losses[0][size_t(s)]);
    EXPECT_EQ(two_losses[0][size_t(s)], two_losses[1][size_t(s)]);
    EXPECT_NEAR(two_losses[0][size_t(s)], one_losses[size_t(s)], 1e-4 * one_losses[size_t(s)]);
  }
  double moved = 0, diff = 0, ranks_diff = 0;
  int64_t count = 0, far = 0;
  for (int l = 0; l < c.layers; ++l) {
    const std::vector<float>& a = one.weights()[size_t(l)].wk;
    const std::vector<float>& b = two[0].weights()[size_t(l)].wk;
    const std::vector<float>& b1 = two[1].weights()[size_t(l)].wk;
    for (size_t i = 0; i < a.size(); ++i) {
      moved += std::abs(a[i] - init[size_t(l)].wk[i]);
      diff += std::abs(a[i] - b[i]);
      ranks_diff = std::max(ranks_diff, double(std::abs(b[i] - b1[i])));
      far += std::abs(a[i] - b[i]) > 1e-4;
      ++count;
    }
  }
  std::printf("[measured] after 3 steps: mean |w - w0| %.3g; 2 GPUs vs 1: mean |diff| %.3g, %.4f%% of weights "
              "apart by > 1e-4\n",
              moved / double(count), diff / double(count), 100.0 * double(far) / double(count));
  EXPECT_EQ(ranks_diff, 0.0);  // both ranks took the same steps
  EXPECT_GT(moved / double(count), 1e-3);
  EXPECT_LT(diff / double(count), 0.01 * moved / double(count));
  EXPECT_LT(double(far) / double(count), 0.01);
}

TEST(TensorParallelCuda, RejectsSplitsItCannotRun) {
  SEER_REQUIRE_GPUS(1);
  const LlamaConfig c = configs()[1];  // 3 KV heads
  test::expect_error([&] { cuda::TensorParallelLlama(c, 5, cuda::device_count() + 1); }, {"GPUs asked for"});
  // Checked before any GPU is touched.
  test::expect_error([&] { cuda::TensorParallelLlama(c, 5, 4); }, {"cannot be split over 4 GPUs", "3 KV heads"});
  // A part of a split run without its communicator (every rank must take part).
  if (cuda::device_count() >= 2) {
    cuda::TensorParallelLlama model(c, 5, 2);
    test::expect_error([&] { model.run([&](int r) { cuda::LlamaRuntime(model.part(r), Sequences::single(64)); }); },
                       {"split over 2 GPUs: run it with that rank's communicator"});
  }
}

// One GPU fails while the other is in (or about to enter) the forward's all-reduces: the group is
// aborted, the failure comes back, nothing waits for ever; the model then refuses collectives.
// Last in this file: it leaves its model's NCCL group aborted.
TEST(TensorParallelCuda, AFailedGpuStopsTheOthers) {
  SEER_REQUIRE_GPUS(2);
  const LlamaConfig c = configs()[0];
  cuda::TensorParallelLlama model(c, 5, 2);
  const std::vector<int32_t> tokens = some_tokens(2048, c.vocab);
  const auto forward = [&](int r) {
    cuda::LlamaRuntime runtime(model.part(r), Sequences::single(int64_t(tokens.size())), cuda::kPrefillChunkTokens,
                               model.communicator(r));
    runtime.forward(tokens, {});
    runtime.logits();
  };
  test::expect_error([&] {
    model.run([&](int r) {
      if (r == 1) throw Error("planted failure on GPU 1");
      forward(r);
    });
  }, {"planted failure on GPU 1"});
  test::expect_error([&] { model.run(forward); }, {"NCCL group was aborted"});
}

}  // namespace
}  // namespace seer
