#include "gate/budget.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace seer {

LayerBudget allocate_layer_budget(std::span<const LayerCurve> curves, double target_density) {
  SEER_CHECK(!curves.empty(), "budget: no layers");
  SEER_CHECK(target_density > 0 && target_density <= 1, "budget: target density must be in (0, 1], got ",
             target_density);
  constexpr double kQuantum = 1e-4;  // densities rounded up to this: a found budget never overshoots
  const size_t layers = curves.size();
  std::vector<std::vector<int>> cost(layers);
  for (size_t l = 0; l < layers; ++l) {
    const LayerCurve& c = curves[l];
    SEER_CHECK(!c.mass.empty() && c.density.size() == c.mass.size() && c.delta_nll.size() == c.mass.size(),
               "budget: layer ", l, " needs as many densities and NLLs as masses");
    for (const double d : c.density) {
      SEER_CHECK(d >= 0 && d <= 1, "budget: layer ", l, " has density ", d);
      cost[l].push_back(int(std::ceil(d / kQuantum - 1e-9)));
    }
  }
  const int capacity = int(std::floor(target_density * double(layers) / kQuantum + 1e-9));
  // best[u]: least summed NLL of the layers so far within u units; choice[l][u]: layer l's option.
  constexpr double kNone = std::numeric_limits<double>::infinity();
  std::vector<double> best(size_t(capacity) + 1, 0.0), next(size_t(capacity) + 1);
  std::vector<std::vector<int>> choice(layers, std::vector<int>(size_t(capacity) + 1, -1));
  for (size_t l = 0; l < layers; ++l) {
    std::fill(next.begin(), next.end(), kNone);
    for (int u = 0; u <= capacity; ++u)
      for (size_t o = 0; o < cost[l].size(); ++o) {
        const int rest = u - cost[l][o];
        if (rest < 0 || best[size_t(rest)] == kNone) continue;
        const double v = best[size_t(rest)] + curves[l].delta_nll[o];
        if (v < next[size_t(u)]) next[size_t(u)] = v, choice[l][size_t(u)] = int(o);
      }
    best.swap(next);
  }
  LayerBudget b;
  b.option.assign(layers, 0);
  if (best[size_t(capacity)] == kNone) {  // infeasible: the sparsest option of every layer
    b.feasible = false;
    for (size_t l = 0; l < layers; ++l)
      b.option[l] = int(std::min_element(curves[l].density.begin(), curves[l].density.end()) - curves[l].density.begin());
  } else {
    int u = capacity;
    for (size_t l = layers; l-- > 0;) {
      b.option[l] = choice[l][size_t(u)];
      u -= cost[l][size_t(b.option[l])];
    }
  }
  for (size_t l = 0; l < layers; ++l) {
    const size_t o = size_t(b.option[l]);
    b.mass.push_back(curves[l].mass[o]);
    b.density += curves[l].density[o] / double(layers);
    b.delta_nll += curves[l].delta_nll[o];
  }
  return b;
}

}  // namespace seer
