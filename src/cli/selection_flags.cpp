#include "cli/selection_flags.h"

#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "model/gates.h"

namespace seer::cli {

void SelectionFlags::add_to(CLI::App& cmd) {
  CLI::Option* const selections[] = {
      cmd.add_option("--density", density, "SeerAttention: top-k block selection at this density")
          ->check(CLI::Range(1e-6, 1.0)),
      cmd.add_option("--threshold", threshold, "SeerAttention: keep the blocks above this probability")
          ->check(CLI::Range(0.0, 1.0)),
      cmd.add_option("--mass", mass,
                     "SeerAttention: top-p, each row's most probable blocks up to this mass (default 0.6, about "
                     "density 0.1 at 8k tokens)")
          ->check(CLI::Range(1e-6, 1.0)),
      cmd.add_option("--budget", budget,
                     "SeerAttention: the gates' calibrated per-layer top-p masses for this density (seer calibrate)")
          ->check(CLI::Range(1e-6, 1.0))};
  for (CLI::Option* a : selections)
    for (CLI::Option* b : selections)
      if (a != b) a->excludes(b);
  cmd.add_flag_function(
      "--sink,!--no-sink", [this](int64_t count) { sink = count > 0; },
      "SeerAttention: always keep the first key block, the attention sink (default: on)");
  cmd.add_option_function<int>(
         "--local-blocks", [this](int n) { local_blocks = n; },
         "SeerAttention: always keep this many key blocks up to the diagonal (default: 3)")
      ->check(CLI::Range(0, 1 << 20));
}

void SelectionFlags::require_seer(bool seer, bool gates_given) const {
  SEER_CHECK(seer || (!gates_given && !any()),
             "--gates, --density, --threshold, --mass, --budget, --sink and --local-blocks apply to --attn seer only");
}

SelectionOptions SelectionFlags::resolve(const std::string& gates_path, int layers, int64_t tokens) const {
  using M = SelectionOptions::Method;
  SelectionOptions s{.method = M::top_p, .mass = kDefaultMass, .keep_sink = kDefaultKeepSink,
                     .local_blocks = kDefaultLocalBlocks};
  if (budget) {
    SEER_CHECK(!sink && !local_blocks, "--budget keeps the forced blocks it was calibrated with; drop --sink, "
               "--no-sink and --local-blocks");
    const GateBudgets budgets = load_gate_budgets(gates_path, layers);
    if (tokens * 2 < budgets.context || tokens > 2 * budgets.context)
      std::fprintf(stderr,
                   "seer: warning: the budgets were calibrated at %lld tokens; at %lld the kept density differs "
                   "from %g\n",
                   (long long)budgets.context, (long long)tokens, *budget);
    return budget_selection(budgets, *budget);
  }
  if (density) {
    s.method = M::top_k;
    s.density = *density;
  } else if (threshold) {
    s.method = M::threshold;
    s.threshold = *threshold;
  } else if (mass) {
    s.mass = *mass;
  }
  if (sink) s.keep_sink = *sink;
  if (local_blocks) s.local_blocks = *local_blocks;
  return s;
}

}  // namespace seer::cli
