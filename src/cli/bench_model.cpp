// `seer bench-model`: time to first token of the whole model on the GPU at long prompt lengths,
// dense against SeerAttention (random gates: timing only), with peak GPU memory; then decode
// tokens/s at batch 1 after a long prompt (each step returns its logits to the host, as generation
// does); then gate-training tokens/s (train/gpu_gate_step.h: ground-truth forward, gate loss and
// gradient on the GPU, AdamW on the host). The default model
// is a Llama-3-8B-shaped one with random bf16 weights made on the GPU (nothing downloaded).
// bench/gpu/hf_peer.py times HF transformers on the same shape in the same job.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "cli/commands.h"
#include "cuda/llama_cuda.h"
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

struct BenchModelOptions {
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

double used_gib() {
  size_t free_bytes = 0, total = 0;
  SEER_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  return double(total - free_bytes) / double(1 << 30);
}

void run(const BenchModelOptions& o) {
  const LlamaConfig config = llama3_8b_shape();
  const double base_gib = used_gib();
  const cuda::DeviceLlama model = cuda::DeviceLlama::synthetic(config, 42);
  nlohmann::json report = {{"model", config.name}, {"parameters", model.parameter_count()},
                           {"weights_gib", used_gib() - base_gib}, {"results", nlohmann::json::array()}};
  const GateConfig gate_config{{config.q_heads, config.kv_heads, config.head_dim}, config.head_dim, cuda::kBlock};
  cudaEvent_t start, stop;
  SEER_CUDA_CHECK(cudaEventCreate(&start));
  SEER_CUDA_CHECK(cudaEventCreate(&stop));
  for (const int64_t n : o.lengths) {
    const std::vector<int32_t> tokens = random_tokens(n, config.vocab, 7);
    const Sequences seqs = Sequences::single(n);
    std::vector<cuda::DeviceGate> gates;
    for (int l = 0; l < config.layers; ++l)
      gates.push_back(cuda::DeviceGate::upload(GateWeights<float>::random(gate_config, uint64_t(l)), config.rope,
                                               ceil_div(n, cuda::kBlock)));
    cuda::LlamaRuntime runtime(model, seqs);
    for (const bool sparse : {false, true}) {
      cuda::ForwardOptions options;
      options.mode = sparse ? cuda::AttentionMode::seer : cuda::AttentionMode::dense;
      options.gates = &gates;
      options.selection.density = o.density;
      runtime.forward(tokens, options);  // warm-up (and first-use allocations)
      std::vector<float> times;
      for (int r = 0; r < o.repeats; ++r) {
        SEER_CUDA_CHECK(cudaEventRecord(start, runtime.stream()));
        runtime.forward(tokens, options);
        SEER_CUDA_CHECK(cudaEventRecord(stop, runtime.stream()));
        SEER_CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        SEER_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        times.push_back(ms);
      }
      std::sort(times.begin(), times.end());
      const std::vector<float> logits = runtime.logits();
      const bool finite = std::all_of(logits.begin(), logits.end(), [](float x) { return std::isfinite(x); });
      report["results"].push_back({{"tokens", n}, {"attention", sparse ? "seer" : "dense"},
                                   {"density", sparse ? o.density : 1.0}, {"ttft_ms", times[times.size() / 2]},
                                   {"gpu_memory_gib", used_gib() - base_gib}, {"finite_logits", finite}});
    }
  }
  if (o.decode_tokens > 0) {
    cuda::DeviceKvCache cache = cuda::DeviceKvCache::create(config, o.decode_context + o.decode_tokens + 4);
    const std::vector<int32_t> prompt = random_tokens(o.decode_context, config.vocab, 11);
    {
      cuda::LlamaRuntime runtime(model, Sequences::single(o.decode_context));
      cuda::ForwardOptions options;
      options.kv_cache = &cache;
      runtime.forward(prompt, options);
      runtime.logits();  // synchronizes: the cache is complete
    }
    cuda::LlamaDecoder decoder(model, cache);
    for (int w = 0; w < 4; ++w) decoder.step(prompt[size_t(w)]);  // warm-up
    const auto begin = std::chrono::steady_clock::now();
    bool finite = true;
    for (int64_t i = 0; i < o.decode_tokens; ++i) {
      const std::span<const float> logits = decoder.step(prompt[size_t(i)]);
      finite = finite && std::isfinite(logits[0]);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    report["decode"] = {{"context", o.decode_context}, {"tokens", o.decode_tokens},
                        {"tokens_per_s", double(o.decode_tokens) / seconds},
                        {"ms_per_token", 1e3 * seconds / double(o.decode_tokens)},
                        {"kv_cache_gib", double(cache.bytes()) / double(1 << 30)},
                        {"gpu_memory_gib", used_gib() - base_gib}, {"finite_logits", finite}};
  }
  if (o.train_steps > 0) {
    cuda::LlamaRuntime runtime(model, Sequences::single(o.train_seq_len));
    std::vector<GateWeights<float>> init;
    for (int l = 0; l < config.layers; ++l) init.push_back(GateWeights<float>::random(gate_config, uint64_t(l)));
    GateTrainer trainer(std::move(init), TrainOptions{.steps = o.train_steps + 1, .warmup = 0});
    GpuGateStep step(trainer, config, runtime);
    const std::vector<int32_t> tokens = random_tokens(o.train_seq_len, config.vocab, 13);
    step.run(tokens);  // warm-up
    const auto begin = std::chrono::steady_clock::now();
    double loss = 0;
    for (int64_t i = 0; i < o.train_steps; ++i) loss = step.run(tokens).front();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    report["train"] = {{"sequence_length", o.train_seq_len}, {"steps", o.train_steps},
                       {"tokens_per_s", double(o.train_seq_len * o.train_steps) / seconds},
                       {"ms_per_step", 1e3 * seconds / double(o.train_steps)}, {"loss", loss},
                       {"gate_parameters", int64_t(config.layers) * gate_config.wk_size()},
                       {"gpu_memory_gib", used_gib() - base_gib}};
  }
  if (o.json) {
    std::cout << report.dump(2) << "\n";
    return;
  }
  std::printf("seer bench-model: %s, %.2fB parameters, weights %.1f GiB\n", config.name.c_str(),
              double(model.parameter_count()) / 1e9, report["weights_gib"].get<double>());
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
    std::printf("gate training, batch 1 x %lld tokens: %.0f tokens/s (%.1f ms/step over %lld steps, %lld gate "
                "parameters, loss %.3f), GPU %.1f GiB\n",
                (long long)d["sequence_length"].get<int64_t>(), d["tokens_per_s"].get<double>(),
                d["ms_per_step"].get<double>(), (long long)d["steps"].get<int64_t>(),
                (long long)d["gate_parameters"].get<int64_t>(), d["loss"].get<double>(),
                d["gpu_memory_gib"].get<double>());
  }
}

}  // namespace

void add_bench_model_command(CLI::App& app) {
  auto o = std::make_shared<BenchModelOptions>();
  CLI::App* cmd = app.add_subcommand("bench-model", "time to first token of a Llama-3-8B-shaped model on the GPU");
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
