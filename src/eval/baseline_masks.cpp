#include "eval/baseline_masks.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gate/selection.h"

namespace seer {
namespace {

// Builds a mask row by row from keep(s, h, i, j), in mask-row order.
template <typename Keep>
BlockMask build_mask(const BlockLayout& layout, Keep&& keep) {
  BlockMask mask{layout.block, layout.heads, {0}, {}};
  for (int64_t s = 0; s < layout.sequences(); ++s)
    for (int h = 0; h < layout.heads; ++h)
      for (int64_t i = 0; i < layout.blocks[size_t(s)]; ++i) {
        for (int32_t j = 0; j <= i; ++j)
          if (keep(s, h, i, j)) mask.indices.push_back(j);
        mask.indptr.push_back(int64_t(mask.indices.size()));
      }
  return mask;
}

// The smallest parameter n in [0, max_n] whose mask reaches `density` (masks grow with n).
template <typename Make>
BlockMask smallest_reaching(const BlockLayout& layout, double density, int64_t max_n, Make&& make) {
  int64_t lo = 0, hi = max_n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (mask_density(make(mid), layout) >= density) hi = mid;
    else lo = mid + 1;
  }
  return make(lo);
}

int64_t longest(const BlockLayout& layout) { return *std::max_element(layout.blocks.begin(), layout.blocks.end()); }

}  // namespace

BlockMask streaming_mask(const BlockLayout& layout, double density) {
  SelectionOptions{.density = density}.validate();
  return smallest_reaching(layout, density, longest(layout), [&](int64_t window) {
    return build_mask(layout, [&](int64_t, int, int64_t i, int32_t j) { return j == 0 || j > i - std::max<int64_t>(1, window); });
  });
}

BlockMask vertical_slash_mask(std::span<const float> last_rows, const BlockLayout& layout, double density) {
  SelectionOptions{.density = density}.validate();
  const int64_t max_nb = longest(layout);
  // Per (sequence, head): key blocks and offsets sorted by the last row's probability.
  std::vector<std::vector<int64_t>> vertical_rank, slash_rank;
  for (int64_t s = 0; s < layout.sequences(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)];
    for (int h = 0; h < layout.heads; ++h) {
      const float* row = last_rows.data() + (layout.row_offset[size_t(s)] * layout.heads + int64_t(h) * nb);
      std::vector<int64_t> order(static_cast<size_t>(nb));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
      std::vector<int64_t> vrank(static_cast<size_t>(nb)), srank(static_cast<size_t>(nb));
      for (int64_t r = 0; r < nb; ++r) {
        vrank[size_t(order[size_t(r)])] = r;            // column j's rank
        srank[size_t(nb - 1 - order[size_t(r)])] = r;   // offset (nb-1) - j's rank
      }
      vertical_rank.push_back(std::move(vrank));
      slash_rank.push_back(std::move(srank));
    }
  }
  return smallest_reaching(layout, density, max_nb, [&](int64_t n) {
    return build_mask(layout, [&](int64_t s, int h, int64_t i, int32_t j) {
      const size_t key = size_t(s * layout.heads + h);
      return vertical_rank[key][size_t(j)] < n || slash_rank[key][size_t(i - j)] < n;
    });
  });
}

BlockMask quest_mask(std::span<const bf16> q, std::span<const bf16> k, const Sequences& seqs, const HeadDims& dims,
                     double density) {
  dims.validate();
  check_tokens_heads_dim(q, "quest q", seqs.tokens(), dims.q_heads, dims.head_dim);
  check_tokens_heads_dim(k, "quest k", seqs.tokens(), dims.kv_heads, dims.head_dim);
  const BlockLayout layout(seqs, 64, dims.q_heads);
  const int d = dims.head_dim;
  std::vector<float> bounds(size_t(layout.map_elements()));
  for (int64_t s = 0; s < seqs.count(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)], t0 = seqs.start(s), len = seqs.length(s);
    // Channel-wise min/max of k per key block and mean q per query block.
    std::vector<float> kmax(size_t(nb * dims.kv_heads * d), -INFINITY), kmin(kmax.size(), INFINITY);
    std::vector<float> qmean(size_t(nb * dims.q_heads * d), 0.f);
    for (int64_t t = 0; t < len; ++t) {
      const int64_t b = t / 64;
      for (int h = 0; h < dims.kv_heads; ++h)
        for (int c = 0; c < d; ++c) {
          const float x = float(k[size_t(((t0 + t) * dims.kv_heads + h) * d + c)]);
          float& mx = kmax[size_t((b * dims.kv_heads + h) * d + c)];
          float& mn = kmin[size_t((b * dims.kv_heads + h) * d + c)];
          mx = std::max(mx, x), mn = std::min(mn, x);
        }
      const float weight = 1.0f / float(std::min<int64_t>(64, len - b * 64));
      for (int h = 0; h < dims.q_heads; ++h)
        for (int c = 0; c < d; ++c)
          qmean[size_t((b * dims.q_heads + h) * d + c)] += weight * float(q[size_t(((t0 + t) * dims.q_heads + h) * d + c)]);
    }
    for (int h = 0; h < dims.q_heads; ++h)
      for (int64_t i = 0; i < nb; ++i)
        for (int64_t j = 0; j <= i; ++j) {
          const float* qm = &qmean[size_t((i * dims.q_heads + h) * d)];
          const float* hi = &kmax[size_t((j * dims.kv_heads + h / dims.group()) * d)];
          const float* lo = &kmin[size_t((j * dims.kv_heads + h / dims.group()) * d)];
          float bound = 0.f;
          for (int c = 0; c < d; ++c) bound += std::max(qm[c] * hi[c], qm[c] * lo[c]);
          bounds[size_t(layout.map_offset[size_t(s)] + (h * nb + i) * nb + j)] = bound;
        }
  }
  return select_blocks(bounds, layout, {.density = density});
}

}  // namespace seer
