// Gate training on the CPU: the loss falls on a learnable problem, the schedule is the published
// one, and a resumed run continues exactly where a checkpoint left it.
#include <gtest/gtest.h>

#include <filesystem>

#include "attention/attention_cpu.h"
#include "model/gates.h"
#include "reference.h"
#include "test_support.h"
#include "train/gate_trainer.h"

namespace seer {
namespace {

// Two layers' worth of pre-RoPE q/k with planted structure (a few heavy keys every query aligns
// with, plus noise) and their ground-truth maps from the CPU ground-truth attention.
struct Problem {
  Sequences seqs{std::vector<int64_t>{0, 700, 1300}};
  HeadDims dims{4, 2, 32};
  std::vector<bf16> q, k;
  std::vector<float> gt;
  explicit Problem(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal;
    const int64_t t = seqs.tokens();
    std::vector<float> qf(size_t(t * dims.q_heads * dims.head_dim)), kf(size_t(t * dims.kv_heads * dims.head_dim));
    std::vector<float> heavy(size_t(dims.head_dim));
    for (float& x : heavy) x = normal(rng);
    for (int64_t i = 0; i < t; ++i) {
      const bool is_heavy = i % 97 == 3;
      for (int h = 0; h < dims.kv_heads; ++h)
        for (int c = 0; c < dims.head_dim; ++c)
          kf[size_t((i * dims.kv_heads + h) * dims.head_dim + c)] = 0.7f * normal(rng) + (is_heavy ? 2.f * heavy[size_t(c)] : 0.f);
      for (int h = 0; h < dims.q_heads; ++h)
        for (int c = 0; c < dims.head_dim; ++c)
          qf[size_t((i * dims.q_heads + h) * dims.head_dim + c)] = 0.7f * normal(rng) + heavy[size_t(c)];
    }
    for (float x : qf) q.push_back(bf16(x));
    for (float x : kf) k.push_back(bf16(x));
    std::vector<float> out(qf.size()), lse(size_t(t * dims.q_heads));
    gt.resize(size_t(BlockLayout(seqs, 64, dims.q_heads).map_elements()));
    ground_truth_attention_cpu<bf16>(q, k, k, seqs, dims, 64, out, lse, gt);
  }
};

std::vector<GateWeights<float>> initial_gates(const HeadDims& dims, int layers, bool block_bias = false) {
  std::vector<GateWeights<float>> gates;
  for (int l = 0; l < layers; ++l)
    gates.push_back(GateWeights<float>::random({dims, dims.head_dim, 64, block_bias}, 100 + l));
  return gates;
}

double train_step(GateTrainer& trainer, const Problem& p, const Rope& rope) {
  for (int l = 0; l < 2; ++l) trainer.accumulate_layer(l, p.q, p.k, p.gt, p.seqs, rope);
  return trainer.finish_step();
}

TEST(GateTrainer, LossFallsOnALearnableProblem) {
  const Problem p(1);
  const Rope rope(RopeConfig{.theta = 10000.0}, 32);
  GateTrainer trainer(initial_gates(p.dims, 2), TrainOptions{.steps = 60, .lr = 1e-2, .warmup = 5});
  const double first = train_step(trainer, p, rope);
  double last = first;
  while (trainer.step() < 60) last = train_step(trainer, p, rope);
  EXPECT_LT(last, 0.5 * first) << "first " << first << " last " << last;
}

// The block bias learns (from zero) and lowers the loss that the projections alone reach.
TEST(GateTrainer, BlockBiasLearnsAndHelps) {
  const Problem p(1);
  const Rope rope(RopeConfig{.theta = 10000.0}, 32);
  const TrainOptions options{.steps = 60, .lr = 1e-2, .warmup = 5};
  GateTrainer plain(initial_gates(p.dims, 2), options), biased(initial_gates(p.dims, 2, true), options);
  double plain_loss = 0, biased_loss = 0;
  while (plain.step() < 60) {
    plain_loss = train_step(plain, p, rope);
    biased_loss = train_step(biased, p, rope);
  }
  EXPECT_LT(biased_loss, plain_loss);
  for (const GateWeights<float>& w : biased.weights()) {
    ASSERT_EQ(w.bias.size(), size_t(p.dims.q_heads * kBiasColumns));
    double largest = 0;
    for (const float b : w.bias) largest = std::max(largest, double(std::abs(b)));
    EXPECT_GT(largest, 0.1);
  }
}

// The step's loss is the scale times the layers' KLs, and each layer's is kept for the report.
TEST(GateTrainer, ReportsEachLayersKl) {
  const Problem p(5);
  const Rope rope(RopeConfig{.theta = 10000.0}, 32);
  std::vector<GateWeights<float>> gates = initial_gates(p.dims, 2);
  gates[1] = GateWeights<float>::random({p.dims, p.dims.head_dim, 64}, 7);  // another start: another KL
  GateTrainer trainer(std::move(gates), TrainOptions{.steps = 3, .warmup = 1});
  EXPECT_TRUE(trainer.last_layer_kl().empty());
  double kl[2];
  for (int l = 1; l >= 0; --l) kl[l] = trainer.accumulate_layer(l, p.q, p.k, p.gt, p.seqs, rope);
  const double loss = trainer.finish_step();
  ASSERT_EQ(trainer.last_layer_kl().size(), 2u);
  EXPECT_EQ(trainer.last_layer_kl()[0], kl[0]);
  EXPECT_EQ(trainer.last_layer_kl()[1], kl[1]);
  EXPECT_NE(kl[0], kl[1]);
  EXPECT_DOUBLE_EQ(loss, 10.0 * (kl[0] + kl[1]));
}

TEST(GateTrainer, ScheduleWarmsUpThenDecaysToZero) {
  GateTrainer trainer(initial_gates({4, 2, 32}, 1), TrainOptions{.steps = 120, .lr = 1e-3, .warmup = 20});
  EXPECT_DOUBLE_EQ(trainer.learning_rate(0), 1e-3 / 20);
  EXPECT_DOUBLE_EQ(trainer.learning_rate(19), 1e-3);
  EXPECT_DOUBLE_EQ(trainer.learning_rate(20), 1e-3);
  EXPECT_NEAR(trainer.learning_rate(70), 0.5e-3, 1e-12);
  EXPECT_NEAR(trainer.learning_rate(119), 1e-3 * 0.5 * (1 + std::cos(M_PI * 99.0 / 100.0)), 1e-15);
  EXPECT_THROW(GateTrainer(initial_gates({4, 2, 32}, 1), TrainOptions{.steps = 10, .warmup = 20}), Error);
}

TEST(GateTrainer, ResumeContinuesExactly) {
  const Problem p(2);
  const Rope rope(RopeConfig{.theta = 10000.0}, 32);
  const TrainOptions options{.steps = 6, .lr = 1e-2, .warmup = 2};
  for (const bool block_bias : {false, true}) {
    GateTrainer straight(initial_gates(p.dims, 2, block_bias), options);
    std::vector<double> straight_losses;
    while (straight.step() < 6) straight_losses.push_back(train_step(straight, p, rope));

    const std::string path = (std::filesystem::temp_directory_path() / "seer_resume_test.safetensors").string();
    std::vector<double> resumed_losses;
    {
      GateTrainer first_half(initial_gates(p.dims, 2, block_bias), options);
      while (first_half.step() < 3) resumed_losses.push_back(train_step(first_half, p, rope));
      first_half.save(path, {{"base_model", "test"}}, true);
    }
    // A checkpoint of the other kind (with or without the block bias) is refused.
    GateTrainer other_kind(initial_gates(p.dims, 2, !block_bias), options);
    EXPECT_THROW(other_kind.resume(path), Error);
    GateTrainer second_half(initial_gates(p.dims, 2, block_bias), options);  // fresh weights, overwritten by resume
    second_half.resume(path);
    EXPECT_EQ(second_half.step(), 3);
    while (second_half.step() < 6) resumed_losses.push_back(train_step(second_half, p, rope));
    EXPECT_EQ(resumed_losses, straight_losses);
    for (int l = 0; l < 2; ++l) {
      EXPECT_EQ(second_half.weights()[size_t(l)].wk, straight.weights()[size_t(l)].wk);
      EXPECT_EQ(second_half.weights()[size_t(l)].bias, straight.weights()[size_t(l)].bias);
    }
    // A checkpoint without optimizer state cannot be resumed from.
    straight.save(path, {}, false);
    GateTrainer other(initial_gates(p.dims, 2, block_bias), options);
    EXPECT_THROW(other.resume(path), Error);
    std::filesystem::remove(path);
  }
}

// What the trainer saves loads back through the loader of the shipped gates, in the reference's
// layouts: W_k [H_q, 3d, d_g] alone for d_g == d; W_q [H_q, d, d_g] and W_k [H_kv, 3d, d_g] otherwise.
TEST(GateTrainer, SavedGatesLoadInThePublishedLayout) {
  test::TempDir dir;
  LlamaConfig config;
  config.layers = 2;
  config.q_heads = 4;
  config.kv_heads = 2;
  config.head_dim = 32;
  struct Kind {
    int gate_dim;
    bool block_bias;
    int q_pools;
  };
  for (const Kind& kind : {Kind{32, false, 1}, Kind{8, false, 1}, Kind{32, true, 1}, Kind{32, false, 3}}) {
    const auto [gate_dim, block_bias, q_pools] = kind;
    std::vector<GateWeights<float>> gates;
    for (int l = 0; l < 2; ++l) {
      gates.push_back(GateWeights<float>::random({{4, 2, 32}, gate_dim, 64, block_bias, q_pools}, 200 + l));
      for (size_t e = 0; e < gates.back().bias.size(); ++e) gates.back().bias[e] = float(e) * 0.5f - float(l);
    }
    const GateTrainer trainer(gates, TrainOptions{.steps = 1, .warmup = 0});
    const std::string path =
        (dir.path() / ("gates" + std::to_string(gate_dim) + (block_bias ? "b" : "") + std::to_string(q_pools) +
                       ".safetensors"))
            .string();
    trainer.save(path, {}, false);
    const std::vector<GateWeights<float>> loaded = load_gates(path, config);
    ASSERT_EQ(loaded.size(), 2u);
    for (int l = 0; l < 2; ++l) {
      EXPECT_EQ(loaded[size_t(l)].config.gate_dim, gate_dim);
      EXPECT_EQ(loaded[size_t(l)].wk, gates[size_t(l)].wk);
      EXPECT_EQ(loaded[size_t(l)].wq, gates[size_t(l)].wq);
      EXPECT_EQ(loaded[size_t(l)].config.has_block_bias, block_bias);
      EXPECT_EQ(loaded[size_t(l)].bias, gates[size_t(l)].bias);
      EXPECT_EQ(loaded[size_t(l)].config.q_pools, q_pools);
      EXPECT_EQ(loaded[size_t(l)].wk.size(), size_t((gates[0].config.has_q_proj() ? 2 : 4) * 96 * gate_dim));
    }
  }
}

// A gradient computed elsewhere (as the GPU does) and handed in takes the same step as the
// trainer's own accumulate_layer.
// With the published loss and with the tail term (TailKl), which the trainer must pass on to it.
TEST(GateTrainer, ExternalGradientTakesTheSameStep) {
  const Problem p(4);
  const Rope rope(RopeConfig{.theta = 10000.0}, 32);
  for (const double tail_weight : {0.0, 2.0}) {
    const TrainOptions options{.steps = 5, .warmup = 1, .tail = {.weight = tail_weight}};
    GateTrainer own(initial_gates(p.dims, 2, true), options), external(initial_gates(p.dims, 2, true), options);
    for (int l = 0; l < 2; ++l) {
      const GateWeights<float>& w = external.weights()[size_t(l)];
      const BlockLayout layout(p.seqs, 64, p.dims.q_heads);
      std::vector<float> logits(size_t(layout.map_elements())), dlogits(logits.size());
      gate_forward<float, bf16>(p.q, p.k, p.seqs, w, rope, logits);
      const double kl = gate_kl_loss<float>(logits, p.gt, layout, options.skip_fraction, dlogits, options.tail);
      for (float& g : dlogits) g *= float(options.loss_scale);
      GateWeights<float> grad = GateWeights<float>::zeros(w.config);
      gate_backward<float, bf16>(p.q, p.k, p.seqs, w, rope, dlogits, grad);
      external.add_layer_gradient(l, kl, grad.wk, grad.wq, grad.bias);
      own.accumulate_layer(l, p.q, p.k, p.gt, p.seqs, rope);
    }
    EXPECT_DOUBLE_EQ(external.finish_step(), own.finish_step());
    for (int l = 0; l < 2; ++l) {
      EXPECT_EQ(external.weights()[size_t(l)].wk, own.weights()[size_t(l)].wk);
      EXPECT_EQ(external.weights()[size_t(l)].bias, own.weights()[size_t(l)].bias);
    }
    const std::vector<float> dwk(external.weights()[0].wk.size()), dbias(external.weights()[0].bias.size());
    EXPECT_THROW(external.add_layer_gradient(0, 0.0, std::vector<float>(3), {}, dbias), Error);  // wrong sizes
    EXPECT_THROW(external.add_layer_gradient(0, 0.0, dwk, {}, std::vector<float>(3)), Error);
    EXPECT_THROW(external.add_layer_gradient(0, 0.0, dwk, {}, {}), Error);
  }
  EXPECT_THROW(GateTrainer(initial_gates(p.dims, 2), TrainOptions{.tail = {.weight = -1}}), Error);
}

// --target-power: a trainer with power 0.5 takes the step that a plain trainer takes on the ground
// truth raised to 0.5 and renormalized; and it is a different step from the plain target's.
TEST(GateTrainer, TargetPowerTrainsOnTheRaisedTarget) {
  const Problem p(5);
  const Rope rope(RopeConfig{.theta = 10000.0}, 32);
  TrainOptions options{.steps = 5, .warmup = 1};
  GateTrainer plain(initial_gates(p.dims, 2), options), on_raised(initial_gates(p.dims, 2), options);
  options.target_power = 0.5;
  GateTrainer powered(initial_gates(p.dims, 2), options);
  std::vector<float> raised = p.gt;
  power_normalize_rows<float>(raised, BlockLayout(p.seqs, 64, p.dims.q_heads), 0.5);
  for (int l = 0; l < 2; ++l) {
    powered.accumulate_layer(l, p.q, p.k, p.gt, p.seqs, rope);
    on_raised.accumulate_layer(l, p.q, p.k, raised, p.seqs, rope);
    plain.accumulate_layer(l, p.q, p.k, p.gt, p.seqs, rope);
  }
  const double loss = powered.finish_step();
  EXPECT_DOUBLE_EQ(loss, on_raised.finish_step());
  EXPECT_NE(loss, plain.finish_step());
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(powered.weights()[size_t(l)].wk, on_raised.weights()[size_t(l)].wk);
    EXPECT_NE(powered.weights()[size_t(l)].wk, plain.weights()[size_t(l)].wk);
  }
  options.target_power = 0.0;
  EXPECT_THROW(GateTrainer(initial_gates(p.dims, 2), options), Error);
}

// The AdamW update against PyTorch's form of it (torch.optim.AdamW: decay the weight, then step by
// lr / (1 − β1ⁿ) · m / (√v / √(1 − β2ⁿ) + ε)), over three steps in long double.
TEST(GateTrainer, AdamWIsPyTorchs) {
  const double lr = 3e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, decay = 0.05;
  const float grads[] = {0.02f, -0.5f, 1e-9f};
  float w = 0.3f, g = 0, m = 0, v = 0;
  long double tw = w, tm = 0, tv = 0;
  for (int n = 1; n <= 3; ++n) {
    g = grads[n - 1];
    const AdamWStep s{.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = decay,
                      .correction1 = 1 - std::pow(b1, n), .correction2 = 1 - std::pow(b2, n)};
    adamw_update(w, g, m, v, s, lr);
    tw *= 1 - lr * decay;
    tm = b1 * tm + (1 - b1) * grads[n - 1];
    tv = b2 * tv + (1 - b2) * (long double)grads[n - 1] * grads[n - 1];
    tw -= lr / (1 - std::pow(b1, n)) * tm / (std::sqrt(tv) / std::sqrt(1 - std::pow(b2, n)) + eps);
    EXPECT_NEAR(w, double(tw), 1e-6 * std::abs(double(tw))) << "step " << n;
    EXPECT_EQ(g, 0.0f);
  }
}

// A step updated elsewhere (GpuGateStep: AdamW on the device) leaves the host's weights stale: they
// are refused until set_state brings the updated ones, of the right shapes, back.
TEST(GateTrainer, StateUpdatedElsewhereIsRefusedUntilSetBack) {
  const Problem p(6);
  const Rope rope(RopeConfig{.theta = 10000.0}, 32);
  GateTrainer trainer(initial_gates(p.dims, 2, true), TrainOptions{.steps = 5, .warmup = 2});
  const AdamWStep s = trainer.adamw_step();
  EXPECT_DOUBLE_EQ(s.lr, trainer.learning_rate(0));
  EXPECT_DOUBLE_EQ(s.correction1, 1 - 0.9);
  EXPECT_DOUBLE_EQ(s.correction2, 1 - 0.999);
  trainer.add_layer_kl(1, 0.25);
  EXPECT_THROW(trainer.add_layer_kl(1, 0.25), Error);  // twice in a step
  EXPECT_THROW(trainer.finish_step_updated_elsewhere(), Error);  // layer 0 missing
  trainer.add_layer_kl(0, 0.5);
  const uint64_t version = trainer.state_version();
  EXPECT_DOUBLE_EQ(trainer.finish_step_updated_elsewhere(), 10.0 * 0.75);
  EXPECT_NE(trainer.state_version(), version);
  EXPECT_EQ(trainer.step(), 1);
  EXPECT_EQ(trainer.last_layer_kl(), (std::vector<double>{0.5, 0.25}));
  EXPECT_DOUBLE_EQ(trainer.adamw_step().correction1, 1 - 0.9 * 0.9);
  EXPECT_FALSE(trainer.host_state_current());
  EXPECT_THROW(trainer.weights(), Error);
  EXPECT_THROW(trainer.exp_avg_sq(), Error);
  EXPECT_THROW(trainer.save(::testing::TempDir() + "stale.safetensors", {}, true), Error);
  EXPECT_THROW(trainer.accumulate_layer(0, p.q, p.k, p.gt, p.seqs, rope), Error);

  std::vector<GateWeights<float>> w = initial_gates(p.dims, 2, true), m = w, v = w;
  w[1].bias[3] = 1.5f;
  std::vector<GateWeights<float>> short_of_a_layer(w.begin(), w.begin() + 1), other_shape = w;
  other_shape[0].wk.pop_back();
  EXPECT_THROW(trainer.set_state(short_of_a_layer, m, v), Error);
  EXPECT_THROW(trainer.set_state(w, other_shape, v), Error);
  EXPECT_FALSE(trainer.host_state_current());
  const uint64_t stale_version = trainer.state_version();
  trainer.set_state(w, m, v);
  EXPECT_TRUE(trainer.host_state_current());
  EXPECT_NE(trainer.state_version(), stale_version);
  EXPECT_EQ(trainer.weights()[1].bias[3], 1.5f);
  EXPECT_EQ(trainer.exp_avg()[0].wk, m[0].wk);
  trainer.accumulate_layer(0, p.q, p.k, p.gt, p.seqs, rope);  // and it trains on the host again
  trainer.accumulate_layer(1, p.q, p.k, p.gt, p.seqs, rope);
  trainer.finish_step();
  EXPECT_EQ(trainer.step(), 2);
}

TEST(GateTrainer, RejectsMisuse) {
  const Problem p(3);
  const Rope rope(RopeConfig{.theta = 10000.0}, 32);
  GateTrainer trainer(initial_gates(p.dims, 2), TrainOptions{.steps = 5, .warmup = 1});
  trainer.accumulate_layer(0, p.q, p.k, p.gt, p.seqs, rope);
  EXPECT_THROW(trainer.accumulate_layer(0, p.q, p.k, p.gt, p.seqs, rope), Error);  // twice in a step
  EXPECT_THROW(trainer.finish_step(), Error);                                       // layer 1 missing
  EXPECT_THROW(trainer.accumulate_layer(2, p.q, p.k, p.gt, p.seqs, rope), Error);   // no such layer
}

}  // namespace
}  // namespace seer
