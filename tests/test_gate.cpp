// AttnGate forward against an independent double-precision reference, the loss against its
// formula, and the analytic gradient against central finite differences in double.
#include <gtest/gtest.h>

#include <complex>

#include "gate/attn_gate.h"
#include "reference.h"

namespace seer {
namespace {

using test::random_values;

// Straight from the definition: pooled vectors per block, projection, RoPE as a complex rotation.
std::vector<double> reference_gate_logits(const std::vector<double>& q, const std::vector<double>& k,
                                          const Sequences& seqs, const GateWeights<double>& w,
                                          const RopeConfig& rope_cfg) {
  const GateConfig& c = w.config;
  const int d = c.heads.head_dim, dg = c.gate_dim, hq = c.heads.q_heads, hkv = c.heads.kv_heads, B = c.block;
  const BlockLayout layout(seqs, B, hq);
  const Rope rope(rope_cfg, dg);
  std::vector<double> logits(size_t(layout.map_elements()), -std::numeric_limits<double>::infinity());
  const auto rotate = [&](std::vector<double> x, double pos) {
    for (int i = 0; i < dg / 2; ++i) {
      std::complex<double> z(x[size_t(i)], x[size_t(i + dg / 2)]);
      z *= std::polar(rope.attention_scaling(), pos * rope.inv_freq()[size_t(i)]);
      x[size_t(i)] = z.real();
      x[size_t(i + dg / 2)] = z.imag();
    }
    return x;
  };
  for (int64_t s = 0; s < seqs.count(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)];
    for (int h = 0; h < hq; ++h) {
      std::vector<std::vector<double>> qg, kg;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t first = seqs.start(s) + b * B, last = std::min(seqs.start(s) + seqs.length(s), first + B);
        // q: its mean, or concat(max, min, mean) (Qmaxminavg); k: concat(max, min, mean).
        const int q_in = c.q_pools * d;
        std::vector<double> qpool(static_cast<size_t>(q_in)), kpool(size_t(3 * d));
        for (int x = 0; x < d; ++x) {
          double mx = -1e300, mn = 1e300, sum = 0, qmx = -1e300, qmn = 1e300, qsum = 0;
          for (int64_t t = first; t < last; ++t) {
            const double qv = q[size_t((t * hq + h) * d + x)];
            qmx = std::max(qmx, qv);
            qmn = std::min(qmn, qv);
            qsum += qv;
            const double kv = k[size_t((t * hkv + h / c.heads.group()) * d + x)];
            mx = std::max(mx, kv);
            mn = std::min(mn, kv);
            sum += kv;
          }
          kpool[size_t(x)] = mx;
          kpool[size_t(d + x)] = mn;
          kpool[size_t(2 * d + x)] = sum / double(last - first);
          if (c.q_pools == 3) {
            qpool[size_t(x)] = qmx;
            qpool[size_t(d + x)] = qmn;
          }
          qpool[size_t((c.q_pools - 1) * d + x)] = qsum / double(last - first);
        }
        std::vector<double> qv(size_t(dg), 0), kv(size_t(dg), 0);
        for (int y = 0; y < dg; ++y) {
          if (c.has_q_proj())
            for (int x = 0; x < q_in; ++x)
              qv[size_t(y)] += qpool[size_t(x)] * w.wq[size_t((h * q_in + x) * dg + y)];
          else
            qv[size_t(y)] = qpool[size_t(y)];
          // The reference code's layouts: W_k per query head without W_q, per KV head with it.
          const int wk_head = c.has_q_proj() ? h / c.heads.group() : h;
          for (int x = 0; x < 3 * d; ++x)
            kv[size_t(y)] += kpool[size_t(x)] * w.wk[size_t((wk_head * 3 * d + x) * dg + y)];
        }
        qg.push_back(rotate(qv, double(b * B)));
        kg.push_back(rotate(kv, double(b * B)));
      }
      for (int64_t i = 0; i < nb; ++i)
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int y = 0; y < dg; ++y) dot += qg[size_t(i)][size_t(y)] * kg[size_t(j)][size_t(y)];
          // The block bias, from its definition: distances 0-3 exact, then [4, 8), [8, 16), [16, 32),
          // [32, 64), [64, ∞); one more entry for key block 0.
          double bias = 0;
          if (c.has_block_bias) {
            const int64_t distance = i - j;
            int bucket = int(distance);
            if (distance >= 4) bucket = distance >= 64 ? 8 : 2 + int(std::floor(std::log2(double(distance))));
            bias = w.bias[size_t(h * 10 + bucket)] + (j == 0 ? w.bias[size_t(h * 10 + 9)] : 0.0);
          }
          logits[size_t(layout.map_offset[size_t(s)] + (h * nb + i) * nb + j)] = dot / std::sqrt(double(dg)) + bias;
        }
    }
  }
  return logits;
}

