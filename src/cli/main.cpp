// seer: learned block-sparse attention (SeerAttention). One binary, one subcommand per job.
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"seer: learned block-sparse attention (SeerAttention)"};
  app.require_subcommand(1);
  seer::cli::add_demo_command(app);
  seer::cli::add_info_command(app);
  seer::cli::add_generate_command(app);
  seer::cli::add_perplexity_command(app);
#ifdef SEER_HAVE_CUDA
  seer::cli::add_bench_command(app);
  seer::cli::add_bench_model_command(app);
  seer::cli::add_train_gates_command(app);
  seer::cli::add_eval_sparsity_command(app);
  seer::cli::add_calibrate_command(app);
  seer::cli::add_inspect_command(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const seer::Error& e) {
    std::fprintf(stderr, "seer: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
