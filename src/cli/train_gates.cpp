// `seer train-gates`: SeerAttention gate post-training on the GPU with the LLM frozen.
//
// Each step (train/gpu_gate_step.h) runs the model forward with the ground-truth attention kernel in
// every layer, the gate's loss and gradient and AdamW on the gate weights only, all on the device.
// With --gpus N the run is data-parallel: each GPU holds the model and the gates, takes its own
// --batch sequences of each step's N × batch, and the gradients are averaged over the GPUs (NCCL)
// before every GPU takes the same AdamW step; GPU 0 writes the checkpoints and logs.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/atomic_file.h"
#include "core/png.h"
#include "cuda/communicator.h"
#include "cuda/llama_cuda.h"
#include "model/llama_loader.h"
#include "train/checkpoints.h"
#include "train/gate_trainer.h"
#include "train/gpu_gate_step.h"
#include "train/token_corpus.h"
#include "train/training_log.h"

namespace seer::cli {
namespace {

// What each gates file trained in one run sets for itself: the gate's shape, the loss, the optimizer
// (`--variant` trains more than one on the same forwards).
struct GateRunOptions {
  std::string out = "gates.safetensors";
  TrainOptions train;  // steps and target_pooling: the run's, shared by every gates file
  int gate_dim = 0;  // 0: the head dimension (the published gates)
  bool block_bias = false;  // gate/block_bias.h
  std::string gate_type = "Qavg_Kmaxminavg";  // gate/attn_gate.h
  std::optional<uint64_t> init_seed;  // the gates' random initialization; default: the run's --seed
};

struct TrainGatesOptions {
  std::string model;
  std::vector<std::string> data{"../shared/corpus/train"};
  int64_t seq_len = 8192, batch = 1, steps = 300;
  int gpus = 1;  // data-parallel ranks
  std::string target_pooling = "max";  // attention/gt_pooling.h
  GateRunOptions gates;                     // the first (or only) gates file
  std::vector<std::string> variant_flags;   // --variant, one string of flags each
  std::vector<GateRunOptions> variants;     // parsed from them
  int64_t checkpoint_every = 25;
  bool resume = false;
  uint64_t seed = 0;
};

// The flags of GateRunOptions, on `cmd` (train-gates itself, or the parser of one --variant).
void add_gate_run_options(CLI::App* cmd, GateRunOptions* g) {
  cmd->add_option("--out", g->out, "output safetensors (also <out>.checkpoint, <out>.csv, <out>.loss.png)");
  cmd->add_option("--lr", g->train.lr, "peak learning rate (AdamW)")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", g->train.warmup, "linear warm-up steps before the cosine decay");
  cmd->add_option("--weight-decay", g->train.weight_decay, "AdamW weight decay");
  cmd->add_option("--target-power", g->train.target_power,
                  "raise each ground-truth row to this power and renormalize (1: the published target; < 1 "
                  "flattens rows, weighing the blocks near a top-k cut more)")
      ->check(CLI::Range(1e-3, 16.0));
  cmd->add_option("--skip-fraction", g->train.skip_fraction,
                  "leading block rows of each sequence left out of the loss (the published 0.25)")
      ->check(CLI::Range(0.0, 0.99));
  cmd->add_option("--tail-weight", g->train.tail.weight,
                  "add this times the KL over each row's tail, the blocks past the sink and the local blocks, "
                  "both sides renormalized over them (0: the published loss; seer's extension, gate/attn_gate.h)")
      ->check(CLI::Range(0.0, 1000.0));
  cmd->add_option("--tail-local-blocks", g->train.tail.local_blocks,
                  "blocks up to the diagonal that the tail leaves out, as a selection's --local-blocks")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--gate-dim", g->gate_dim, "gate dimension d_g (default: the head dimension)");
  cmd->add_option("--gate-type", g->gate_type,
                  "pool q by mean (Qavg_Kmaxminavg, the published gate) or by max, min and mean through a Q "
                  "projection (Qmaxminavg_Kmaxminavg)")
      ->check(CLI::IsMember(gate_type_names()));
  cmd->add_option("--init-seed", g->init_seed,
                  "seed of the gates' random initialization (default: --seed); gates files that differ only in "
                  "it show what the initialization alone moves");
  cmd->add_flag("--block-bias", g->block_bias,
                "also learn a logit bias per query head and block distance, and one for the sink block (seer's "
                "extension of the published gate: gate/block_bias.h)");
}

// Parses each --variant's flags, as train-gates parses its own gate flags, and gives every gates
// file the run's shared settings. Runs before anything is loaded, so that bad flags cost nothing.
void parse_variants(TrainGatesOptions& o) {
  o.gates.train.steps = o.steps;
  o.gates.train.target_pooling = parse_gt_pooling(o.target_pooling);
  std::set<std::string> outs{o.gates.out};
  for (const std::string& flags : o.variant_flags) {
    CLI::App parser("one --variant's gates", "--variant");
    parser.set_help_flag();  // its help is train-gates's
    GateRunOptions g;
    g.out.clear();
    add_gate_run_options(&parser, &g);
    try {
      parser.parse(flags, false);
    } catch (const CLI::ParseError& e) {
      throw Error("--variant '" + flags + "': " + e.what());
    }
    SEER_CHECK(!g.out.empty(), "--variant '", flags, "' needs its own --out");
    SEER_CHECK(outs.insert(g.out).second, "--variant '", flags, "': ", g.out, " is another gates file's --out too");
    g.train.steps = o.steps;
    g.train.target_pooling = o.gates.train.target_pooling;
    o.variants.push_back(std::move(g));
  }
  o.gates.train.validate();
  for (const GateRunOptions& g : o.variants) {
    try {
      g.train.validate();
    } catch (const Error& e) {
      throw Error("--variant with --out " + g.out + ": " + e.what());
    }
  }
}

// One gates file's training: its trainer, checkpoint, log, loss curve and per-layer KL.
struct GateRun {
  GateRun(GateRunOptions o, GateTrainer t) : options(std::move(o)), trainer(std::move(t)) {}
  GateRunOptions options;
  GateTrainer trainer;
  std::map<std::string, std::string> metadata;
  TrainingLog earlier;  // the log's rows before the step a --resume continues from
  std::ofstream log;
  std::vector<double> losses, layer_kl_sum;
  std::string checkpoint() const { return options.out + ".checkpoint"; }
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

