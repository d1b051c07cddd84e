// `seer generate`: text continuation or a chat reply on the CPU, streamed token by token.
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "model/forward_cpu.h"
#include "model/gates.h"
#include "model/llama_loader.h"
#include "model/sampling.h"

namespace seer::cli {
namespace {

struct GenerateOptions {
  std::string model, prompt, chat, attention = "dense", gates;
  double density = 0.1;
  int max_tokens = 128;
  SamplingOptions sampling{.temperature = 0.8, .top_k = 40, .top_p = 0.95, .seed = 0};
  bool seed_given = false;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void run_generate(GenerateOptions o) {
  SEER_CHECK(!o.prompt.empty() || !o.chat.empty(), "give a --prompt TEXT or a --chat TEXT");
  o.sampling.validate();
  if (!o.seed_given) o.sampling.seed = std::random_device{}();
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
  CpuForwardOptions forward_options;
  forward_options.context = capacity;
  std::vector<GateWeights<float>> gates;
  if (o.attention == "seer") {  // SeerAttention prefill; the last 2 query blocks (the question) stay dense
    gates = load_gates(resolve_gates_path(o.gates, path), c);
    forward_options.attention = AttentionMethod::seer;
    forward_options.gates = gates;
    forward_options.selection = SelectionOptions{.density = o.density, .dense_last_blocks = 2};
  }
  LlamaCpu model(weights, forward_options);
  Sampler sampler(o.sampling, c.vocab);

  if (o.chat.empty()) {
    std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
    std::fflush(stdout);
  }
  const auto prefill_start = std::chrono::steady_clock::now();
  std::span<const float> logits = model.prefill(prompt);
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
    if (model.position() == model.capacity()) {
      stop = "context full";
      break;
    }
    logits = model.decode(id);
  }
  const double decode_seconds = seconds_since(decode_start);
  std::printf("\n");
  std::fprintf(stderr,
               "[prompt %zu tokens in %.2f s (%.1f tokens/s); generated %d tokens in %.2f s (%.1f tokens/s); "
               "stop: %s; seed %llu]\n",
               prompt.size(), prefill_seconds, double(prompt.size()) / prefill_seconds, generated, decode_seconds,
               generated > 0 ? double(generated) / decode_seconds : 0.0, stop.c_str(),
               (unsigned long long)o.sampling.seed);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto options = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text on the CPU, streaming it");
  cmd->add_option("--model", options->model, "GGUF file or Hugging Face directory (default: the built-in model)");
  auto* prompt = cmd->add_option("--prompt", options->prompt, "text to continue");
  auto* chat = cmd->add_option("--chat", options->chat, "a user message, answered through the chat template");
  prompt->excludes(chat);
  cmd->add_option("--attn", options->attention, "prefill attention: dense or seer (SeerAttention)")
      ->check(CLI::IsMember({"dense", "seer"}));
  cmd->add_option("--gates", options->gates, "gate weights (default: the shipped gates of the built-in model)");
  cmd->add_option("--density", options->density, "SeerAttention top-k block density")->check(CLI::Range(1e-6, 1.0));
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
