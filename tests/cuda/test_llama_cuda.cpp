// The GPU forward of the built-in model against the independent numpy reference
// (tests/model/reference_forward.py, float64) that the CPU forward is also checked against, and
// SeerAttention at density 1 against dense. Needs the model: SEER_MODEL names the GGUF file
// (default: models/ under the source tree); skipped when it is absent.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cuda/llama_cuda.h"
#include "model/llama_loader.h"
#include "train/gpu_gate_step.h"
#include "reference.h"

namespace seer {
namespace {

const LlamaWeights* model_weights() {
  static const std::unique_ptr<LlamaWeights> weights = []() -> std::unique_ptr<LlamaWeights> {
    const char* env = std::getenv("SEER_MODEL");
    const std::string path = env ? env : SEER_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!std::filesystem::exists(path)) return nullptr;
    return std::make_unique<LlamaWeights>(load_llama(path));
  }();
  return weights.get();
}

// tests/data/model/reference.json of the source tree, or of the current directory (a device machine
// runs the binary from a copy of the tree elsewhere).
const nlohmann::json& reference() {
  static const nlohmann::json j = [] {
    const std::string in_source = SEER_SOURCE_DIR "/tests/data/model/reference.json";
    std::ifstream file(std::filesystem::exists(in_source) ? in_source : "tests/data/model/reference.json");
    SEER_CHECK(file.good(), "tests/data/model/reference.json not found");
    return nlohmann::json::parse(file);
  }();
  return j;
}

#define SEER_REQUIRE_MODEL(w)              \
  const LlamaWeights* w = model_weights(); \
  if (w == nullptr) GTEST_SKIP() << "the built-in model is absent (set SEER_MODEL)"

TEST(CudaLlama, MatchesNumpyReference) {
  SEER_REQUIRE_MODEL(weights);
  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(*weights);
  double worst = 0;
  int top1_agree = 0, positions = 0;
  for (const auto& [name, p] : reference()["prompts"].items()) {
    const std::vector<int32_t> ids = p["ids"].get<std::vector<int32_t>>();
    cuda::LlamaRuntime runtime(model, Sequences::single(int64_t(ids.size())));
    cuda::ForwardOptions options;
    options.all_logits = true;
    runtime.forward(ids, options);
    const std::vector<float> logits = runtime.logits();
    const size_t vocab = size_t(weights->config.vocab);
    const float* last = logits.data() + (ids.size() - 1) * vocab;
    const auto sample = p["last_logit_ids"].get<std::vector<int32_t>>();
    const auto expected = p["last_logits"].get<std::vector<double>>();
    for (size_t n = 0; n < sample.size(); ++n) worst = std::max(worst, std::abs(last[size_t(sample[n])] - expected[n]));
    for (size_t pos = 0; pos < ids.size(); ++pos) {
      const float* row = logits.data() + pos * vocab;
      const int32_t best = int32_t(std::max_element(row, row + vocab) - row);
      top1_agree += best == p["top_ids"][pos][0].get<int32_t>();
      ++positions;
    }
  }
  std::printf("[measured] GPU (bf16 weights) vs numpy float64: max |logit diff| %.4f, top-1 agreement %d/%d\n",
              worst, top1_agree, positions);
  EXPECT_LT(worst, 0.75);  // bf16 weights and activations over 30 layers
  EXPECT_GE(top1_agree, positions * 9 / 10);
}

TEST(CudaLlama, PassagePerplexityMatchesNumpy) {
  SEER_REQUIRE_MODEL(weights);
  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(*weights);
  const std::vector<int32_t> ids = reference()["passage"]["ids"].get<std::vector<int32_t>>();
  cuda::LlamaRuntime runtime(model, Sequences::single(int64_t(ids.size())));
  cuda::ForwardOptions options;
  options.all_logits = true;
  runtime.forward(ids, options);
  const std::vector<float> nll = runtime.next_token_nll(ids);
  double sum = 0;
  for (size_t t = 0; t + 1 < nll.size(); ++t) sum += nll[t];
  const double mean = sum / double(nll.size() - 1), want = reference()["passage"]["mean_nll"].get<double>();
  std::printf("[measured] passage mean NLL: GPU %.5f, numpy %.5f (PPL %.3f vs %.3f, %+.3f%%)\n", mean, want,
              std::exp(mean), std::exp(want), 100 * (std::exp(mean - want) - 1));
  EXPECT_NEAR(mean, want, 0.01 * want);

  // SeerAttention keeping every block is dense attention through the block-sparse kernel: the same
  // function, but a different kernel (64-key tiles against the dense kernel's 128), so bf16 rounding
  // differs and grows over 30 layers; per token it must stay well inside the GPU-vs-numpy error.
  std::vector<cuda::DeviceGate> gates;
  const GateConfig gc{{weights->config.q_heads, weights->config.kv_heads, weights->config.head_dim},
                      weights->config.head_dim, 64};
  for (int l = 0; l < weights->config.layers; ++l)
    gates.push_back(cuda::DeviceGate::upload(GateWeights<float>::random(gc, uint64_t(l)), weights->config.rope,
                                             runtime.layout().max_blocks));
  options.mode = cuda::AttentionMode::seer;
  options.gates = &gates;
  options.selection.density = 1.0;
  runtime.forward(ids, options);
  const std::vector<float> sparse_nll = runtime.next_token_nll(ids);
  double worst = 0, abs_sum = 0, sparse_sum = 0;
  for (size_t t = 0; t + 1 < nll.size(); ++t) {
    const double diff = std::abs(double(sparse_nll[t]) - nll[t]);
    worst = std::max(worst, diff);
    abs_sum += diff;
    sparse_sum += sparse_nll[t];
  }
  const double mean_abs = abs_sum / double(nll.size() - 1);
  const double sparse_mean = sparse_sum / double(nll.size() - 1);
  std::printf(
      "[measured] all blocks through the block-sparse kernel vs dense: |NLL diff| max %.2e mean %.2e, mean NLL %.5f vs "
      "%.5f\n",
      worst, mean_abs, sparse_mean, mean);
  EXPECT_LT(worst, 0.15);
  EXPECT_LT(mean_abs, 0.02);
  EXPECT_NEAR(sparse_mean, mean, 1e-3 * mean);
}

// Token-wise work in chunks of 37 and 100 tokens (chunk edges inside and across sequences) gives
// the logits of one pass; only cuBLAS's choice of kernels for other row counts may differ.
TEST(CudaLlama, ChunkedPrefillMatchesOnePass) {
  SEER_REQUIRE_MODEL(weights);
  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(*weights);
  const std::vector<int32_t> passage = reference()["passage"]["ids"].get<std::vector<int32_t>>();
  const Sequences seqs = Sequences::from_lengths({int64_t(passage.size()) - 50, 50});
  cuda::ForwardOptions options;
  options.all_logits = true;
  cuda::LlamaRuntime whole(model, seqs, 1 << 20);
  whole.forward(passage, options);
  const std::vector<float> want = whole.logits();
  for (const int64_t chunk : {37, 100}) {
    cuda::LlamaRuntime chunked(model, seqs, chunk);
    chunked.forward(passage, options);
    const double diff = test::max_abs_error(chunked.logits(), want);
    std::printf("[measured] prefill in chunks of %lld tokens vs one pass: max |logit diff| %.2e\n", (long long)chunk,
                diff);
    EXPECT_LT(diff, 0.05);
  }
}

// Prefill of a prefix into the KV cache, then the rest of the passage one token per decode step:
// each step's logits against the full forward's at that position (teacher forcing), which checks
// the cache, the positions, the decode attention and the one-row GEMMs together.
TEST(CudaLlama, DecodeMatchesFullForward) {
  SEER_REQUIRE_MODEL(weights);
  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(*weights);
  const std::vector<int32_t> passage = reference()["passage"]["ids"].get<std::vector<int32_t>>();
  const size_t vocab = size_t(weights->config.vocab);
  cuda::LlamaRuntime full(model, Sequences::single(int64_t(passage.size())));
  cuda::ForwardOptions options;
  options.all_logits = true;
  full.forward(passage, options);
  const std::vector<float> want = full.logits();

  const int64_t prefix = 70, capacity = int64_t(passage.size());
  cuda::DeviceKvCache cache = cuda::DeviceKvCache::create(weights->config, capacity);
  cuda::LlamaRuntime prefill(model, Sequences::single(prefix));
  cuda::ForwardOptions cached;
  cached.kv_cache = &cache;
  prefill.forward(std::span(passage).first(size_t(prefix)), cached);
  const std::vector<float> last = prefill.logits();
  double worst = test::max_abs_error(last, std::span(want).subspan(size_t(prefix - 1) * vocab, vocab));
  EXPECT_EQ(cache.length, prefix);
  cuda::LlamaDecoder decoder(model, cache);
  int top1_agree = 0;
  for (int64_t pos = prefix; pos < capacity; ++pos) {
    const std::span<const float> logits = decoder.step(passage[size_t(pos)]);
    const std::span<const float> expected = std::span(want).subspan(size_t(pos) * vocab, vocab);
    worst = std::max(worst, test::max_abs_error(logits, expected));
    top1_agree += std::max_element(logits.begin(), logits.end()) - logits.begin() ==
                  std::max_element(expected.begin(), expected.end()) - expected.begin();
  }
  EXPECT_EQ(cache.length, capacity);
  EXPECT_THROW(decoder.step(1), Error);  // the cache is full
  const int64_t steps = capacity - prefix;
  std::printf("[measured] decode vs full forward over %lld steps: max |logit diff| %.4f, top-1 agreement %d/%lld\n",
              (long long)steps, worst, top1_agree, (long long)steps);
  EXPECT_LT(worst, 1.0);  // bf16 activations, another summation order in attention and one-row GEMMs
  EXPECT_GE(top1_agree, steps * 95 / 100);
}

// Two trainers' weights and AdamW moments are the same bits, layer by layer.
void expect_same_state(const GateTrainer& a, const GateTrainer& b, const std::string& what) {
  using State = const std::vector<GateWeights<float>>& (GateTrainer::*)() const;
  ASSERT_EQ(a.step(), b.step()) << what;
  for (size_t l = 0; l < a.weights().size(); ++l)
    for (const State state :
         {State(&GateTrainer::weights), State(&GateTrainer::exp_avg), State(&GateTrainer::exp_avg_sq)}) {
      const GateWeights<float>& x = (a.*state)()[l];
      const GateWeights<float>& y = (b.*state)()[l];
      EXPECT_TRUE(x.wk == y.wk && x.wq == y.wq && x.bias == y.bias) << what << ", layer " << l;
    }
}

// Gates trained together on one forward (GpuGateStep with several trainers, train-gates --variant)
// end bit for bit where each trained alone ends: the shared forward changes nothing a gate sees.
// Three different gates (the published one, d_g = 8 with the block bias and the tail term, a raised
// target), three steps on two sequences of arbitrary tokens.
TEST(CudaLlama, GatesTrainedTogetherTrainAsAlone) {
  SEER_REQUIRE_MODEL(weights);
  const LlamaConfig& c = weights->config;
  const HeadDims heads{c.q_heads, c.kv_heads, c.head_dim};
  const GateConfig configs[] = {{heads, c.head_dim, 64}, {heads, 8, 64, true}, {heads, c.head_dim, 64}};
  TrainOptions options[] = {{.steps = 3, .warmup = 1}, {.steps = 3, .warmup = 1, .tail = {.weight = 2.0}},
                            {.steps = 3, .warmup = 1, .target_power = 0.5}};
  const auto make_trainer = [&](int n) {
    std::vector<GateWeights<float>> init;
    for (int l = 0; l < c.layers; ++l) init.push_back(GateWeights<float>::random(configs[n], uint64_t(7 * l + n)));
    return GateTrainer(std::move(init), options[n]);
  };
  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(*weights);
  cuda::LlamaRuntime runtime(model, Sequences::from_lengths({700, 600}));
  std::vector<int32_t> tokens(1300);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7919 + 13) % 20000);
  std::vector<GateTrainer> together, alone;
  for (int n = 0; n < 3; ++n) {
    together.push_back(make_trainer(n));
    alone.push_back(make_trainer(n));
  }
  std::vector<GateTrainer*> all;
  for (GateTrainer& t : together) all.push_back(&t);
  GpuGateStep joint(all, c, runtime);
  std::vector<std::unique_ptr<GpuGateStep>> single;
  for (GateTrainer& t : alone) single.push_back(std::make_unique<GpuGateStep>(t, c, runtime));
  for (int step = 0; step < 3; ++step) {
    const std::vector<double> losses = joint.run(tokens);
    ASSERT_EQ(losses.size(), 3u);
    for (int n = 0; n < 3; ++n)  // the loss is summed by atomics in any order; the gradients have none
      EXPECT_NEAR(single[size_t(n)]->run(tokens).front(), losses[size_t(n)], 1e-9 * losses[size_t(n)])
          << "gates " << n << ", step " << step;
  }
  joint.sync_host();
  for (int n = 0; n < 3; ++n) {
    single[size_t(n)]->sync_host();
    expect_same_state(together[size_t(n)], alone[size_t(n)], "gates " + std::to_string(n));
  }
  // A forward has one ground truth: gates with another target pooling cannot share it.
  TrainOptions mass = options[0];
  mass.target_pooling = GtPooling::mass;
  GateTrainer other = make_trainer(0), on_mass(std::vector<GateWeights<float>>(together[0].weights()), mass);
  EXPECT_THROW(GpuGateStep(std::vector<GateTrainer*>{&other, &on_mass}, c, runtime), Error);
}

