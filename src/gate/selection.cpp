#include "gate/selection.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "attention/head_dims.h"
#include "core/error.h"
#include "gate/mass_weight.h"

namespace seer {

void SelectionOptions::validate() const {
  if (method == Method::top_k)
    SEER_CHECK(density > 0.0 && density <= 1.0, "density must be in (0, 1], got ", density);
  else if (method == Method::threshold)
    SEER_CHECK(threshold >= 0.0 && threshold < 1.0, "threshold must be in [0, 1), got ", threshold);
  else
    SEER_CHECK(mass > 0.0 && mass <= 1.0, "top-p mass must be in (0, 1], got ", mass);
  SEER_CHECK(layer_mass.empty() || method == Method::top_p, "per-layer masses need top-p selection");
  for (const double m : layer_mass) SEER_CHECK(m > 0.0 && m <= 1.0, "a layer's top-p mass must be in (0, 1], got ", m);
  SEER_CHECK(dense_last_blocks >= 0, "dense_last_blocks must be >= 0, got ", dense_last_blocks);
  SEER_CHECK(local_blocks >= 0, "local_blocks must be >= 0, got ", local_blocks);
}

SelectionOptions SelectionOptions::for_layer(int layer) const {
  SelectionOptions o = *this;
  if (!layer_mass.empty()) {
    SEER_CHECK(layer >= 0 && size_t(layer) < layer_mass.size(), "no top-p mass for layer ", layer, " (",
               layer_mass.size(), " given)");
    o.mass = layer_mass[size_t(layer)];
    o.layer_mass.clear();
  }
  return o;
}

int64_t top_k_blocks(double density, int64_t nb) {
  return std::max<int64_t>(1, int64_t(std::floor((1.0 - std::sqrt(1.0 - density)) * double(nb))));
}

double top_k_density(const BlockLayout& layout, double density) {
  SelectionOptions{.density = density}.validate();
  double kept = 0;
  for (const int64_t nb : layout.blocks) {
    const int64_t k = std::min(top_k_blocks(density, nb), nb);
    // Rows 0..k-1 keep i + 1 blocks, the other nb - k rows keep k.
    kept += double(layout.heads) * (double(k) * double(k + 1) / 2 + double(nb - k) * double(k));
  }
  return kept / double(layout.causal_pairs());
}

BlockMask select_blocks(std::span<const float> logits, const BlockLayout& layout, const SelectionOptions& options) {
  options.validate();
  SEER_CHECK(options.layer_mass.empty(), "select_blocks chooses for one layer: pass options.for_layer(layer)");
  check_size(logits, "gate logits", layout.map_elements());
  BlockMask mask;
  mask.block = layout.block;
  mask.heads = layout.heads;
  mask.indptr.reserve(size_t(layout.total_rows() * layout.heads + 1));
  mask.indptr.push_back(0);
  std::vector<int32_t> order, kept;
  std::vector<double> prob;
  std::vector<uint64_t> weight;
  for (int64_t s = 0; s < layout.sequences(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)];
    const int64_t k = top_k_blocks(options.density, nb);
    for (int h = 0; h < layout.heads; ++h)
      for (int64_t i = 0; i < nb; ++i) {
        const float* row = logits.data() + layout.map_offset[size_t(s)] + (int64_t(h) * nb + i) * nb;
        const int64_t n = i + 1;
        kept.clear();
        if (i >= nb - options.dense_last_blocks) {
          kept.resize(size_t(n));
          std::iota(kept.begin(), kept.end(), 0);
        } else {
          order.resize(size_t(n));
          std::iota(order.begin(), order.end(), 0);
          const auto better = [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
          if (options.method == SelectionOptions::Method::top_k) {
            const int64_t keep = std::min(k, n);
            std::partial_sort(order.begin(), order.begin() + keep, order.end(), better);
            kept.assign(order.begin(), order.begin() + keep);
          } else {
            const float m = *std::max_element(row, row + n);
            if (options.method == SelectionOptions::Method::threshold) {
              prob.resize(size_t(n));
              double sum = 0;
              for (int64_t j = 0; j < n; ++j) sum += (prob[size_t(j)] = std::exp(double(row[j]) - double(m)));
              const int32_t best = *std::min_element(order.begin(), order.end(), better);
              for (int32_t j = 0; j < n; ++j)
                if (j == best || prob[size_t(j)] / sum > options.threshold) kept.push_back(j);
            } else {  // top_p: the most probable first until their share reaches `mass`
              // Integer weights (gate/mass_weight.h): the sums are exact, so the GPU's, in any
              // order, find the same cut.
              uint64_t total = 0;
              weight.resize(size_t(n));
              for (int64_t j = 0; j < n; ++j) total += (weight[size_t(j)] = mass_weight(row[j], m));
              const auto goal = uint64_t(std::ceil(options.mass * double(total)));
              std::sort(order.begin(), order.end(), better);
              uint64_t cumulative = 0;
              for (const int32_t j : order) {
                kept.push_back(j);
                cumulative += weight[size_t(j)];
                if (cumulative >= goal) break;
              }
            }
          }
          if (options.keep_sink) kept.push_back(0);
          for (int64_t j = std::max<int64_t>(0, i - options.local_blocks + 1); j <= i && options.local_blocks > 0; ++j)
            kept.push_back(int32_t(j));
          std::sort(kept.begin(), kept.end());
          kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
        }
        mask.indices.insert(mask.indices.end(), kept.begin(), kept.end());
        mask.indptr.push_back(int64_t(mask.indices.size()));
      }
  }
  return mask;
}

}  // namespace seer
