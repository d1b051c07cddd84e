// Test helpers: fresh random inputs and plain double-precision references written independently of
// the library's tiled code (one row at a time, the textbook formula).
#pragma once
#include <cmath>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "attention/block_mask.h"
#include "attention/head_dims.h"
#include "core/bf16.h"
#include "core/sequences.h"

namespace seer::test {

inline std::mt19937_64& rng() {
  static std::mt19937_64 generator(std::random_device{}());
  return generator;
}

template <typename T>
std::vector<T> random_values(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<T> out(n);
  for (T& x : out) x = T(normal(rng()));
  return out;
}

// One attention test case: sequence lengths and head geometry.
struct AttentionShape {
  std::vector<int64_t> lengths;
  int q_heads, kv_heads, head_dim;
};

// A random causal block mask keeping each block with probability `keep`; keep_diagonal ensures
// every row attends to something (rows may otherwise be empty).
inline BlockMask random_mask(const BlockLayout& layout, double keep, bool keep_diagonal) {
  std::bernoulli_distribution coin(keep);
  BlockMask mask{layout.block, layout.heads, {0}, {}};
  for (int64_t s = 0; s < layout.sequences(); ++s)
    for (int h = 0; h < layout.heads; ++h)
      for (int64_t i = 0; i < layout.blocks[size_t(s)]; ++i) {
        for (int32_t j = 0; j <= i; ++j)
          if ((keep_diagonal && j == i) || coin(rng())) mask.indices.push_back(j);
        mask.indptr.push_back(int64_t(mask.indices.size()));
      }
  return mask;
}

inline std::vector<float> poisoned(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

// Dense causal attention in double, optionally restricted to the blocks a mask keeps.
// out [T, H_q, d], lse [H_q, T].
template <typename T>
void reference_attention(std::span<const T> q, std::span<const T> k, std::span<const T> v, const Sequences& seqs,
                         const HeadDims& dims, std::vector<double>& out, std::vector<double>& lse,
                         const BlockMask* mask = nullptr) {
  const int d = dims.head_dim, g = dims.group();
  out.assign(q.size(), 0.0);
  lse.assign(size_t(seqs.tokens() * dims.q_heads), -std::numeric_limits<double>::infinity());
  const BlockLayout layout(seqs, mask ? mask->block : 64, dims.q_heads);
  for (int64_t s = 0; s < seqs.count(); ++s)
    for (int h = 0; h < dims.q_heads; ++h)
      for (int64_t r = 0; r < seqs.length(s); ++r) {
        const int64_t tr = seqs.start(s) + r;
        std::vector<double> score(size_t(r + 1), -std::numeric_limits<double>::infinity());
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t c = 0; c <= r; ++c) {
          if (mask) {
            const int64_t row = mask_row(layout, s, h, r / mask->block);
            bool kept = false;
            for (int64_t e = mask->indptr[size_t(row)]; e < mask->indptr[size_t(row) + 1]; ++e)
              kept |= mask->indices[size_t(e)] == c / mask->block;
            if (!kept) continue;
          }
          const int64_t tc = seqs.start(s) + c;
          double dot = 0;
          for (int x = 0; x < d; ++x)
            dot += to_double(q[size_t((tr * dims.q_heads + h) * d + x)]) *
                   to_double(k[size_t((tc * dims.kv_heads + h / g) * d + x)]);
          score[size_t(c)] = dot / std::sqrt(double(d));
          m = std::max(m, score[size_t(c)]);
        }
        if (m == -std::numeric_limits<double>::infinity()) continue;
        double l = 0;
        for (int64_t c = 0; c <= r; ++c) l += std::exp(score[size_t(c)] - m);
        for (int64_t c = 0; c <= r; ++c) {
          const double p = std::exp(score[size_t(c)] - m) / l;
          if (p == 0) continue;
          const int64_t tc = seqs.start(s) + c;
          for (int x = 0; x < d; ++x)
            out[size_t((tr * dims.q_heads + h) * d + x)] += p * to_double(v[size_t((tc * dims.kv_heads + h / g) * d + x)]);
        }
        lse[size_t(h * seqs.tokens() + tr)] = m + std::log(l);
      }
}

// ||x - ref|| / ||ref||; NaN anywhere in x makes it NaN, so poisoned outputs never pass.
template <typename X, typename R>
double relative_error(const std::vector<X>& x, const std::vector<R>& ref) {
  double num = 0, den = 0;
  for (size_t n = 0; n < x.size(); ++n) {
    const double diff = double(x[n]) - double(ref[n]);
    num += diff * diff;
    den += double(ref[n]) * double(ref[n]);
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Max |x - ref| over finite entries; a mismatch in finiteness (NaN, or inf against finite) is +inf.
// x and ref: vectors or spans of numbers.
template <typename Xs, typename Rs>
double max_abs_error(const Xs& x, const Rs& ref) {
  double worst = 0;
  for (size_t n = 0; n < x.size(); ++n) {
    const double a = double(x[n]), b = double(ref[n]);
    if (std::isinf(a) && std::isinf(b) && (a > 0) == (b > 0)) continue;
    if (!std::isfinite(a) || !std::isfinite(b)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::abs(a - b));
  }
  return worst;
}

}  // namespace seer::test