// The optimizer's state lives on the device between steps (GpuGateStep, cuda/adamw.h). Brought back
// for a checkpoint and taken up again, by the same step object or by a resumed trainer in a step
// object that had moved its device copy elsewhere meanwhile, it continues bit for bit as a run
// without the break; and a device step is the host's AdamW step on the same gradient, bit for bit.
TEST(CudaLlama, GateTrainingStateSurvivesCheckpoints) {
  SEER_REQUIRE_MODEL(weights);
  const LlamaConfig& c = weights->config;
  const GateConfig config{{c.q_heads, c.kv_heads, c.head_dim}, 8, 64, true};  // W_q, W_k and the block bias
  const TrainOptions options{.steps = 4, .weight_decay = 0.01, .warmup = 2};
  const auto make_trainer = [&](const TrainOptions& with) {
    std::vector<GateWeights<float>> init;
    for (int l = 0; l < c.layers; ++l) init.push_back(GateWeights<float>::random(config, uint64_t(l)));
    return GateTrainer(std::move(init), with);
  };
  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(*weights);
  cuda::LlamaRuntime runtime(model, Sequences::from_lengths({500}));
  std::vector<int32_t> tokens(500), other_tokens(500);
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = int32_t((i * 104729 + 7) % 30000);
    other_tokens[i] = int32_t((i * 7919 + 3) % 30000);
  }

  GateTrainer straight = make_trainer(options);
  GpuGateStep straight_step(straight, c, runtime);
  for (int i = 0; i < 3; ++i) straight_step.run(tokens);
  EXPECT_THROW(straight.weights(), Error);  // stale on the host until synced
  EXPECT_THROW(straight.exp_avg(), Error);
  EXPECT_THROW(straight.save(::testing::TempDir() + "stale.safetensors", {}, true), Error);
  straight_step.sync_host();

  GateTrainer synced = make_trainer(options);  // synced after every step, stepping on
  GpuGateStep synced_step(synced, c, runtime);
  for (int i = 0; i < 3; ++i) {
    synced_step.run(tokens);
    synced_step.sync_host();
  }
  expect_same_state(straight, synced, "synced every step");

  // One step and a checkpoint; then a trainer whose step object has run two steps of other tokens
  // (its device copy far from the checkpoint's) resumes from it and takes the last two steps.
  GateTrainer first = make_trainer(options), resumed = make_trainer(options);
  {
    GpuGateStep step(first, c, runtime);
    step.run(tokens);
    step.sync_host();
  }
  const std::string path = ::testing::TempDir() + "gpu_resume.safetensors";
  first.save(path, {}, true);
  GpuGateStep resumed_step(resumed, c, runtime);
  for (int i = 0; i < 2; ++i) resumed_step.run(other_tokens);
  resumed.resume(path);
  for (int i = 0; i < 2; ++i) resumed_step.run(tokens);
  resumed_step.sync_host();
  expect_same_state(straight, resumed, "resumed");
  std::filesystem::remove(path);

  // Two step objects cannot share a trainer: the second's device copy is no longer the trainer's.
  GateTrainer shared = make_trainer(options);
  GpuGateStep one_of_two(shared, c, runtime), two_of_two(shared, c, runtime);
  one_of_two.run(tokens);
  EXPECT_THROW(two_of_two.run(tokens), Error);
  EXPECT_THROW(two_of_two.sync_host(), Error);

  // The device's update is the host's: with β1 = 0 the first moment after a step is the step's
  // gradient itself, which the host's AdamW then takes from the same start. The second step (a
  // learning rate twice the first's, in the warm-up) checks that the device steps at the right one.
  TrainOptions plain_momentum = options;
  plain_momentum.beta1 = 0;
  GateTrainer device = make_trainer(plain_momentum), host = make_trainer(plain_momentum);
  GpuGateStep device_step(device, c, runtime);
  for (int step = 0; step < 2; ++step) {
    const double loss = device_step.run(step ? other_tokens : tokens).front();
    device_step.sync_host();
    for (int l = 0; l < c.layers; ++l) {
      const GateWeights<float>& g = device.exp_avg()[size_t(l)];
      host.add_layer_gradient(l, device.last_layer_kl()[size_t(l)], g.wk, g.wq, g.bias);
    }
    EXPECT_DOUBLE_EQ(host.finish_step(), loss);
    expect_same_state(device, host, "host AdamW, step " + std::to_string(step));
  }
}

TEST(CudaLlama, RejectsWhatItCannotRun) {
  SEER_REQUIRE_MODEL(weights);
  LlamaWeights biased = *weights;
  biased.config.qkv_bias = true;
  EXPECT_THROW(cuda::DeviceLlama::upload(biased), Error);
  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(*weights);
  EXPECT_THROW(cuda::LlamaRuntime(model, Sequences::single(weights->config.max_positions + 1)), Error);
  cuda::LlamaRuntime runtime(model, Sequences::single(100));
  std::vector<int32_t> ids(100, 1);
  ids[5] = weights->config.vocab;  // out of the vocabulary
  EXPECT_THROW(runtime.forward(ids, {}), Error);
  EXPECT_THROW(runtime.forward(std::vector<int32_t>(99, 1), {}), Error);
  cuda::DeviceKvCache small = cuda::DeviceKvCache::create(weights->config, 50);
  cuda::ForwardOptions too_long;
  too_long.kv_cache = &small;
  EXPECT_THROW(runtime.forward(std::vector<int32_t>(100, 1), too_long), Error);
  EXPECT_THROW(cuda::DeviceKvCache::create(weights->config, weights->config.max_positions + 1), Error);
}

}  // namespace
}  // namespace seer
