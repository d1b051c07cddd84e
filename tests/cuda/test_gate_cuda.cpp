// AttnGate and block selection on the GPU against the CPU operators, on fresh random inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "cuda/gate_cuda.h"
#include "cuda/random_fill.h"
#include "cuda/device_tensor.h"
#include "reference.h"

namespace seer {
namespace {

using cuda::DeviceBuffer;

struct GateShape {
  std::vector<int64_t> lengths;
  HeadDims heads;
  int gate_dim;
  RopeConfig rope;
  bool block_bias = false;
  int q_pools = 1;
};

const RopeConfig kPlain{.theta = 100000.0};
const RopeConfig kLlama3{.theta = 500000.0, .scaling = RopeConfig::Scaling::llama3, .factor = 8.0,
                         .original_max_positions = 8192};
const RopeConfig kYarn{.theta = 1000000.0, .scaling = RopeConfig::Scaling::yarn, .factor = 4.0,
                       .original_max_positions = 32768};

const std::vector<GateShape> kShapes = {
    {{1000}, {9, 3, 64}, 64, kPlain},
    {{130, 1, 64, 700}, {32, 8, 128}, 128, kLlama3},
    {{4096}, {4, 1, 128}, 128, kYarn},
    {{300, 77}, {6, 2, 64}, 32, kPlain},  // d_g != d: a Q projection, W_k per KV head
    {{2000}, {9, 3, 64}, 16, kPlain},     // the built-in model's shape with a small gate
    {{700}, {9, 3, 64}, 8, kPlain},       // the smallest shipped gate: one chunk of pairs per tile
    {{1000, 64}, {4, 2, 128}, 96, kPlain},  // d_g neither d nor a whole number of 64-wide tiles
    {{20000}, {2, 2, 64}, 64, kLlama3},
    // The block bias: sequences of more than 64 blocks reach its every distance bucket.
    {{5000, 300}, {9, 3, 64}, 64, kPlain, true},
    {{4500}, {9, 3, 64}, 8, kLlama3, true},  // with W_q
    // Qmaxminavg: q pooled by max, min and mean, then W_q [H_q, 3d, d_g].
    {{1000, 130}, {9, 3, 64}, 64, kPlain, false, 3},
    {{700}, {4, 2, 128}, 8, kYarn, true, 3},
};

// Random weights, the block bias (which starts at zero) included.
GateWeights<float> random_gate(const GateConfig& config) {
  GateWeights<float> w = GateWeights<float>::random(config, test::rng()(), 0.05);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& b : w.bias) b = normal(test::rng());
  return w;
}

// A gate on fresh random weights and bf16 pre-RoPE q/k of one shape, on the host and the device.
struct GateProblem {
  Sequences seqs;
  GateConfig config;
  GateWeights<float> weights;
  test::DeviceTensor q, k;
  cuda::DeviceLayout layout;
  cuda::DeviceGate gate;
  cuda::GateWorkspace work;
  explicit GateProblem(const GateShape& shape)
      : seqs(Sequences::from_lengths(shape.lengths)),
        config{shape.heads, shape.gate_dim, 64, shape.block_bias, shape.q_pools},
        weights(random_gate(config)),
        q(size_t(seqs.tokens() * shape.heads.q_heads * shape.heads.head_dim), cuda::DType::bf16, 1.0f),
        k(size_t(seqs.tokens() * shape.heads.kv_heads * shape.heads.head_dim), cuda::DType::bf16, 1.0f),
        layout(cuda::DeviceLayout::create(seqs, shape.heads.q_heads)),
        gate(cuda::DeviceGate::upload(weights, shape.rope, layout.max_blocks)),
        work(cuda::GateWorkspace::create(layout, config)) {}
};

TEST(CudaGate, ForwardMatchesCpu) {
  double worst = 0;
  for (const GateShape& shape : kShapes) {
    GateProblem g(shape);
    auto& [seqs, config, weights, q, k, layout, gate, work] = g;
    DeviceBuffer<float> logits(size_t(layout.host.map_elements()));
    SEER_CUDA_CHECK(cudaMemset(logits.data(), 0xff, logits.size() * sizeof(float)));
    cuda::gate_forward(q.device.data(), k.device.data(), cuda::DType::bf16, layout, gate, work, logits.data(), nullptr);
    SEER_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> want(logits.size());
    gate_forward<float, float>(q.host, k.host, seqs, weights, Rope(shape.rope, shape.gate_dim), want);
    double scale = 0;
    for (float x : want)
      if (std::isfinite(x)) scale = std::max(scale, double(std::abs(x)));
    const double err = test::max_abs_error(logits.download(), want) / scale;
    EXPECT_LT(err, 1e-4) << seqs.tokens() << " tokens, d " << shape.heads.head_dim;
    worst = std::max(worst, err);
  }
  std::printf("[measured] gate forward: max |error| / max |logit| = %.2e\n", worst);
}

// A random ground-truth map: non-negative, rows normalized over j <= i, some exact zeros.
std::vector<float> random_ground_truth(const BlockLayout& layout) {
  std::vector<float> gt = test::random_values<float>(size_t(layout.map_elements()), 1.0f);
  for (int64_t s = 0; s < layout.sequences(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)];
    for (int64_t row = 0; row < layout.heads * nb; ++row) {
      float* r = gt.data() + layout.map_offset[size_t(s)] + row * nb;
      const int64_t i = row % nb;
      double sum = 0;
      for (int64_t j = 0; j < nb; ++j) {
        r[j] = j <= i && r[j] > -0.5f ? std::exp(2.0f * r[j]) : 0.0f;
        sum += r[j];
      }
      for (int64_t j = 0; j < nb; ++j) r[j] = sum > 0 ? float(r[j] / sum) : 0.0f;
    }
  }
  return gt;
}