  std::vector<GateRunOptions> all{o.gates};
  all.insert(all.end(), o.variants.begin(), o.variants.end());
  std::vector<std::unique_ptr<GateRun>> runs;
  for (const GateRunOptions& g : all) {
    const int gate_dim = g.gate_dim > 0 ? g.gate_dim : config.head_dim;
    const GateConfig gate_config{{config.q_heads, config.kv_heads, config.head_dim}, gate_dim, 64, g.block_bias,
                                 parse_gate_type(g.gate_type)};
    std::vector<GateWeights<float>> init;
    for (int l = 0; l < config.layers; ++l)
      init.push_back(GateWeights<float>::random(gate_config, g.init_seed.value_or(o.seed) + uint64_t(l)));
    runs.push_back(std::make_unique<GateRun>(g, GateTrainer(std::move(init), g.train)));
    GateRun& r = *runs.back();
    r.metadata = {{"base_model", config.name},
                  {"base_model_file", std::filesystem::path(path).filename().string()},
                  {"seerattn_sparsity_method", "nz_ratio"},
                  {"training_sequence_length", std::to_string(o.seq_len)},
                  {"training_batch", std::to_string(o.batch * o.gpus)},
                  {"training_gpus", std::to_string(o.gpus)},
                  {"training_steps", std::to_string(o.steps)},
                  {"training_target_power", std::to_string(g.train.target_power)},
                  {"training_target_pooling", gt_pooling_name(g.train.target_pooling)},
                  {"training_skip_fraction", std::to_string(g.train.skip_fraction)},
                  {"training_block_bias", g.block_bias ? "true" : "false"}};
    if (g.init_seed) r.metadata["training_init_seed"] = std::to_string(*g.init_seed);
    if (g.train.tail.weight > 0) {
      r.metadata["training_tail_weight"] = std::to_string(g.train.tail.weight);
      r.metadata["training_tail_local_blocks"] = std::to_string(g.train.tail.local_blocks);
    }
  }
  if (o.resume) {  // every gates file at the latest step they all have (train/checkpoints.h)
    std::vector<std::string> paths;
    for (const auto& r : runs) paths.push_back(r->checkpoint());
    const CommonCheckpoint common = common_checkpoint(paths);
    for (size_t i = 0; i < runs.size(); ++i) {
      runs[i]->trainer.resume(common.files[i]);
      std::fprintf(stderr, "train-gates: resumed from %s at step %lld\n", common.files[i].c_str(),
                   (long long)common.step);
    }
  }

