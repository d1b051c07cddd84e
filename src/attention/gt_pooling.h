// How the ground truth pools a 64×64 block of the attention probabilities into one score.
//
// max: the published target (SeerAttention): the largest probability in the block. A single sharp
// key in one row ranks its block high.
// mass: the block's share of its rows' attention, averaged over the block's rows: Σ_keys p(r, key)
// averaged over rows r. It is what a block-sparse forward loses by skipping the block (the lost
// share of each row's softmax), so top-k on it keeps the most attention a k-block row can keep.
// Either way each block row of the map is normalized to sum 1 over its causal blocks.
#pragma once
#include <string>

#include "core/error.h"

namespace seer {

enum class GtPooling { max, mass };

inline const char* gt_pooling_name(GtPooling p) { return p == GtPooling::max ? "max" : "mass"; }

inline GtPooling parse_gt_pooling(const std::string& s) {
  if (s == "max") return GtPooling::max;
  if (s == "mass") return GtPooling::mass;
  fail("ground-truth pooling must be 'max' or 'mass', got '", s, "'");
}

}  // namespace seer
