// How the ground truth pools a 64×64 block of the attention probabilities into one score.
//
// max: the published target (SeerAttention): the largest probability in the block. A single sharp
// key in one row ranks its block high.
// mass: the block's share of its rows' attention, averaged over the block's rows: Σ_keys p(r, key)
// averaged over rows r. It is what a block-sparse forward loses by skipping the block (the lost
// share of each row's softmax), so top-k on it keeps the most attention a k-block row can keep.
// peak_mass: the largest share of any one row's attention in the block, max over rows r of
// Σ_keys p(r, key): a few rows that need the block (a retrieval) rank it high, as with max.
// Each block row of the map is then normalized to sum 1 over its causal blocks.
#pragma once
#include <string>
#include <vector>

#include "core/error.h"

namespace seer {

enum class GtPooling { max, mass, peak_mass };
inline constexpr GtPooling kGtPoolings[] = {GtPooling::max, GtPooling::mass, GtPooling::peak_mass};

inline const char* gt_pooling_name(GtPooling p) {
  return p == GtPooling::max ? "max" : p == GtPooling::mass ? "mass" : "peak-mass";
}

// Per row and key block the pooling needs the block's log-sum-exp (the mass poolings) or its max.
inline bool gt_pooling_uses_mass(GtPooling p) { return p != GtPooling::max; }
// Over the block's rows it takes the sum (mass) or the max.
inline bool gt_pooling_sums_rows(GtPooling p) { return p == GtPooling::mass; }

// Every pooling's name, for flag checks.
inline std::vector<std::string> gt_pooling_names() {
  std::vector<std::string> names;
  for (const GtPooling p : kGtPoolings) names.emplace_back(gt_pooling_name(p));
  return names;
}

// The inverse of gt_pooling_name; throws seer::Error for anything else.
inline GtPooling parse_gt_pooling(const std::string& name) {
  for (const GtPooling p : kGtPoolings)
    if (name == gt_pooling_name(p)) return p;
  fail("ground-truth pooling must be max, mass or peak-mass, got '", name, "'");
}

}  // namespace seer