  // One copy of the model, the runtime and the step per GPU; GPU 0 steps the runs' own trainers,
  // the others copies of them in the same state (data parallelism keeps them equal).
  const Sequences seqs = Sequences::from_lengths(std::vector<int64_t>(size_t(o.batch), o.seq_len));
  const int64_t t = seqs.tokens();
  struct Rank {
    std::vector<GateTrainer> copies;
    std::unique_ptr<cuda::DeviceLlama> model;
    std::unique_ptr<cuda::LlamaRuntime> runtime;
    std::unique_ptr<GpuGateStep> step;
  };
  cuda::CommunicatorGroup group(o.gpus);
  cuda::RankThreads threads(o.gpus);  // one per GPU for the whole run: a step wakes them
  std::vector<Rank> ranks(static_cast<size_t>(o.gpus));
  threads.run([&](int rank) {
    Rank& k = ranks[size_t(rank)];
    std::vector<GateTrainer*> trainers;
    if (rank > 0)
      for (const auto& r : runs) k.copies.push_back(r->trainer);
    for (size_t i = 0; i < runs.size(); ++i) trainers.push_back(rank == 0 ? &runs[i]->trainer : &k.copies[i]);
    k.model = std::make_unique<cuda::DeviceLlama>(cuda::DeviceLlama::upload(weights));
    k.runtime = std::make_unique<cuda::LlamaRuntime>(*k.model, seqs);
    k.step = std::make_unique<GpuGateStep>(trainers, config, *k.runtime, o.gpus > 1 ? &group.rank(rank) : nullptr);
  }, &group);
  if (o.gpus > 1) std::fprintf(stderr, "train-gates: data-parallel over %d GPUs (%s)\n", o.gpus,
                               cuda::CommunicatorGroup::version().c_str());
  // Brings GPU 0's weights and moments into the runs' trainers (checkpoints, the end).
  const auto sync_host = [&] {
    threads.run([&](int rank) {
      if (rank == 0) ranks[0].step->sync_host();
    });
  };

  // The logs only now, when nothing is left to fail before the first step. On --resume a log keeps
  // its rows up to the checkpoint (the killed run's later ones are done again), the curve shows every
  // step and the elapsed time goes on from the log's.
  for (const auto& run : runs) {
    GateRun& r = *run;
    const std::string log_path = r.options.out + ".csv";
    if (o.resume) r.earlier = read_training_log(log_path, r.trainer.step());
    std::string kept = std::string(kTrainingLogHeader) + '\n';  // replaces the log at once, or not at all
    for (const std::string& row : r.earlier.rows) kept += row + '\n';
    write_file_atomically(log_path, kept);
    r.log.open(log_path, std::ios::app);
    SEER_CHECK(r.log.good(), "cannot write '", log_path, "'");
    r.losses = r.earlier.losses;
    r.layer_kl_sum.assign(size_t(config.layers), 0.0);
  }
  GateTrainer& lead = runs.front()->trainer;  // every trainer is at its step

  // Each layer's KL over the run's last kKlWindow steps: where the gates imitate their target least
  // (printed at the end and kept in the gates' metadata, training_layer_kl).
  constexpr int64_t kKlWindow = 100;
  int64_t layer_kl_steps = 0;