// Loss and weight gradient of the GPU gate against the CPU operators in double, on the same
// bf16-rounded inputs; the gradient buffers poisoned first.
TEST(CudaGate, LossAndGradientMatchCpu) {
  double worst_loss = 0, worst_grad = 0;
  // Each shape twice: with the published loss, then with a tail term (TailKl).
  for (size_t n = 0; n < 2 * kShapes.size(); ++n) {
    const GateShape& shape = kShapes[n / 2];
    const TailKl tail = n % 2 ? TailKl{.weight = 1.5, .local_blocks = 1 + int(n % 5)} : TailKl{};
    GateProblem g(shape);
    auto& [seqs, config, weights, q, k, layout, gate, work] = g;
    const std::vector<float> gt = random_ground_truth(layout.host);
    const DeviceBuffer<float> dgt = DeviceBuffer<float>::upload(gt);
    cuda::GateGradWorkspace grad_work = cuda::GateGradWorkspace::create(layout, config, 0.25, tail);
    DeviceBuffer<float> logits(size_t(layout.host.map_elements()));
    DeviceBuffer<float> dwk(size_t(config.wk_size())), dwq(size_t(config.wq_size())),
        dbias(size_t(config.bias_size()));
    DeviceBuffer<double> kl(1);
    SEER_CUDA_CHECK(cudaMemset(dwk.data(), 0xff, dwk.size() * sizeof(float)));
    if (dwq.size()) SEER_CUDA_CHECK(cudaMemset(dwq.data(), 0xff, dwq.size() * sizeof(float)));
    if (dbias.size()) SEER_CUDA_CHECK(cudaMemset(dbias.data(), 0xff, dbias.size() * sizeof(float)));
    SEER_CUDA_CHECK(cudaMemset(kl.data(), 0, sizeof(double)));
    const float loss_scale = 10.0f;
    cuda::gate_forward(q.device.data(), k.device.data(), cuda::DType::bf16, layout, gate, work, logits.data(), nullptr);
    cuda::gate_loss_backward(logits.data(), dgt.data(), layout, gate, work, loss_scale, grad_work, kl.data(), dwk.data(),
                             dwq.data(), dbias.data(), nullptr);
    SEER_CUDA_CHECK(cudaDeviceSynchronize());

    // The reference in double: forward, loss with its gradient, backward.
    const auto to_double = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    GateWeights<double> wd{config, to_double(weights.wk), to_double(weights.wq), to_double(weights.bias)};
    const std::vector<double> qd = to_double(q.host), kd = to_double(k.host), gtd = to_double(gt);
    const Rope rope(shape.rope, shape.gate_dim);
    std::vector<double> zd(gt.size()), dzd(gt.size());
    gate_forward<double, double>(qd, kd, seqs, wd, rope, zd);
    const double want_kl = gate_kl_loss<double>(zd, gtd, layout.host, 0.25, dzd, tail);
    for (double& g : dzd) g *= loss_scale;
    GateWeights<double> grad = GateWeights<double>::zeros(config);
    gate_backward<double, double>(qd, kd, seqs, wd, rope, dzd, grad);

    const double loss_err = std::abs(kl.download()[0] - want_kl) / want_kl;
    const double wk_err = test::relative_error(dwk.download(), grad.wk);
    const double wq_err = config.has_q_proj() ? test::relative_error(dwq.download(), grad.wq) : 0.0;
    const double bias_err = config.has_block_bias ? test::relative_error(dbias.download(), grad.bias) : 0.0;
    EXPECT_LT(loss_err, 1e-4) << seqs.tokens() << " tokens, d " << shape.heads.head_dim;
    EXPECT_LT(wk_err, 1e-3) << seqs.tokens() << " tokens, d " << shape.heads.head_dim;
    EXPECT_LT(wq_err, 1e-3) << seqs.tokens() << " tokens, d_g " << shape.gate_dim;
    EXPECT_LT(bias_err, 1e-3) << seqs.tokens() << " tokens, block bias";
    worst_loss = std::max(worst_loss, loss_err);
    worst_grad = std::max({worst_grad, wk_err, wq_err, bias_err});
  }
  std::printf("[measured] gate loss/backward vs CPU double: max rel error loss %.2e, dW %.2e\n", worst_loss,
              worst_grad);
}

