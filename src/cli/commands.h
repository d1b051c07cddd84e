// Subcommands of the `seer` binary; each registers its options and the function that runs it.
#pragma once
#include <CLI/CLI.hpp>

namespace seer::cli {

// SeerAttention's block selection in seer's commands unless flags say otherwise: top-p on the gate's
// block probabilities at mass 0.6, plus the attention-sink block and the 3 key blocks up to the
// diagonal — (p+) in bench/ACCURACY.md: about density 0.1 at 8k tokens, with lower perplexity and
// better pass-key retrieval there than top-k (the paper's selection) at the same density.
inline constexpr double kDefaultMass = 0.6;
inline constexpr bool kDefaultKeepSink = true;
inline constexpr int kDefaultLocalBlocks = 3;

void add_demo_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_perplexity_command(CLI::App& app);
#ifdef SEER_HAVE_CUDA
void add_bench_command(CLI::App& app);
void add_bench_model_command(CLI::App& app);
void add_train_gates_command(CLI::App& app);
void add_eval_sparsity_command(CLI::App& app);
void add_calibrate_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
#endif

}  // namespace seer::cli
