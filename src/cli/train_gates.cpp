// `seer train-gates`: SeerAttention gate post-training on the GPU with the LLM frozen.
//
// Each step (train/gpu_gate_step.h) runs the model forward with the ground-truth attention kernel in
// every layer and the gate's loss and gradient on the device; AdamW on the gate weights only, on
// the host.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/atomic_file.h"
#include "core/png.h"
#include "cuda/llama_cuda.h"
#include "model/llama_loader.h"
#include "train/gate_trainer.h"
#include "train/gpu_gate_step.h"
#include "train/token_corpus.h"
#include "train/training_log.h"

namespace seer::cli {
namespace {

struct TrainGatesOptions {
  std::string model;
  std::vector<std::string> data{"../shared/corpus/train"};
  int64_t seq_len = 8192, batch = 1;
  TrainOptions train;
  int gate_dim = 0;  // 0: the head dimension (the published gates)
  bool block_bias = false;  // gate/block_bias.h
  std::string gate_type = "Qavg_Kmaxminavg";  // gate/attn_gate.h
  std::string target_pooling = "max";  // -> train.target_pooling (attention/gt_pooling.h)
  std::string out = "gates.safetensors";
  int64_t checkpoint_every = 25;
  bool resume = false;
  uint64_t seed = 0;
};

std::string format_duration(double seconds) {
  char buf[32];
  const int s = int(seconds);
  std::snprintf(buf, sizeof buf, "%dm%02ds", s / 60, s % 60);
  return buf;
}

void run(const TrainGatesOptions& o) {
  const std::string path = resolve_model_path(o.model);
  const LlamaWeights weights = load_llama(path);
  const LlamaConfig& config = weights.config;
  const Tokenizer tokenizer = load_llama_tokenizer(path);
  const TokenCorpus corpus = TokenCorpus::load(o.data, tokenizer, o.seq_len);
  std::fprintf(stderr, "train-gates: %s, %lld documents, %lld tokens -> %lld sequences of %lld\n",
               config.name.c_str(), (long long)corpus.documents(), (long long)corpus.tokens(),
               (long long)corpus.sequences(), (long long)o.seq_len);

  const int gate_dim = o.gate_dim > 0 ? o.gate_dim : config.head_dim;
  const GateConfig gate_config{{config.q_heads, config.kv_heads, config.head_dim}, gate_dim, 64, o.block_bias,
                               parse_gate_type(o.gate_type)};
  std::vector<GateWeights<float>> init;
  for (int l = 0; l < config.layers; ++l) init.push_back(GateWeights<float>::random(gate_config, o.seed + uint64_t(l)));
  GateTrainer trainer(std::move(init), o.train);
  const std::string checkpoint = o.out + ".checkpoint";
  if (o.resume) {
    trainer.resume(checkpoint);
    std::fprintf(stderr, "train-gates: resumed from %s at step %lld\n", checkpoint.c_str(), (long long)trainer.step());
  }
  const std::map<std::string, std::string> metadata = {
      {"base_model", config.name}, {"base_model_file", std::filesystem::path(path).filename().string()},
      {"seerattn_sparsity_method", "nz_ratio"}, {"training_sequence_length", std::to_string(o.seq_len)},
      {"training_batch", std::to_string(o.batch)}, {"training_steps", std::to_string(o.train.steps)},
      {"training_target_power", std::to_string(o.train.target_power)},
      {"training_target_pooling", gt_pooling_name(o.train.target_pooling)},
      {"training_skip_fraction", std::to_string(o.train.skip_fraction)},
      {"training_tail_weight", std::to_string(o.train.tail.weight)},
      {"training_tail_local_blocks", std::to_string(o.train.tail.local_blocks)},
      {"training_block_bias", o.block_bias ? "true" : "false"}};

  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(weights);
  const Sequences seqs = Sequences::from_lengths(std::vector<int64_t>(size_t(o.batch), o.seq_len));
  cuda::LlamaRuntime runtime(model, seqs);
  GpuGateStep gpu_step(trainer, config, runtime);
  const int64_t t = seqs.tokens();

  // On --resume the log keeps its rows up to the checkpoint (the killed run's later ones are done
  // again), the curve shows every step and the elapsed time goes on from the log's.
  const std::string log_path = o.out + ".csv";
  const TrainingLog earlier = o.resume ? read_training_log(log_path, trainer.step()) : TrainingLog{};
  {
    std::string kept = std::string(kTrainingLogHeader) + '\n';  // replaces the log at once, or not at all
    for (const std::string& row : earlier.rows) kept += row + '\n';
    write_file_atomically(log_path, kept);
  }
  std::ofstream log(log_path, std::ios::app);
  SEER_CHECK(log.good(), "cannot write '", log_path, "'");
  std::vector<double> losses = earlier.losses;

  // Each layer's KL over the run's last kKlWindow steps: where the gates imitate their target least
  // (printed at the end and kept in the gates' metadata, training_layer_kl).
  constexpr int64_t kKlWindow = 100;
  std::vector<double> layer_kl_sum(size_t(config.layers), 0.0);
  int64_t layer_kl_steps = 0;

  const auto start = std::chrono::steady_clock::now();
  const int64_t first = trainer.step();
  while (trainer.step() < o.train.steps) {
    const int64_t step = trainer.step();
    const auto step_start = std::chrono::steady_clock::now();
    const std::vector<int32_t> tokens = corpus.batch(step, o.batch, o.seed);
    const double lr = trainer.learning_rate(step);
    const double loss = gpu_step.run(tokens);
    if (trainer.step() > o.train.steps - kKlWindow) {
      for (size_t l = 0; l < layer_kl_sum.size(); ++l) layer_kl_sum[l] += trainer.last_layer_kl()[l];
      ++layer_kl_steps;
    }
    const double now = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    const double per_step = now / double(trainer.step() - first);
    losses.push_back(loss);
    // Flushed every step, so that a killed run leaves at most its last row unfinished.
    log << step << ',' << loss << ',' << lr << ',' << double(t) / step_s << ',' << earlier.seconds + now
        << std::endl;
    std::fprintf(stderr, "\rstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %s   ", (long long)trainer.step(),
                 (long long)o.train.steps, loss, lr, double(t) / step_s,
                 format_duration(per_step * double(o.train.steps - trainer.step())).c_str());
    if (trainer.step() % o.checkpoint_every == 0 || trainer.step() == o.train.steps) {
      trainer.save(checkpoint, metadata, true);
    }
  }
  std::fprintf(stderr, "\n");
  std::map<std::string, std::string> final_metadata = metadata;
  if (layer_kl_steps > 0) {
    nlohmann::json kl = nlohmann::json::array();
    for (const double sum : layer_kl_sum) kl.push_back(std::round(sum / double(layer_kl_steps) * 1e6) / 1e6);
    final_metadata["training_layer_kl"] = kl.dump();
    std::printf("train-gates: KL per layer over the last %lld steps: %s\n", (long long)layer_kl_steps,
                kl.dump().c_str());
  }
  trainer.save(o.out, final_metadata, false);
  write_png(o.out + ".loss.png", plot_series(losses));
  std::printf("train-gates: %lld steps, final loss %.4f, gates in %s (log %s, curve %s.loss.png)\n",
              (long long)trainer.step(), losses.empty() ? NAN : losses.back(), o.out.c_str(), log_path.c_str(),
              o.out.c_str());
}

}  // namespace

void add_train_gates_command(CLI::App& app) {
  auto o = std::make_shared<TrainGatesOptions>();
  CLI::App* cmd = app.add_subcommand("train-gates", "train SeerAttention gates by self-distillation (GPU)");
  cmd->add_option("--model", o->model, "GGUF file or Hugging Face directory (default: the built-in model)");
  cmd->add_option("--data", o->data, "text files or folders to train on")->delimiter(',');
  cmd->add_option("--seq-len", o->seq_len, "tokens per training sequence")->check(CLI::Range(int64_t(64), int64_t(1) << 20));
  cmd->add_option("--batch", o->batch, "sequences per step")->check(CLI::Range(int64_t(1), int64_t(1024)));
  cmd->add_option("--steps", o->train.steps, "optimizer steps")->check(CLI::PositiveNumber);
  cmd->add_option("--lr", o->train.lr, "peak learning rate (AdamW)")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", o->train.warmup, "linear warm-up steps before the cosine decay");
  cmd->add_option("--weight-decay", o->train.weight_decay, "AdamW weight decay");
  cmd->add_option("--target-power", o->train.target_power,
                  "raise each ground-truth row to this power and renormalize (1: the published target; < 1 "
                  "flattens rows, weighing the blocks near a top-k cut more)")
      ->check(CLI::Range(1e-3, 16.0));
  cmd->add_option("--target-pooling", o->target_pooling,
                  "pool each 64x64 block of the attention by its max probability (max, the published target), "
                  "its rows' mean share of attention (mass) or their largest share (peak-mass)")
      ->check(CLI::IsMember(gt_pooling_names()));
  cmd->add_option("--skip-fraction", o->train.skip_fraction,
                  "leading block rows of each sequence left out of the loss (the published 0.25)")
      ->check(CLI::Range(0.0, 0.99));
  cmd->add_option("--tail-weight", o->train.tail.weight,
                  "add this times the KL over each row's tail, the blocks past the sink and the local blocks, "
                  "both sides renormalized over them (0: the published loss; seer's extension, gate/attn_gate.h)")
      ->check(CLI::Range(0.0, 1000.0));
  cmd->add_option("--tail-local-blocks", o->train.tail.local_blocks,
                  "blocks up to the diagonal that the tail leaves out, as a selection's --local-blocks")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--gate-dim", o->gate_dim, "gate dimension d_g (default: the head dimension)");
  cmd->add_option("--gate-type", o->gate_type,
                  "pool q by mean (Qavg_Kmaxminavg, the published gate) or by max, min and mean through a Q "
                  "projection (Qmaxminavg_Kmaxminavg)")
      ->check(CLI::IsMember(gate_type_names()));
  cmd->add_flag("--block-bias", o->block_bias,
                "also learn a logit bias per query head and block distance, and one for the sink block (seer's "
                "extension of the published gate: gate/block_bias.h)");
  cmd->add_option("--out", o->out, "output safetensors (also <out>.checkpoint, <out>.csv, <out>.loss.png)");
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "steps between checkpoints")->check(CLI::PositiveNumber);
  cmd->add_flag("--resume", o->resume, "continue from <out>.checkpoint");
  cmd->add_option("--seed", o->seed, "seed for the initialization and the data order");
  cmd->callback([o] {
    o->train.target_pooling = parse_gt_pooling(o->target_pooling);
    run(*o);
  });
}

}  // namespace seer::cli