enum class LogitRows { plain, coarse, special };

// Random logits: plain; coarse, so that many values tie at the cut; or special rows in turn, one
// block 60 above the rest (the others weigh nothing in top-p's integer masses), some causal blocks
// -inf (the diagonal kept finite), all blocks equal.
std::vector<float> random_logits(const BlockLayout& layout, LogitRows kind) {
  auto logits = test::random_values<float>(size_t(layout.map_elements()), 2.0f);
  if (kind == LogitRows::coarse)
    for (float& x : logits) x = std::round(x * 2.0f) / 2.0f;
  if (kind != LogitRows::special) return logits;
  std::mt19937_64& rng = test::rng();
  for (int64_t s = 0; s < layout.sequences(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)];
    for (int64_t row = 0; row < layout.heads * nb; ++row) {
      const int64_t i = row % nb;
      float* x = logits.data() + layout.map_offset[size_t(s)] + row * nb;
      switch (row % 3) {
        case 0:
          x[std::uniform_int_distribution<int64_t>(0, i)(rng)] += 60.0f;
          break;
        case 1:
          for (int64_t j = 0; j < i; ++j)
            if (rng() % 2) x[j] = -INFINITY;
          break;
        default:
          for (int64_t j = 0; j <= i; ++j) x[j] = 0.5f;
      }
    }
  }
  return logits;
}

// The training target raised to a power (--target-power) on the device against the CPU in double,
// on a map with zero entries and rows; written out of place and in place.
TEST(CudaGate, PowerNormalizedRowsMatchCpu) {
  const Sequences seqs = Sequences::from_lengths({1000, 65, 4096});
  const int hq = 6;
  const cuda::DeviceLayout layout = cuda::DeviceLayout::create(seqs, hq);
  const std::vector<float> gt = random_ground_truth(layout.host);
  for (const float power : {0.5f, 2.0f}) {
    std::vector<double> want(gt.begin(), gt.end());
    power_normalize_rows<double>(want, layout.host, power);
    DeviceBuffer<float> in = DeviceBuffer<float>::upload(gt), out(gt.size());
    SEER_CUDA_CHECK(cudaMemset(out.data(), 0xff, out.size() * sizeof(float)));
    cuda::power_normalize_rows(in.data(), out.data(), layout, hq, power, nullptr);
    cuda::power_normalize_rows(in.data(), in.data(), layout, hq, power, nullptr);
    SEER_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_LT(test::max_abs_error(out.download(), want), 1e-6) << "power " << power;
    EXPECT_EQ(in.download(), out.download()) << "in place, power " << power;
  }
  DeviceBuffer<float> map(gt.size());
  EXPECT_THROW(cuda::power_normalize_rows(map.data(), map.data(), layout, hq, 0.0f, nullptr), Error);
  EXPECT_THROW(cuda::power_normalize_rows(map.data(), map.data(), layout, hq + 1, 0.5f, nullptr), Error);
}

