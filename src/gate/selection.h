// Block selection: gate logits [H_q, nb, nb] per sequence -> CSR block mask.
#pragma once
#include <span>
#include <vector>

#include "attention/block_mask.h"
#include "core/sequences.h"

namespace seer {

struct SelectionOptions {
  enum class Method { top_k, threshold, top_p };
  Method method = Method::top_k;
  // top_k: keep k = max(1, floor((1 - sqrt(1 - density)) * nb)) blocks of each row (at most i + 1),
  // which makes the kept fraction of the causal triangle about `density`. Ties go to the lower j.
  double density = 0.1;
  // threshold: keep blocks whose softmax probability over j <= i exceeds it (and always the row's best).
  double threshold = 2e-3;
  // top_p: keep the fewest most probable blocks (softmax over j <= i; ties to the lower j) whose
  // probabilities sum to at least `mass`: a row with one dominant block keeps one, a flat row keeps
  // most of its blocks, so the budget goes where a row's attention is spread out. Probabilities are
  // counted in units of 2^-32 of the row's largest (blocks below that weigh nothing).
  double mass = 0.9;
  int dense_last_blocks = 0;   // the last N query blocks of each sequence keep every causal block
  bool keep_sink = false;  // always keep key block 0 (the attention sink)
  int local_blocks = 0;    // always keep key blocks i - local_blocks + 1 .. i (1: the diagonal block)
  // top_p: one mass per layer (calibrated budgets, gate/budget.h) in place of `mass`; empty: `mass`
  // everywhere.
  std::vector<double> layer_mass = {};

  void validate() const;
  // The options for layer `layer`: `mass` replaced by layer_mass[layer] when there is one.
  SelectionOptions for_layer(int layer) const;
};

int64_t top_k_blocks(double density, int64_t nb);
// The fraction of the layout's causal blocks that top-k at `density` keeps (row i of a sequence of
// nb blocks keeps min(top_k_blocks, i + 1)), whatever the logits: below `density` (0.091 at 0.1 for
// 128 blocks), as the published k rounds down and the first rows have fewer blocks than k. The
// heuristics of the accuracy table aim at it, so that every method is compared at the density the
// trained gate's top-k really reaches.
double top_k_density(const BlockLayout& layout, double density);

// logits are packed per sequence as [H, nb, nb] following `layout` (entries above the diagonal ignored).
// `options` are one layer's (no layer_mass: see SelectionOptions::for_layer).
BlockMask select_blocks(std::span<const float> logits, const BlockLayout& layout, const SelectionOptions& options);

}  // namespace seer
