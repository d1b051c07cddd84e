// SeerAttention's block-selection flags, shared by `seer perplexity` and `seer generate`.
#pragma once
#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "gate/selection.h"

namespace seer::cli {

struct SelectionFlags {
  std::optional<double> density, threshold, mass, budget;  // at most one of them
  std::optional<bool> sink;
  std::optional<int> local_blocks;

  // --density (top-k), --threshold, --mass (top-p) and --budget (the gates' calibrated per-layer
  // masses), mutually exclusive; --sink/--no-sink and --local-blocks.
  void add_to(CLI::App& cmd);
  bool any() const { return density || threshold || mass || budget || sink || local_blocks; }
  // The selection they ask for, top-p at kDefaultMass when none; --budget reads the gates file at
  // `gates_path`. The forced blocks are on unless the flags say otherwise (with --budget: the
  // budgets' own).
  SelectionOptions resolve(const std::string& gates_path, int layers) const;
};

}  // namespace seer::cli