struct GateCase {
  std::vector<int64_t> offsets;
  HeadDims heads;
  int gate_dim, block;
  RopeConfig rope;
  bool block_bias = false;
  int q_pools = 1;

  GateConfig config() const { return GateConfig{heads, gate_dim, block, block_bias, q_pools}; }
};

// Random weights, the block bias (which starts at zero) included.
template <typename Real>
GateWeights<Real> random_gate(const GateConfig& config, double std) {
  GateWeights<Real> w = GateWeights<Real>::random(config, test::rng()(), std);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (Real& b : w.bias) b = Real(normal(test::rng()));
  return w;
}

const RopeConfig kPlain{.theta = 100000.0};
const RopeConfig kLlama3{.theta = 500000.0, .scaling = RopeConfig::Scaling::llama3, .factor = 8.0,
                         .low_freq_factor = 1.0, .high_freq_factor = 4.0, .original_max_positions = 256};
const RopeConfig kYarn{.theta = 10000.0, .scaling = RopeConfig::Scaling::yarn, .factor = 4.0,
                       .original_max_positions = 128};

const std::vector<GateCase> kCases = {
    {{0, 300}, {9, 3, 64}, 64, 64, kPlain},
    {{0, 1, 130, 200}, {4, 1, 32}, 32, 16, kLlama3},
    {{0, 100, 333}, {8, 2, 16}, 24, 32, kYarn},  // d_g != d: W_q exists, W_k is per KV head
    {{0, 200}, {9, 3, 64}, 8, 64, kPlain},         // the built-in model's shape with a small d_g
    {{0, 64, 264}, {2, 2, 128}, 128, 64, kPlain},  // a one-block sequence beside a longer one
    // The block bias: every distance bucket needs sequences of more than 64 blocks.
    {{0, 70 * 16, 70 * 16 + 300}, {3, 1, 16}, 16, 16, kPlain, true},
    {{0, 200}, {9, 3, 64}, 8, 64, kLlama3, true},  // with W_q
    // Qmaxminavg: W_q [H_q, 3d, d_g] at d_g == d and below, with the bias or not.
    {{0, 300, 390}, {9, 3, 64}, 64, 64, kPlain, false, 3},
    {{0, 100, 333}, {8, 2, 16}, 8, 32, kYarn, true, 3},
};

TEST(AttnGate, ForwardMatchesReference) {
  for (const GateCase& gc : kCases) {
    const Sequences seqs(gc.offsets);
    const GateConfig cfg = gc.config();
    const GateWeights<double> w64 = random_gate<double>(cfg, 0.1);
    GateWeights<float> w32{cfg, std::vector<float>(w64.wk.begin(), w64.wk.end()),
                           std::vector<float>(w64.wq.begin(), w64.wq.end()),
                           std::vector<float>(w64.bias.begin(), w64.bias.end())};
    const auto q = random_values<float>(size_t(seqs.tokens() * gc.heads.q_heads * gc.heads.head_dim));
    const auto k = random_values<float>(size_t(seqs.tokens() * gc.heads.kv_heads * gc.heads.head_dim));
    const std::vector<double> q64(q.begin(), q.end()), k64(k.begin(), k.end());
    const auto want = reference_gate_logits(q64, k64, seqs, w64, gc.rope);
    auto got = test::poisoned(want.size());
    gate_forward<float, float>(q, k, seqs, w32, Rope(gc.rope, gc.gate_dim), got);
    double scale = 0;
    for (double x : want)
      if (std::isfinite(x)) scale = std::max(scale, std::abs(x));
    EXPECT_LT(test::max_abs_error(got, want), 1e-5 * scale) << "case with d=" << gc.heads.head_dim;
  }
}

