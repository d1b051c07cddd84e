// `seer generate`: text continuation or a chat reply, streamed token by token, on the CPU or the
// GPU (a prefill of the prompt into the KV cache, then one decode step per token).
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/device_choice.h"
#include "cli/selection_flags.h"
#include "core/error.h"
#include "model/forward_cpu.h"
#include "model/gates.h"
#include "model/llama_loader.h"
#include "model/sampling.h"
#ifdef SEER_HAVE_CUDA
#include "cuda/llama_cuda.h"
#include "cuda/tensor_parallel.h"
#endif

namespace seer::cli {
namespace {

struct GenerateOptions {
  std::string model, prompt, chat, attention = "dense", gates, device = "auto";
  SelectionFlags selection;
  int max_tokens = 128;
  int gpus = 1;  // tensor parallelism
  SamplingOptions sampling{.temperature = 0.8, .top_k = 40, .top_p = 0.95, .seed = 0};
  bool seed_given = false;
};

// The model behind generation: the prompt's prefill, then one token per decode; each returns the
// next-token logits of its last token.
class Generator {
 public:
  virtual ~Generator() = default;
  virtual std::span<const float> prefill(std::span<const int32_t> prompt) = 0;
  virtual std::span<const float> decode(int32_t token) = 0;
  virtual int64_t position() const = 0;  // tokens in the KV cache
  virtual int64_t capacity() const = 0;
};

class CpuGenerator final : public Generator {
 public:
  CpuGenerator(const LlamaWeights& weights, const CpuForwardOptions& options) : model_(weights, options) {}
  std::span<const float> prefill(std::span<const int32_t> prompt) override { return model_.prefill(prompt); }
  std::span<const float> decode(int32_t token) override { return model_.decode(token); }
  int64_t position() const override { return model_.position(); }
  int64_t capacity() const override { return model_.capacity(); }

 private:
  LlamaCpu model_;
};

#ifdef SEER_HAVE_CUDA
// On the GPU, or on several with the model split over them (cuda/tensor_parallel.h): each GPU holds
// its heads' part of the KV cache and runs its part of every step. The prefill's runtime lives only
// for the prefill; the caches and the decoders stay.
class GpuGenerator final : public Generator {
 public:
  GpuGenerator(const LlamaWeights& weights, std::span<const GateWeights<float>> gates,
               const SelectionOptions& selection, int64_t capacity, int gpus)
      : model_(weights, gpus),
        gate_weights_(gates.begin(), gates.end()),
        selection_(selection),
        ranks_(size_t(gpus)) {
    model_.run([&](int r) {
      ranks_[size_t(r)].cache = std::make_unique<cuda::DeviceKvCache>(
          cuda::DeviceKvCache::create(model_.part(r).config, capacity));
    });
  }
  ~GpuGenerator() override { model_.release(ranks_); }
  std::span<const float> prefill(std::span<const int32_t> prompt) override {
    const int64_t n = int64_t(prompt.size());
    model_.run([&](int r) {
      Rank& k = ranks_[size_t(r)];
      const std::vector<cuda::DeviceGate> gates = model_.upload_gates(r, gate_weights_, ceil_div(n, cuda::kBlock));
      cuda::ForwardOptions options;
      options.mode = gates.empty() ? cuda::AttentionMode::dense : cuda::AttentionMode::seer;
      options.selection = selection_;
      options.gates = &gates;
      options.kv_cache = k.cache.get();
      {
        cuda::LlamaRuntime runtime(model_.part(r), Sequences::single(n), cuda::kPrefillChunkTokens,
                                   model_.communicator(r));
        runtime.forward(prompt, options);
        std::vector<float> logits = runtime.logits();  // synchronizes: the cache is complete
        if (r == 0) logits_ = std::move(logits);
      }
      k.decoder = std::make_unique<cuda::LlamaDecoder>(model_.part(r), *k.cache, model_.communicator(r));
    });
    return logits_;
  }
  std::span<const float> decode(int32_t token) override {
    model_.run([&](int r) {
      const std::span<const float> logits = ranks_[size_t(r)].decoder->step(token);
      if (r == 0) logits_.assign(logits.begin(), logits.end());
    });
    return logits_;
  }
  int64_t position() const override { return ranks_.front().cache->length; }
  int64_t capacity() const override { return ranks_.front().cache->capacity; }

