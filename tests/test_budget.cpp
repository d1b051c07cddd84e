// Per-layer budgets: the dynamic program against brute force over every combination.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "gate/budget.h"

namespace seer {
namespace {

TEST(LayerBudget, MatchesBruteForce) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int layers = 1 + int(rng() % 4), options = 1 + int(rng() % 4);
    std::vector<LayerCurve> curves;
    curves.resize(size_t(layers));
    for (LayerCurve& c : curves)
      for (int o = 0; o < options; ++o) {
        c.mass.push_back(0.1 * (o + 1));
        c.density.push_back(double(rng() % 1000) * 1e-3);  // whole multiples of the 1e-4 quantum
        c.delta_nll.push_back(double(rng() % 1000) * 1e-3);
      }
    const double target = 0.05 + double(rng() % 900) * 1e-3;
    // Every combination, the best feasible one.
    double want = std::numeric_limits<double>::infinity();
    std::vector<int> pick(size_t(layers), 0);
    for (int code = 0; code < int(std::pow(options, layers)); ++code) {
      double density = 0, nll = 0;
      for (int l = 0, rest = code; l < layers; ++l, rest /= options) {
        density += curves[size_t(l)].density[size_t(rest % options)];
        nll += curves[size_t(l)].delta_nll[size_t(rest % options)];
      }
      if (density / layers <= target + 1e-12) want = std::min(want, nll);
    }
    const LayerBudget got = allocate_layer_budget(curves, target);
    ASSERT_EQ(got.feasible, want != std::numeric_limits<double>::infinity()) << "trial " << trial;
    if (!got.feasible) continue;
    EXPECT_NEAR(got.delta_nll, want, 1e-9) << "trial " << trial;
    EXPECT_LE(got.density, target + 1e-12) << "trial " << trial;
    double density = 0, nll = 0;
    for (int l = 0; l < layers; ++l) {
      const auto o = size_t(got.option[size_t(l)]);
      EXPECT_EQ(got.mass[size_t(l)], curves[size_t(l)].mass[o]);
      density += curves[size_t(l)].density[o] / layers;
      nll += curves[size_t(l)].delta_nll[o];
    }
    EXPECT_NEAR(got.density, density, 1e-12);
    EXPECT_NEAR(got.delta_nll, nll, 1e-12);
  }
}

TEST(LayerBudget, SpendsOnTheSensitiveLayer) {
  // Two layers with the same densities per option; layer 1 loses ten times more when sparse.
  const LayerCurve calm{{0.5, 0.9}, {0.05, 0.15}, {0.01, 0.001}};
  const LayerCurve touchy{{0.5, 0.9}, {0.05, 0.15}, {0.10, 0.010}};
  const LayerBudget b = allocate_layer_budget(std::vector<LayerCurve>{calm, touchy}, 0.1);
  EXPECT_EQ(b.option, (std::vector<int>{0, 1}));
  EXPECT_NEAR(b.density, 0.1, 1e-12);
}

TEST(LayerBudget, ReportsAnImpossibleTarget) {
  const LayerCurve c{{0.5}, {0.3}, {0.0}};
  const LayerBudget b = allocate_layer_budget(std::vector<LayerCurve>{c, c}, 0.1);
  EXPECT_FALSE(b.feasible);
  EXPECT_EQ(b.option, (std::vector<int>{0, 0}));
  EXPECT_THROW(allocate_layer_budget(std::vector<LayerCurve>{}, 0.1), Error);
  EXPECT_THROW(allocate_layer_budget(std::vector<LayerCurve>{c}, 0.0), Error);
  EXPECT_THROW(allocate_layer_budget(std::vector<LayerCurve>{{{0.5}, {}, {0.0}}}, 0.1), Error);
}

}  // namespace
}  // namespace seer
