// `seer bench-model`: time to first token of the whole model on the GPU at long prompt lengths,
// dense against SeerAttention (random gates: timing only), with peak GPU memory; then decode
// tokens/s at batch 1 after a long prompt (each step returns its logits to the host, as generation
// does); then gate-training tokens/s (train/gpu_gate_step.h: ground-truth forward, gate loss,
// gradient and AdamW on the GPU). The model is Llama-3-8B- or 70B-shaped with random bf16 weights
// made on the GPU (nothing downloaded). With --gpus N, prefill and decode run tensor-parallel over
// N GPUs (cuda/tensor_parallel.h) and training data-parallel (one sequence per GPU per step); the
// times are wall-clock, from the call until every GPU is done and the logits are on the host.
// bench/gpu/hf_peer.py times HF transformers on the same shape in the same job.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <vector>

#include "cli/commands.h"
#include "cuda/communicator.h"
#include "cuda/llama_cuda.h"
#include "cuda/tensor_parallel.h"
#include "train/gpu_gate_step.h"

namespace seer::cli {
namespace {

LlamaConfig llama3_8b_shape() {
  LlamaConfig c;
  c.architecture = "llama";
  c.name = "synthetic Llama-3-8B shape (random weights)";
  c.layers = 32;
  c.hidden = 4096;
  c.q_heads = 32;
  c.kv_heads = 8;
  c.head_dim = 128;
  c.intermediate = 14336;
  c.vocab = 128256;
  c.rms_eps = 1e-5;
  c.rope = RopeConfig{.theta = 500000.0, .scaling = RopeConfig::Scaling::llama3, .factor = 8.0,
                      .low_freq_factor = 1.0, .high_freq_factor = 4.0, .original_max_positions = 8192};
  c.max_positions = 131072;
  return c;
}

LlamaConfig llama3_70b_shape() {
  LlamaConfig c = llama3_8b_shape();
  c.name = "synthetic Llama-3-70B shape (random weights)";
  c.layers = 80;
  c.hidden = 8192;
  c.q_heads = 64;
  c.intermediate = 28672;
  return c;
}

struct BenchModelOptions {
  std::string shape = "8b";
  int gpus = 1;
  std::vector<int64_t> lengths{8192, 32768, 131072};
  double density = 0.1;
  int repeats = 3;
  int64_t decode_context = 32768, decode_tokens = 64;
  int64_t train_seq_len = 8192, train_steps = 5;
  bool json = false;
};

std::vector<int32_t> random_tokens(int64_t n, int32_t vocab, uint32_t seed) {
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  std::mt19937 rng(seed);
  for (int32_t& t : tokens) t = int32_t(rng() % uint32_t(vocab));
  return tokens;
}

// The current GPU's memory in use.
double used_gib() {
  size_t free_bytes = 0, total = 0;
  SEER_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  return double(total - free_bytes) / double(1 << 30);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Each GPU's memory in use now, less what it had at the start (`base`); the most on one GPU.
double gib_in_use(cuda::TensorParallelLlama& model, const std::vector<double>& base) {
  std::vector<double> used(base.size());
  model.run([&](int r) { used[size_t(r)] = used_gib() - base[size_t(r)]; });
  return *std::max_element(used.begin(), used.end());
}

// Time to first token (the whole prompt through the model, the last position's logits on the host)
// for each length, dense and SeerAttention, the model split over the GPUs; then decode steps.
void time_prefill_and_decode(const BenchModelOptions& o, const LlamaConfig& config, nlohmann::json& report) {
  std::vector<double> base(size_t(o.gpus));
  cuda::run_on_ranks(o.gpus, [&](int r) { base[size_t(r)] = used_gib(); });
  cuda::TensorParallelLlama model(config, 42, o.gpus);
  report["parameters"] = model.parameter_count();
  report["weights_gib_per_gpu"] = gib_in_use(model, base);
  const GateConfig gate_config{{config.q_heads, config.kv_heads, config.head_dim}, config.head_dim, cuda::kBlock};
  const size_t ranks = size_t(o.gpus);
  for (const int64_t n : o.lengths) {
    const std::vector<int32_t> tokens = random_tokens(n, config.vocab, 7);
    const Sequences seqs = Sequences::single(n);
    std::vector<GateWeights<float>> host_gates;
    for (int l = 0; l < config.layers; ++l) host_gates.push_back(GateWeights<float>::random(gate_config, uint64_t(l)));
    std::vector<std::vector<cuda::DeviceGate>> gates(ranks);
    std::vector<std::unique_ptr<cuda::LlamaRuntime>> runtimes(ranks);
    model.run([&](int r) {
      gates[size_t(r)] = model.upload_gates(r, host_gates, ceil_div(n, cuda::kBlock));
      runtimes[size_t(r)] = std::make_unique<cuda::LlamaRuntime>(model.part(r), seqs, cuda::kPrefillChunkTokens,
                                                                 model.communicator(r));
    });
    for (const bool sparse : {false, true}) {
      std::vector<float> logits;
      const auto prefill = [&] {
        model.run([&](int r) {
          cuda::ForwardOptions options;
          options.mode = sparse ? cuda::AttentionMode::seer : cuda::AttentionMode::dense;
          options.gates = &gates[size_t(r)];
          options.selection.density = o.density;
          runtimes[size_t(r)]->forward(tokens, options);
          std::vector<float> own = runtimes[size_t(r)]->logits();  // synchronizes
          if (r == 0) logits = std::move(own);
        });
      };
      prefill();  // warm-up (and first-use allocations)
      std::vector<double> times;
      for (int i = 0; i < o.repeats; ++i) {
        const auto start = std::chrono::steady_clock::now();
        prefill();
        times.push_back(1e3 * seconds_since(start));
      }
      std::sort(times.begin(), times.end());
      const bool finite = std::all_of(logits.begin(), logits.end(), [](float x) { return std::isfinite(x); });
      report["results"].push_back({{"tokens", n}, {"attention", sparse ? "seer" : "dense"},
                                   {"density", sparse ? o.density : 1.0}, {"ttft_ms", times[times.size() / 2]},
                                   {"gpu_memory_gib", gib_in_use(model, base)}, {"finite_logits", finite}});
    }
    model.release(runtimes);
    model.release(gates);
  }
  if (o.decode_tokens > 0) {
    const std::vector<int32_t> prompt = random_tokens(o.decode_context, config.vocab, 11);
    std::vector<double> seconds(ranks), used(ranks);
    std::vector<int64_t> cache_bytes(ranks);
    std::vector<char> finite(ranks, 1);
    model.run([&](int r) {  // the cache and decoder live on this rank's thread and GPU
      const cuda::DeviceLlama& part = model.part(r);
      cuda::DeviceKvCache cache = cuda::DeviceKvCache::create(part.config, o.decode_context + o.decode_tokens + 4);
      {
        cuda::LlamaRuntime runtime(part, Sequences::single(o.decode_context), cuda::kPrefillChunkTokens,
                                   model.communicator(r));
        cuda::ForwardOptions options;
        options.kv_cache = &cache;
        runtime.forward(prompt, options);
        runtime.logits();  // synchronizes: the cache is complete
      }
      cuda::LlamaDecoder decoder(part, cache, model.communicator(r));
      for (int w = 0; w < 4; ++w) decoder.step(prompt[size_t(w)]);  // warm-up
      const auto start = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < o.decode_tokens; ++i) {
        const std::span<const float> logits = decoder.step(prompt[size_t(i)]);
        finite[size_t(r)] = finite[size_t(r)] && std::isfinite(logits[0]);
      }
      seconds[size_t(r)] = seconds_since(start);
      cache_bytes[size_t(r)] = cache.bytes();
      used[size_t(r)] = used_gib() - base[size_t(r)];
    });
    const double s = *std::max_element(seconds.begin(), seconds.end());
    report["decode"] = {{"context", o.decode_context}, {"tokens", o.decode_tokens},
                        {"tokens_per_s", double(o.decode_tokens) / s},
                        {"ms_per_token", 1e3 * s / double(o.decode_tokens)},
                        {"kv_cache_gib",
                         double(std::accumulate(cache_bytes.begin(), cache_bytes.end(), int64_t(0))) / double(1 << 30)},
                        {"gpu_memory_gib", *std::max_element(used.begin(), used.end())},
                        {"finite_logits", std::all_of(finite.begin(), finite.end(), [](char f) { return f != 0; })}};
  }
}

// Gate-training tokens/s, data-parallel: a whole model per GPU, each on its own sequence, the
// gradients averaged over the GPUs every step.
void time_training(const BenchModelOptions& o, const LlamaConfig& config, nlohmann::json& report) {
  const GateConfig gate_config{{config.q_heads, config.kv_heads, config.head_dim}, config.head_dim, cuda::kBlock};
  std::vector<GateWeights<float>> init;
  for (int l = 0; l < config.layers; ++l) init.push_back(GateWeights<float>::random(gate_config, uint64_t(l)));
  const size_t ranks = size_t(o.gpus);
  struct Rank {
    std::unique_ptr<GateTrainer> trainer;
    std::unique_ptr<cuda::DeviceLlama> model;
    std::unique_ptr<cuda::LlamaRuntime> runtime;
    std::unique_ptr<GpuGateStep> step;
  };
  std::vector<Rank> state(ranks);
  std::vector<double> used(ranks);
  cuda::CommunicatorGroup group(o.gpus);
  double seconds = 0, loss = 0;
  cuda::run_on_ranks(o.gpus, [&](int r) {
    Rank& k = state[size_t(r)];
    const double base = used_gib();
    k.trainer = std::make_unique<GateTrainer>(init, TrainOptions{.steps = o.train_steps + 1, .warmup = 0});
    k.model = std::make_unique<cuda::DeviceLlama>(cuda::DeviceLlama::synthetic(config, 42));
    k.runtime = std::make_unique<cuda::LlamaRuntime>(*k.model, Sequences::single(o.train_seq_len));
    k.step = std::make_unique<GpuGateStep>(*k.trainer, config, *k.runtime, o.gpus > 1 ? &group.rank(r) : nullptr);
    const std::vector<int32_t> tokens = random_tokens(o.train_seq_len, config.vocab, 13 + uint32_t(r));
    k.step->run(tokens);  // warm-up
    const auto start = std::chrono::steady_clock::now();
    double last = 0;
    for (int64_t i = 0; i < o.train_steps; ++i) last = k.step->run(tokens).front();
    if (r == 0) {
      seconds = seconds_since(start);
      loss = last;
    }
    used[size_t(r)] = used_gib() - base;
    // Freed with its GPU current, each before what it refers to.
    k.step.reset();
    k.runtime.reset();
    k.model.reset();
  }, &group);
  report["train"] = {{"sequence_length", o.train_seq_len}, {"steps", o.train_steps}, {"gpus", o.gpus},
                     {"tokens_per_s", double(o.train_seq_len * o.train_steps * o.gpus) / seconds},
                     {"ms_per_step", 1e3 * seconds / double(o.train_steps)}, {"loss", loss},
                     {"gate_parameters", int64_t(config.layers) * gate_config.wk_size()},
                     {"gpu_memory_gib", *std::max_element(used.begin(), used.end())}};
}

void run(const BenchModelOptions& o) {
  const LlamaConfig config = o.shape == "70b" ? llama3_70b_shape() : llama3_8b_shape();
  nlohmann::json report = {{"model", config.name}, {"gpus", o.gpus}, {"results", nlohmann::json::array()}};
  if (o.gpus > 1) report["collectives"] = cuda::CommunicatorGroup::version();
  if (!o.lengths.empty() || o.decode_tokens > 0) time_prefill_and_decode(o, config, report);
  if (o.train_steps > 0) time_training(o, config, report);
  if (o.json) {
    std::cout << report.dump(2) << "\n";
    return;
  }
  std::printf("seer bench-model: %s on %d GPU%s%s\n", config.name.c_str(), o.gpus, o.gpus > 1 ? "s" : "",
              o.gpus > 1 ? " (tensor-parallel prefill and decode, data-parallel training)" : "");
  if (report.contains("parameters"))
    std::printf("%.2fB parameters, weights %.1f GiB per GPU\n", double(report["parameters"].get<int64_t>()) / 1e9,
                report["weights_gib_per_gpu"].get<double>());
  std::printf("%8s %10s %8s %12s %10s %10s\n", "tokens", "attention", "density", "TTFT [ms]", "GPU GiB", "vs dense");
  double dense_ms = 0;
  for (const auto& r : report["results"]) {
    const double ms = r["ttft_ms"].get<double>();
    if (r["attention"] == "dense") dense_ms = ms;
    std::printf("%8lld %10s %8.2f %12.1f %10.1f %10.2f%s\n", (long long)r["tokens"].get<int64_t>(),
                r["attention"].get<std::string>().c_str(), r["density"].get<double>(), ms,
                r["gpu_memory_gib"].get<double>(), dense_ms / ms, r["finite_logits"].get<bool>() ? "" : "  NON-FINITE");
  }
  if (report.contains("decode")) {
    const auto& d = report["decode"];
    std::printf("decode at batch 1 after %lld tokens: %.1f tokens/s (%.2f ms/token over %lld tokens), KV cache %.1f GiB, "
                "GPU %.1f GiB%s\n",
                (long long)d["context"].get<int64_t>(), d["tokens_per_s"].get<double>(), d["ms_per_token"].get<double>(),
                (long long)d["tokens"].get<int64_t>(), d["kv_cache_gib"].get<double>(), d["gpu_memory_gib"].get<double>(),
                d["finite_logits"].get<bool>() ? "" : "  NON-FINITE");
  }
  if (report.contains("train")) {
    const auto& d = report["train"];
    std::printf("gate training, %d GPU%s x batch 1 x %lld tokens: %.0f tokens/s (%.1f ms/step over %lld steps, %lld "
                "gate parameters, loss %.3f), GPU %.1f GiB\n",
                d["gpus"].get<int>(), d["gpus"].get<int>() > 1 ? "s" : "", (long long)d["sequence_length"].get<int64_t>(),
                d["tokens_per_s"].get<double>(),
                d["ms_per_step"].get<double>(), (long long)d["steps"].get<int64_t>(),
                (long long)d["gate_parameters"].get<int64_t>(), d["loss"].get<double>(),
                d["gpu_memory_gib"].get<double>());
  }
}

}  // namespace

void add_bench_model_command(CLI::App& app) {
  auto o = std::make_shared<BenchModelOptions>();
  CLI::App* cmd =
      app.add_subcommand("bench-model", "time to first token of a Llama-3-shaped model on one or more GPUs");
  cmd->add_option("--shape", o->shape, "the synthetic model's shape: Llama-3 8b or 70b")
      ->check(CLI::IsMember({"8b", "70b"}));
  cmd->add_option("--gpus", o->gpus,
                  "GPUs: the model split over them for prefill and decode (tensor parallelism), one whole copy on "
                  "each for gate training (data parallelism)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--lengths", o->lengths, "prompt lengths")->delimiter(',');
  cmd->add_option("--density", o->density, "SeerAttention block density")->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--repeats", o->repeats, "timed runs per point (median)")->check(CLI::Range(1, 100));
  cmd->add_option("--decode-context", o->decode_context, "prompt length before the timed decode steps")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--decode-tokens", o->decode_tokens, "timed decode steps; 0 skips decode")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  cmd->add_option("--train-seq-len", o->train_seq_len, "tokens per gate-training step")
      ->check(CLI::Range(int64_t(64), int64_t(1) << 20));
  cmd->add_option("--train-steps", o->train_steps, "timed gate-training steps; 0 skips training")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o] { run(*o); });
}

}  // namespace seer::cli