// A random row-normalized causal map standing in for the ground truth.
std::vector<double> random_ground_truth(const BlockLayout& layout) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> gt(size_t(layout.map_elements()), 0.0);
  for (int64_t s = 0; s < layout.sequences(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)];
    for (int h = 0; h < layout.heads; ++h)
      for (int64_t i = 0; i < nb; ++i) {
        double* row = gt.data() + layout.map_offset[size_t(s)] + (h * nb + i) * nb;
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::pow(u(test::rng()), 4.0));
        for (int64_t j = 0; j <= i; ++j) row[j] /= sum;
      }
  }
  return gt;
}

TEST(AttnGate, PowerNormalizedRowsKeepTheirRankingAndSumToOne) {
  const BlockLayout layout(Sequences::from_lengths({300, 64, 129}), 64, 3);
  const std::vector<double> gt = random_ground_truth(layout);
  for (const double power : {0.25, 0.5, 2.0}) {
    std::vector<double> out = gt;
    power_normalize_rows<double>(out, layout, power);
    for (int64_t s = 0; s < layout.sequences(); ++s) {
      const int64_t nb = layout.blocks[size_t(s)];
      for (int h = 0; h < layout.heads; ++h)
        for (int64_t i = 0; i < nb; ++i) {
          const int64_t row = layout.map_offset[size_t(s)] + (h * nb + i) * nb;
          double sum = 0;
          for (int64_t j = 0; j <= i; ++j) {
            sum += out[size_t(row + j)];
            // Ratios within a row go to their power: out_j / out_0 = (gt_j / gt_0)^power.
            EXPECT_NEAR(out[size_t(row + j)] / out[size_t(row)],
                        std::pow(gt[size_t(row + j)] / gt[size_t(row)], power),
                        1e-9 * std::pow(gt[size_t(row + j)] / gt[size_t(row)], power));
          }
          EXPECT_NEAR(sum, 1.0, 1e-12);
          for (int64_t j = i + 1; j < nb; ++j) EXPECT_EQ(out[size_t(row + j)], 0.0);  // past the diagonal
        }
    }
  }
  // A row of zeros stays zero; power 1 changes nothing but rounding.
  std::vector<double> zeros(size_t(layout.map_elements()), 0.0), same = gt;
  power_normalize_rows<double>(zeros, layout, 0.5);
  EXPECT_EQ(zeros, std::vector<double>(zeros.size(), 0.0));
  power_normalize_rows<double>(same, layout, 1.0);
  EXPECT_LT(test::max_abs_error(same, gt), 1e-15);
  EXPECT_THROW(power_normalize_rows<double>(same, layout, 0.0), Error);
  EXPECT_THROW(power_normalize_rows<double>(same, layout, -1.0), Error);
}

TEST(AttnGate, KlLossMatchesFormula) {
  // One sequence of 2 blocks, one head, nothing skipped: rows [a] and [b, c].
  const BlockLayout layout(Sequences::single(128), 64, 1);
  const std::vector<double> logits = {0.3, -std::numeric_limits<double>::infinity(), 1.0, -0.5};
  const std::vector<double> gt = {1.0, 0.0, 0.25, 0.75};
  const double q1 = std::exp(1.0) / (std::exp(1.0) + std::exp(-0.5)), q2 = 1 - q1;
  const double want = (0.25 * std::log(0.25 / q1) + 0.75 * std::log(0.75 / q2)) / 4.0;  // mean over 2x2
  std::vector<double> grad(4);
  EXPECT_NEAR(gate_kl_loss<double>(logits, gt, layout, 0.0, grad), want, 1e-15);
  EXPECT_NEAR(grad[2], (q1 - 0.25) / 4.0, 1e-15);
  EXPECT_NEAR(grad[3], (q2 - 0.75) / 4.0, 1e-15);
  EXPECT_EQ(grad[0], 0.0);  // a one-block row has q = gt = 1
  EXPECT_EQ(grad[1], 0.0);
  // Skipping half the rows drops row 0 and halves the element count.
  EXPECT_NEAR(gate_kl_loss<double>(logits, gt, layout, 0.5, {}), want * 4.0 / 2.0, 1e-15);
}