 private:
  struct Rank {  // destroyed in reverse: the decoder before its cache
    std::unique_ptr<cuda::DeviceKvCache> cache;  // the rank's KV heads
    std::unique_ptr<cuda::LlamaDecoder> decoder;
  };
  cuda::TensorParallelLlama model_;
  std::vector<GateWeights<float>> gate_weights_;
  SelectionOptions selection_;
  std::vector<Rank> ranks_;
  std::vector<float> logits_;  // rank 0's: every rank has the same
};
#endif

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void run_generate(GenerateOptions o) {
  SEER_CHECK(!o.prompt.empty() || !o.chat.empty(), "give a --prompt TEXT or a --chat TEXT");
  o.sampling.validate();
  if (!o.seed_given) o.sampling.seed = std::random_device{}();
  o.selection.require_seer(o.attention == "seer", !o.gates.empty());
  const std::string path = resolve_model_path(o.model);
  const LlamaWeights weights = load_llama(path);
  const Tokenizer tokenizer = load_llama_tokenizer(path);
  const LlamaConfig& c = weights.config;

  // Special tokens in the text are parsed, as Hugging Face tokenizers do by default.
  std::vector<int32_t> prompt;
  if (!o.chat.empty()) {
    const std::string text = tokenizer.apply_chat_template({{"user", o.chat}}, true);
    prompt = tokenizer.encode(text, false, true);
  } else {
    prompt = tokenizer.encode(o.prompt, c.add_bos, true);
  }
  SEER_CHECK(!prompt.empty(), "the prompt has no tokens");
  SEER_CHECK(int64_t(prompt.size()) < c.max_positions, "the prompt has ", prompt.size(),
             " tokens; the model's context is ", c.max_positions);
  const int64_t capacity = std::min<int64_t>(c.max_positions, int64_t(prompt.size()) + o.max_tokens);
  std::vector<GateWeights<float>> gates;
  // SeerAttention prefill; the last 2 query blocks (the question) stay dense.
  SelectionOptions selection;
  if (o.attention == "seer") {
    const std::string gates_path = resolve_gates_path(o.gates, path);
    gates = load_gates(gates_path, c);
    selection = o.selection.resolve(gates_path, c.layers, int64_t(prompt.size()));
  }
  selection.dense_last_blocks = 2;
  const bool on_gpu = use_gpu(o.device, o.gpus);
  std::unique_ptr<Generator> model;
#ifdef SEER_HAVE_CUDA
  if (on_gpu) model = std::make_unique<GpuGenerator>(weights, gates, selection, capacity, o.gpus);
#endif
  if (!model)
    model = std::make_unique<CpuGenerator>(
        weights, CpuForwardOptions{.context = capacity,
                                   .attention = gates.empty() ? AttentionMethod::dense : AttentionMethod::seer,
                                   .gates = gates,
                                   .selection = selection});
  Sampler sampler(o.sampling, c.vocab);

  if (o.chat.empty()) {
    std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
    std::fflush(stdout);
  }
  const auto prefill_start = std::chrono::steady_clock::now();
  std::span<const float> logits = model->prefill(prompt);
  const double prefill_seconds = seconds_since(prefill_start);

  const auto decode_start = std::chrono::steady_clock::now();
  int generated = 0;
  std::string stop = "length";
  for (;;) {
    const int32_t id = sampler.sample(logits);
    // Hugging Face checkpoints may pad the embedding past the tokenizer's vocabulary.
    if (id >= tokenizer.vocab_size()) {
      stop = "token " + std::to_string(id) + " outside the tokenizer's vocabulary";
      break;
    }
    if (id == c.eos || tokenizer.token_type(id) == token_type::control) {
      stop = "end of turn (" + tokenizer.token_text(id) + ")";
      break;
    }
    const std::string piece = tokenizer.decode(std::span(&id, 1));
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    if (++generated == o.max_tokens) break;
    if (model->position() == model->capacity()) {
      stop = "context full";
      break;
    }
    logits = model->decode(id);
  }
  const double decode_seconds = seconds_since(decode_start);
  std::printf("\n");
  std::fprintf(stderr,
               "[prompt %zu tokens in %.2f s (%.1f tokens/s); generated %d tokens in %.2f s (%.1f tokens/s); "
               "stop: %s; seed %llu; %s]\n",
               prompt.size(), prefill_seconds, double(prompt.size()) / prefill_seconds, generated, decode_seconds,
               generated > 0 ? double(generated) / decode_seconds : 0.0, stop.c_str(),
               (unsigned long long)o.sampling.seed,
               on_gpu ? gpu_label(o.gpus).c_str() : "CPU");
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto options = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text, streaming it");
  cmd->add_option("--model", options->model, "GGUF file or Hugging Face directory (default: the built-in model)");
  auto* prompt = cmd->add_option("--prompt", options->prompt, "text to continue");
  auto* chat = cmd->add_option("--chat", options->chat, "a user message, answered through the chat template");
  prompt->excludes(chat);
  cmd->add_option("--attn", options->attention, "prefill attention: dense or seer (SeerAttention)")
      ->check(CLI::IsMember({"dense", "seer"}));
  cmd->add_option("--device", options->device, "cpu, cuda, or auto (the GPU when there is one)");
  cmd->add_option("--gpus", options->gpus,
                  "split the model and its KV cache over this many GPUs (tensor parallelism)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--gates", options->gates, "gate weights (default: the shipped gates of the built-in model)");
  options->selection.add_to(*cmd);
  cmd->add_option("--max-tokens", options->max_tokens, "tokens to generate at most")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temperature", options->sampling.temperature, "sampling temperature; 0 is greedy")
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", options->sampling.top_k, "keep the k most likely tokens; 0 keeps all")
      ->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--top-p", options->sampling.top_p, "nucleus: keep the most likely tokens up to this mass")
      ->check(CLI::Range(1e-9, 1.0));
  cmd->add_option_function<uint64_t>(
      "--seed",
      [options](uint64_t seed) {
        options->sampling.seed = seed;
        options->seed_given = true;
      },
      "random seed (default: a fresh one, printed at the end)");
  cmd->callback([options] { run_generate(*options); });
}

}  // namespace seer::cli