  const auto start = std::chrono::steady_clock::now();
  const int64_t first = lead.step();
  while (lead.step() < o.steps) {
    const int64_t step = lead.step();
    const auto step_start = std::chrono::steady_clock::now();
    // The step's gpus × batch sequences; GPU r takes the r-th `batch` of them.
    const std::vector<int32_t> tokens = corpus.batch(step, o.batch * o.gpus, o.seed);
    std::vector<double> losses;
    threads.run([&](int rank) {
      const std::span<const int32_t> own = std::span(tokens).subspan(size_t(rank * t), size_t(t));
      const std::vector<double> l = ranks[size_t(rank)].step->run(own);
      if (rank == 0) losses = l;
    }, &group);
    const bool in_kl_window = lead.step() > o.steps - kKlWindow;
    const bool checkpoint_now = lead.step() % o.checkpoint_every == 0 || lead.step() == o.steps;
    if (in_kl_window) ++layer_kl_steps;
    if (checkpoint_now) sync_host();  // the weights and moments, from the device
    const double now = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    const double per_step = now / double(lead.step() - first);
    std::string shown;
    for (size_t i = 0; i < runs.size(); ++i) {
      GateRun& r = *runs[i];
      if (in_kl_window)
        for (size_t l = 0; l < r.layer_kl_sum.size(); ++l) r.layer_kl_sum[l] += r.trainer.last_layer_kl()[l];
      r.losses.push_back(losses[i]);
      // Flushed every step, so that a killed run leaves at most its last row unfinished.
      r.log << step << ',' << losses[i] << ',' << r.trainer.learning_rate(step) << ','
            << double(t * o.gpus) / step_s << ','
            << r.earlier.seconds + now << std::endl;
      char loss[32];
      std::snprintf(loss, sizeof loss, "%s%.4f", i ? " " : "", losses[i]);
      shown += loss;
      if (checkpoint_now) save_rotating_checkpoint(r.trainer, r.checkpoint(), r.metadata);
    }
    std::fprintf(stderr, "\rstep %lld/%lld  loss %s  lr %.2e  %.0f tok/s  ETA %s   ", (long long)lead.step(),
                 (long long)o.steps, shown.c_str(), lead.learning_rate(step), double(t * o.gpus) / step_s,
                 format_duration(per_step * double(o.steps - lead.step())).c_str());
  }
  std::fprintf(stderr, "\n");
  sync_host();
  // Each GPU's buffers freed with that GPU current.
  threads.run([&](int rank) {
    Rank& k = ranks[size_t(rank)];
    k.step.reset();  // each before what it refers to
    k.runtime.reset();
    k.model.reset();
  }, &group);
  for (const auto& run : runs) {
    GateRun& r = *run;
    std::map<std::string, std::string> final_metadata = r.metadata;
    if (layer_kl_steps > 0) {
      nlohmann::json kl = nlohmann::json::array();
      for (const double sum : r.layer_kl_sum) kl.push_back(std::round(sum / double(layer_kl_steps) * 1e6) / 1e6);
      final_metadata["training_layer_kl"] = kl.dump();
      std::printf("train-gates: %s: KL per layer over the last %lld steps: %s\n", r.options.out.c_str(),
                  (long long)layer_kl_steps, kl.dump().c_str());
    }
    r.trainer.save(r.options.out, final_metadata, false);
    write_png(r.options.out + ".loss.png", plot_series(r.losses));
    std::printf("train-gates: %lld steps, final loss %.4f, gates in %s (log %s.csv, curve %s.loss.png)\n",
                (long long)r.trainer.step(), r.losses.empty() ? NAN : r.losses.back(), r.options.out.c_str(),
                r.options.out.c_str(), r.options.out.c_str());
  }
}

}  // namespace

void add_train_gates_command(CLI::App& app) {
  auto o = std::make_shared<TrainGatesOptions>();
  CLI::App* cmd = app.add_subcommand("train-gates", "train SeerAttention gates by self-distillation (GPU)");
  cmd->add_option("--model", o->model, "GGUF file or Hugging Face directory (default: the built-in model)");
  cmd->add_option("--data", o->data, "text files or folders to train on")->delimiter(',');
  cmd->add_option("--seq-len", o->seq_len, "tokens per training sequence")->check(CLI::Range(int64_t(64), int64_t(1) << 20));
  cmd->add_option("--batch", o->batch, "sequences per step and GPU")->check(CLI::Range(int64_t(1), int64_t(1024)));
  cmd->add_option("--gpus", o->gpus,
                  "train data-parallel on this many GPUs (NCCL): each takes --batch sequences of every step")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--steps", o->steps, "optimizer steps")->check(CLI::PositiveNumber);
  cmd->add_option("--target-pooling", o->target_pooling,
                  "pool each 64x64 block of the attention by its max probability (max, the published target), "
                  "its rows' mean share of attention (mass) or their largest share (peak-mass)")
      ->check(CLI::IsMember(gt_pooling_names()));
  add_gate_run_options(cmd, &o->gates);
  cmd->add_option("--variant", o->variant_flags,
                  "more gates trained on the same forwards, each its own flags in one string, --out included "
                  "(e.g. \"--out b.safetensors --block-bias\"): --lr, --warmup, --weight-decay, --target-power, "
                  "--skip-fraction, --tail-weight, --tail-local-blocks, --gate-dim, --gate-type, --init-seed, "
                  "--block-bias; "
                  "each trains as a run of its own would, the model's forward shared");
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "steps between checkpoints")->check(CLI::PositiveNumber);
  cmd->add_flag("--resume", o->resume,
                "continue from <out>.checkpoint, or <out>.checkpoint.prev, at the latest step every --variant's "
                "gates have too");
  cmd->add_option("--seed", o->seed, "seed for the initialization and the data order");
  cmd->callback([o] {
    parse_variants(*o);
    run(*o);
  });
}

}  // namespace seer::cli
