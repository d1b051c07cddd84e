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
  // Refuses these flags and --gates (`gates_given`) when the attention is not SeerAttention.
  void require_seer(bool seer, bool gates_given) const;
  // The selection they ask for, top-p at kDefaultMass when none; --budget reads the gates file at
  // `gates_path` and keeps the forced blocks it was calibrated with (--sink and --local-blocks are
  // refused with it), warning when `tokens` is far from the length it was calibrated at. The forced
  // blocks are on unless the flags say otherwise.
  SelectionOptions resolve(const std::string& gates_path, int layers, int64_t tokens) const;
};

}  // namespace seer::cli
