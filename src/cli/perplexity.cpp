// `seer perplexity`: perplexity of text files, llama.cpp style (model/perplexity.h), with dense
// attention or SeerAttention.
#include "model/perplexity.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <numeric>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/selection_flags.h"
#include "cli/device_choice.h"
#include "core/error.h"
#include "formats/mapped_file.h"
#include "model/forward_cpu.h"
#include "model/gates.h"
#include "model/llama_loader.h"
#ifdef SEER_HAVE_CUDA
#include "cuda/llama_cuda.h"
#include "cuda/tensor_parallel.h"
#endif

namespace seer::cli {
namespace {

struct PerplexityOptions {
  std::vector<std::string> files;
  std::string model, attention = "dense", gates, device = "auto";
  int gpus = 1;  // tensor parallelism
  int64_t context = 8192, stride = 0, chunk = 2048, max_windows = 0;
  std::optional<bool> bos;  // default: the model's add_bos
  SelectionFlags selection;
  bool json = false;
};

#ifdef SEER_HAVE_CUDA
// Scores windows on the GPU (cuda/llama_cuda.h), or on several with the model split over them
// (cuda/tensor_parallel.h), with the CPU path's window and BOS handling: the runtimes are rebuilt
// only when the window length changes.
class GpuWindowScorer {
 public:
  GpuWindowScorer(const LlamaWeights& weights, const std::vector<GateWeights<float>>& gates,
                  const SelectionOptions& selection, int64_t longest, int gpus)
      : model_(weights, gpus), gates_(size_t(gpus)), runtimes_(size_t(gpus)) {
    model_.run([&](int r) { gates_[size_t(r)] = model_.upload_gates(r, gates, ceil_div(longest, cuda::kBlock)); });
    options_.mode = gates.empty() ? cuda::AttentionMode::dense : cuda::AttentionMode::seer;
    options_.selection = selection;
    options_.all_logits = true;
  }
  ~GpuWindowScorer() {
    model_.release(runtimes_);
    model_.release(gates_);
  }
  // Adds the NLL of predictions [first, length - 1) of `window`; returns the block density.
  double score(std::span<const int32_t> window, int64_t first, NllStats& stats) {
    std::vector<float> nll;
    std::vector<double> kept(runtimes_.size());
    model_.run([&](int r) {
      std::unique_ptr<cuda::LlamaRuntime>& runtime = runtimes_[size_t(r)];
      if (!runtime || runtime->layout().tokens != int64_t(window.size()))
        runtime = std::make_unique<cuda::LlamaRuntime>(model_.part(r), Sequences::single(int64_t(window.size())),
                                                       cuda::kPrefillChunkTokens, model_.communicator(r));
      cuda::ForwardOptions options = options_;
      options.gates = &gates_[size_t(r)];
      runtime->forward(window, options);
      if (r == 0) nll = runtime->next_token_nll(window);  // every rank has the logits
      // The rank's kept blocks, weighed by its share of the heads.
      kept[size_t(r)] = runtime->last_density() * model_.part(r).config.q_heads / model_.config().q_heads;
    });
    for (size_t t = size_t(first); t + 1 < window.size(); ++t) stats.add(nll[t]);
    return std::accumulate(kept.begin(), kept.end(), 0.0);
  }