// The tail term from its definition: one sequence of 6 blocks, one head, the tail of row i being
// blocks 1 .. i - 3, so only row 5 has one ({1, 2}); the other rows' terms and gradients are the
// plain loss's.
TEST(AttnGate, TailKlMatchesFormula) {
  const BlockLayout layout(Sequences::single(6 * 64), 64, 1);
  std::vector<double> logits = test::random_values<double>(36, 2.0), gt = test::random_values<double>(36, 1.0);
  for (double& p : gt) p = std::abs(p);
  const TailKl tail{.weight = 0.7, .local_blocks = 3};
  std::vector<double> plain_grad(36), grad(36);
  const double plain = gate_kl_loss<double>(logits, gt, layout, 0.0, plain_grad);
  const double loss = gate_kl_loss<double>(logits, gt, layout, 0.0, grad, tail);
  const double* z = logits.data() + 5 * 6;
  const double* p = gt.data() + 5 * 6;
  const double q1 = std::exp(z[1]) / (std::exp(z[1]) + std::exp(z[2])), q2 = 1 - q1;
  const double p1 = p[1] / (p[1] + p[2]), p2 = 1 - p1;
  const double elements = 36;
  EXPECT_NEAR(loss, plain + 0.7 * (p1 * std::log(p1 / q1) + p2 * std::log(p2 / q2)) / elements, 1e-14);
  for (int e = 0; e < 36; ++e) {
    const double extra = e == 31 ? 0.7 * (q1 - p1) / elements : e == 32 ? 0.7 * (q2 - p2) / elements : 0.0;
    EXPECT_NEAR(grad[size_t(e)], plain_grad[size_t(e)] + extra, 1e-15) << "entry " << e;
  }
  // Weight 0 is the plain loss exactly; a tail with no target mass adds nothing.
  EXPECT_EQ(gate_kl_loss<double>(logits, gt, layout, 0.0, {}, {.weight = 0}), plain);
  gt[31] = gt[32] = 0;
  EXPECT_EQ(gate_kl_loss<double>(logits, gt, layout, 0.0, {}, tail), gate_kl_loss<double>(logits, gt, layout, 0.0, {}));
  EXPECT_THROW(gate_kl_loss<double>(logits, gt, layout, 0.0, {}, {.weight = -1}), Error);
  EXPECT_THROW(gate_kl_loss<double>(logits, gt, layout, 0.0, {}, {.weight = 1, .local_blocks = 0}), Error);
}

TEST(AttnGate, GradientMatchesFiniteDifferences) {
  for (const TailKl tail : {TailKl{}, TailKl{.weight = 0.8, .local_blocks = 2}}) {
    for (const GateCase& gc : kCases) {
      const Sequences seqs(gc.offsets);
      const GateConfig cfg = gc.config();
      const BlockLayout layout(seqs, gc.block, gc.heads.q_heads);
      const Rope rope(gc.rope, gc.gate_dim);
      GateWeights<double> w = random_gate<double>(cfg, 0.05);
      const auto q = random_values<double>(size_t(seqs.tokens() * gc.heads.q_heads * gc.heads.head_dim));
      const auto k = random_values<double>(size_t(seqs.tokens() * gc.heads.kv_heads * gc.heads.head_dim));
      const auto gt = random_ground_truth(layout);
      std::vector<double> logits(gt.size()), dlogits(gt.size());
      const auto loss = [&] {
        gate_forward<double, double>(q, k, seqs, w, rope, logits);
        return gate_kl_loss<double>(logits, gt, layout, 0.25, {}, tail);
      };
      gate_forward<double, double>(q, k, seqs, w, rope, logits);
      gate_kl_loss<double>(logits, gt, layout, 0.25, dlogits, tail);
      GateWeights<double> grad = GateWeights<double>::zeros(cfg);
      gate_backward<double, double>(q, k, seqs, w, rope, dlogits, grad);

      std::vector<std::pair<std::vector<double>*, std::vector<double>*>> params = {{&w.wk, &grad.wk}};
      if (cfg.has_q_proj()) params.push_back({&w.wq, &grad.wq});
      if (cfg.has_block_bias) params.push_back({&w.bias, &grad.bias});
      for (auto [weights, gradient] : params) {
        double grad_scale = 0;
        for (double g : *gradient) grad_scale = std::max(grad_scale, std::abs(g));
        ASSERT_GT(grad_scale, 0.0);
        // 25 random weights of the projections; every entry of the (small) block bias.
        const bool every = weights == &w.bias;
        std::uniform_int_distribution<size_t> pick(0, weights->size() - 1);
        for (size_t trial = 0; trial < (every ? weights->size() : 25); ++trial) {
          const size_t n = every ? trial : pick(test::rng());
          const double saved = (*weights)[n], eps = 1e-5;
          (*weights)[n] = saved + eps;
          const double up = loss();
          (*weights)[n] = saved - eps;
          const double down = loss();
          (*weights)[n] = saved;
          const double numeric = (up - down) / (2 * eps);
          EXPECT_NEAR((*gradient)[n], numeric, 1e-6 * grad_scale) << "weight " << n;
        }
      }
    }
  }
}