TEST(CudaSelection, MatchesCpuExactly) {
  int cases = 0;
  for (const auto& lengths : std::vector<std::vector<int64_t>>{{8192}, {1, 640, 3000, 64}, {32768}})
    for (LogitRows kind : {LogitRows::plain, LogitRows::coarse, LogitRows::special}) {
      const Sequences seqs = Sequences::from_lengths(lengths);
      const int heads = lengths.size() == 1 && lengths[0] == 32768 ? 2 : 5;
      const cuda::DeviceLayout layout = cuda::DeviceLayout::create(seqs, heads);
      const std::vector<float> logits = random_logits(layout.host, kind);
      const DeviceBuffer<float> dlogits = DeviceBuffer<float>::upload(logits);
      cuda::SelectionWorkspace work = cuda::SelectionWorkspace::create(layout, heads);
      cuda::DeviceMask mask =
          cuda::DeviceMask::with_capacity(layout.total_rows * heads, layout.host.causal_pairs());
      using M = SelectionOptions::Method;
      const std::vector<SelectionOptions> options = {
          {.density = 0.05},
          {.density = 0.1},
          {.density = 0.3},
          {.density = 1.0},
          {.density = 0.1, .dense_last_blocks = 2, .keep_sink = true, .local_blocks = 3},
          {.method = M::threshold, .threshold = 1e-3},
          {.method = M::threshold, .threshold = 2e-2, .keep_sink = true},
          {.method = M::threshold, .threshold = 0.3, .dense_last_blocks = 1},
          {.method = M::top_p, .mass = 0.5},
          {.method = M::top_p, .mass = 0.9, .keep_sink = true, .local_blocks = 2},
          {.method = M::top_p, .mass = 0.99, .dense_last_blocks = 1},
          {.method = M::top_p, .mass = 1.0},
      };
      for (const SelectionOptions& o : options) {
        SEER_CUDA_CHECK(cudaMemset(mask.indices.data(), 0xff, mask.indices.size() * sizeof(int32_t)));
        cuda::select_blocks(dlogits.data(), layout, heads, o, work, mask, nullptr);
        SEER_CUDA_CHECK(cudaDeviceSynchronize());
        const BlockMask want = select_blocks(logits, layout.host, o);
        const std::vector<int32_t> indptr = mask.indptr.download();
        std::vector<int32_t> indices = mask.indices.download();
        ASSERT_EQ(indptr.size(), want.indptr.size());
        for (size_t r = 0; r < indptr.size(); ++r) ASSERT_EQ(indptr[r], want.indptr[r]) << "row " << r;
        indices.resize(want.indices.size());
        ASSERT_EQ(indices, want.indices) << "density " << o.density << " threshold " << o.threshold << " mass " << o.mass;
        ++cases;
      }
    }
  std::printf("[measured] selection: %d option/layout cases identical to the CPU\n", cases);
}

TEST(CudaGate, RejectsMismatchedPlans) {
  const Sequences seqs = Sequences::single(500);
  const GateConfig config{{4, 2, 64}, 64, 64};
  const cuda::DeviceLayout layout = cuda::DeviceLayout::create(seqs, 4);
  const cuda::DeviceLayout longer = cuda::DeviceLayout::create(Sequences::single(5000), 4);
  const cuda::DeviceGate gate = cuda::DeviceGate::upload(GateWeights<float>::random(config, 1), kPlain, layout.max_blocks);
  cuda::GateWorkspace work = cuda::GateWorkspace::create(layout, config);
  DeviceBuffer<uint16_t> q(500 * 4 * 64), k(500 * 2 * 64);
  DeviceBuffer<float> logits(size_t(longer.host.map_elements()));
  EXPECT_THROW(cuda::gate_forward(q.data(), k.data(), cuda::DType::bf16, longer, gate, work, logits.data(), nullptr),
               Error);  // RoPE table too short and workspace for another layout
  EXPECT_THROW(cuda::DeviceGate::upload(GateWeights<float>::random({{4, 2, 64}, 64, 32}, 1), kPlain, 8), Error);
  cuda::SelectionWorkspace sw = cuda::SelectionWorkspace::create(layout, 4);
  cuda::DeviceMask small = cuda::DeviceMask::with_capacity(layout.total_rows * 4, 10);
  EXPECT_THROW(cuda::select_blocks(logits.data(), layout, 4, {}, sw, small, nullptr), Error);
  cuda::DeviceMask mask = cuda::DeviceMask::with_capacity(layout.total_rows * 4, layout.host.causal_pairs());
  EXPECT_THROW(cuda::select_blocks(logits.data(), layout, 4, {.density = 0.0}, sw, mask, nullptr), Error);
}

}  // namespace
}  // namespace seer