 private:
  cuda::TensorParallelLlama model_;
  std::vector<std::vector<cuda::DeviceGate>> gates_;
  cuda::ForwardOptions options_;
  std::vector<std::unique_ptr<cuda::LlamaRuntime>> runtimes_;
};
#endif

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string duration_text(double seconds) {
  char text[32];
  const long s = std::lround(seconds);
  if (s >= 3600)
    std::snprintf(text, sizeof text, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else
    std::snprintf(text, sizeof text, "%ldm%02lds", s / 60, s % 60);
  return text;
}

// A bar redrawn in place on a terminal, one line per window otherwise (logs).
void report_progress(size_t done, size_t total, double elapsed, const NllStats& stats) {
  const double eta = elapsed / double(done) * double(total - done);
  if (isatty(STDERR_FILENO)) {
    constexpr int kWidth = 30;
    const int filled = int(kWidth * done / total);
    std::fprintf(stderr, "\r[%s%s] %zu/%zu windows, ETA %s, PPL %.4f ", std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(kWidth - filled), '.').c_str(), done, total, duration_text(eta).c_str(),
                 stats.perplexity());
    if (done == total) std::fprintf(stderr, "\n");
  } else {
    std::fprintf(stderr, "window %zu/%zu: PPL so far %.4f, %.1f s elapsed, ETA %s\n", done, total, stats.perplexity(),
                 elapsed, duration_text(eta).c_str());
  }
}

void run_perplexity(const PerplexityOptions& o) {
  const bool seer = o.attention == "seer";
  o.selection.require_seer(seer, !o.gates.empty());
  const std::string path = resolve_model_path(o.model);
  const auto load_start = std::chrono::steady_clock::now();
  const LlamaWeights weights = load_llama(path);
  const Tokenizer tokenizer = load_llama_tokenizer(path);
  const LlamaConfig& c = weights.config;
  const bool bos = o.bos.value_or(c.add_bos);
  SEER_CHECK(!bos || c.bos >= 0, "--bos: the model has no BOS token");

  std::vector<GateWeights<float>> gates;
  SelectionOptions selection;
  if (seer) {
    const std::string gates_path = resolve_gates_path(o.gates, path);
    gates = load_gates(gates_path, c);
    selection = o.selection.resolve(gates_path, c.layers, o.context);
  }
  const double load_seconds = seconds_since(load_start);

  struct Job {
    size_t file;
    PerplexityWindow window;
  };
  std::vector<std::vector<int32_t>> texts;
  std::vector<Job> jobs;
  int64_t longest = 0;
  for (size_t f = 0; f < o.files.size(); ++f) {
    texts.push_back(tokenizer.encode(read_text_file(o.files[f], std::numeric_limits<size_t>::max())));
    for (const PerplexityWindow& w : perplexity_windows(int64_t(texts.back().size()), o.context, o.stride)) {
      if (o.max_windows > 0 && int64_t(jobs.size()) == o.max_windows) break;
      jobs.push_back({f, w});
      longest = std::max(longest, w.length);
    }
  }
  SEER_CHECK(!jobs.empty(), "nothing to score: the files hold fewer than 2 tokens");

  const bool on_gpu = use_gpu(o.device, o.gpus);
#ifdef SEER_HAVE_CUDA
  std::unique_ptr<GpuWindowScorer> gpu;
  if (on_gpu) gpu = std::make_unique<GpuWindowScorer>(weights, gates, selection, longest, o.gpus);
#endif
  std::optional<LlamaCpu> model;  // the CPU path
  if (!on_gpu)
    model.emplace(weights, CpuForwardOptions{.context = longest,
                                            .chunk = o.chunk,
                                            .attention = seer ? AttentionMethod::seer : AttentionMethod::dense,
                                            .gates = gates,
                                            .selection = selection});
  NllStats total;
  std::vector<NllStats> per_file(o.files.size());
  std::vector<int32_t> window;
  double density_sum = 0.0;
  int64_t window_tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  for (size_t n = 0; n < jobs.size(); ++n) {
    const Job& job = jobs[n];
    const std::vector<int32_t>& text = texts[job.file];
    window.assign(text.begin() + job.window.begin, text.begin() + job.window.begin + job.window.length);
    if (bos) window[0] = c.bos;  // as llama-perplexity: BOS takes the first token's place
    NllStats stats;
#ifdef SEER_HAVE_CUDA
    if (gpu) {
      density_sum += gpu->score(window, job.window.first, stats);
    } else
#endif
    {
      score_window(*model, window, job.window.first, stats);
      density_sum += model->last_density();
    }
    for (NllStats* s : {&total, &per_file[job.file]}) {
      s->count += stats.count;
      s->sum += stats.sum;
      s->sum_squares += stats.sum_squares;
    }
    window_tokens += job.window.length;
    report_progress(n + 1, jobs.size(), seconds_since(start), total);
  }
  const double seconds = seconds_since(start);

  nlohmann::json j = {{"model", path},
                      {"files", nlohmann::json::array()},
                      {"context", o.context},
                      {"stride", o.stride},
                      {"bos", bos},
                      {"attention", o.attention},
                      {"device", on_gpu ? "cuda" : "cpu"},
                      {"gpus", on_gpu ? o.gpus : 0},
                      {"windows", jobs.size()},
                      {"scored_tokens", total.count},
                      {"mean_nll", total.mean()},
                      {"ppl", total.perplexity()},
                      {"ppl_stderr", total.perplexity_error()},
                      {"mean_density", density_sum / double(jobs.size())},
                      {"load_seconds", load_seconds},
                      {"seconds", seconds},
                      {"tokens_per_second", double(window_tokens) / seconds},
                      {"threads", omp_get_max_threads()}};
  if (seer) {
    j["gates"] = o.gates;
    using M = SelectionOptions::Method;
    j["selection"] = selection.method == M::top_k ? "top_k" : selection.method == M::threshold ? "threshold" : "top_p";
    if (selection.method == M::top_k) j["density"] = selection.density;
    if (selection.method == M::threshold) j["threshold"] = selection.threshold;
    if (selection.method == M::top_p && !o.selection.budget) j["mass"] = selection.mass;
    if (o.selection.budget) {
      j["budget"] = *o.selection.budget;
      j["layer_mass"] = selection.layer_mass;
    }
    j["sink"] = selection.keep_sink;
    j["local_blocks"] = selection.local_blocks;
  }
  for (size_t f = 0; f < o.files.size(); ++f)
    j["files"].push_back({{"path", o.files[f]},
                          {"tokens", texts[f].size()},
                          {"scored_tokens", per_file[f].count},
                          {"ppl", per_file[f].perplexity()}});
  if (o.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("%zu windows of up to %lld tokens, %lld scored tokens, %.1f s (%.0f tokens/s, %s)%s\n",
              jobs.size(), (long long)longest, (long long)total.count, seconds, double(window_tokens) / seconds,
              (on_gpu ? gpu_label(o.gpus) : std::to_string(omp_get_max_threads()) + " threads").c_str(),
              seer ? (", mean block density " + std::to_string(density_sum / double(jobs.size()))).c_str() : "");
  std::printf("PPL = %.4f +/- %.5f\n", total.perplexity(), total.perplexity_error());
}

}  // namespace

void add_perplexity_command(CLI::App& app) {
  auto options = std::make_shared<PerplexityOptions>();
  CLI::App* cmd = app.add_subcommand("perplexity", "perplexity of text files (llama.cpp's method)");
  cmd->add_option("files", options->files, "UTF-8 text files")->required()->check(CLI::ExistingFile);
  cmd->add_option("--model", options->model, "GGUF file or Hugging Face directory (default: the built-in model)");
  cmd->add_option("--context", options->context, "window length in tokens")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 20));
  cmd->add_option("--stride", options->stride,
                  "windows every N tokens scoring their last N (default 0: disjoint windows scoring their second half)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--chunk", options->chunk, "prefill chunk in tokens (dense attention)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--max-windows", options->max_windows, "score at most N windows (0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag_function(
      "--bos,!--no-bos", [options](int64_t count) { options->bos = count > 0; },
      "put BOS in each window's first place (default: as the model's tokenizer does)");
  cmd->add_option("--attn", options->attention, "attention: dense or seer (SeerAttention)")
      ->check(CLI::IsMember({"dense", "seer"}));
  cmd->add_option("--gates", options->gates, "SeerAttention gate weights (safetensors; default: the shipped gates of the built-in model)")->check(CLI::ExistingFile);
  options->selection.add_to(*cmd);
  cmd->add_option("--device", options->device, "cpu, cuda, or auto (the GPU when there is one)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("--gpus", options->gpus,
                  "split the model over this many GPUs (tensor parallelism: each GPU holds its share of the heads "
                  "and MLP features)")
      ->check(CLI::Range(1, 64));
  cmd->add_flag("--json", options->json, "print JSON");
  cmd->callback([options] { run_perplexity(*options); });
}

}  // namespace seer::cli