TEST(AttnGate, RejectsBadInputs) {
  const GateConfig cfg{{9, 3, 64}, 64, 64};
  const Sequences seqs = Sequences::single(100);
  const auto q = random_values<float>(size_t(100 * 9 * 64));
  const auto k = random_values<float>(size_t(100 * 3 * 64));
  GateWeights<float> w = GateWeights<float>::random(cfg, 1);
  std::vector<float> logits(size_t(BlockLayout(seqs, 64, 9).map_elements()));
  const Rope rope(kPlain, 64);
  EXPECT_NO_THROW((gate_forward<float, float>(q, k, seqs, w, rope, logits)));
  EXPECT_THROW((gate_forward<float, float>(q, k, seqs, w, Rope(kPlain, 32), logits)), Error);
  EXPECT_THROW((gate_forward<float, float>(std::span(q).first(64), k, seqs, w, rope, logits)), Error);
  EXPECT_THROW((gate_forward<float, float>(q, k, seqs, w, rope, std::span(logits).first(3))), Error);
  w.wk.pop_back();
  EXPECT_THROW((gate_forward<float, float>(q, k, seqs, w, rope, logits)), Error);
  GateWeights<float> biased = GateWeights<float>::random(GateConfig{{9, 3, 64}, 64, 64, true}, 1);
  EXPECT_EQ(biased.bias, std::vector<float>(9 * kBiasColumns, 0.0f));  // an untrained bias is none
  EXPECT_NO_THROW((gate_forward<float, float>(q, k, seqs, biased, rope, logits)));
  biased.bias.pop_back();
  EXPECT_THROW((gate_forward<float, float>(q, k, seqs, biased, rope, logits)), Error);
  EXPECT_THROW(Rope(RopeConfig{.theta = 0.5}, 64), Error);
  EXPECT_THROW((GateWeights<float>::zeros(GateConfig{{9, 4, 64}, 64, 64})), Error);
  EXPECT_THROW((GateWeights<float>::zeros(GateConfig{{9, 3, 64}, 64, 64, false, 2})), Error);  // 1 or 3 Q pools
  EXPECT_EQ(parse_gate_type("Qmaxminavg_Kmaxminavg"), 3);
  EXPECT_STREQ(gate_type_name(GateConfig{{9, 3, 64}, 64, 64}), "Qavg_Kmaxminavg");
  EXPECT_THROW(parse_gate_type("Qavg_Kavg"), Error);
}

TEST(Rope, InverseIsTransposeAndScoresDependOnDistanceOnly) {
  for (const RopeConfig& cfg : {kPlain, kLlama3, kYarn}) {
    const Rope rope(cfg, 32);
    auto a = random_values<double>(32), b = random_values<double>(32);
    auto a1 = a, b1 = b, a2 = a, b2 = b;
    rope.apply(std::span(a1), 100.0);
    rope.apply(std::span(b1), 40.0);
    rope.apply(std::span(a2), 1060.0);
    rope.apply(std::span(b2), 1000.0);
    double dot1 = 0, dot2 = 0;
    for (int x = 0; x < 32; ++x) dot1 += a1[size_t(x)] * b1[size_t(x)], dot2 += a2[size_t(x)] * b2[size_t(x)];
    EXPECT_NEAR(dot1, dot2, 1e-9 * std::abs(dot1) + 1e-9);
    auto back = a1;
    rope.apply(std::span(back), 100.0, true);
    const double s2 = rope.attention_scaling() * rope.attention_scaling();
    for (int x = 0; x < 32; ++x) EXPECT_NEAR(back[size_t(x)], s2 * a[size_t(x)], 1e-12);
  }
  EXPECT_NEAR(Rope(kYarn, 32).attention_scaling(), 0.1 * std::log(4.0) + 1.0, 1e-15);
}

}  // namespace
}  // namespace seer
