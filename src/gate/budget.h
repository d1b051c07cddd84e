// Per-layer block budgets. Layers do not suffer equally from sparse attention: in the built-in
// model, one layer at density 0.1 (the others dense) costs from -0.1% to +1.9% perplexity
// (bench/ACCURACY.md), and the costs of single layers add up to about the cost of all of them.
// So the budget is spread by measurement: for each layer alone and each candidate top-p mass, the
// extra NLL and the kept density are measured (`seer calibrate`), then one mass per layer is chosen
// that minimizes the summed extra NLL at a mean density of at most the target — a multiple-choice
// knapsack, solved exactly here by dynamic programming over densities rounded up to 1e-4.
#pragma once
#include <span>
#include <vector>

namespace seer {

// One layer's measurements: option o keeps `density[o]` of the layer's causal blocks and adds
// `delta_nll[o]` (mean per token) when this layer alone is sparse.
struct LayerCurve {
  std::vector<double> mass, density, delta_nll;
};

struct LayerBudget {
  std::vector<int> option;    // chosen option per layer
  std::vector<double> mass;   // its mass per layer
  double density = 0;         // mean density over layers
  double delta_nll = 0;       // summed extra NLL (the additive estimate)
  bool feasible = true;       // false: even the sparsest options exceed the target (they are returned)
};

// The options minimizing the summed delta_nll subject to mean density <= target_density.
LayerBudget allocate_layer_budget(std::span<const LayerCurve> curves, double target_density);

}  // namespace seer
