// The CPU forward pass of the built-in model (SmolLM2-135M): prefill tokens/s at 2k and 8k tokens
// with dense attention and with SeerAttention (untrained random gates: the cost is the same as
// trained ones', the quality is not), top-k density 0.1; decode tokens/s after a 512- and a
// 4096-token prompt.
// Run: build/bench/bench_model_cpu (needs models/, see scripts/setup.sh)
#include <benchmark/benchmark.h>

#include <random>

#include "model/forward_cpu.h"
#include "model/llama_loader.h"

namespace seer {
namespace {

const LlamaWeights& weights() {
  static const LlamaWeights w = load_llama(resolve_model_path(""));
  return w;
}

const std::vector<GateWeights<float>>& random_gates() {
  static const std::vector<GateWeights<float>> gates = [] {
    const LlamaConfig& c = weights().config;
    std::vector<GateWeights<float>> g;
    for (int l = 0; l < c.layers; ++l)
      g.push_back(GateWeights<float>::random(GateConfig{{c.q_heads, c.kv_heads, c.head_dim}, c.head_dim, 64}, 100 + l));
    return g;
  }();
  return gates;
}

// Attention costs the same whatever the tokens; random ids keep the benchmark self-contained.
std::vector<int32_t> token_ids(int64_t count) {
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int32_t> id(0, weights().config.vocab - 1);
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (int32_t& x : ids) x = id(rng);
  return ids;
}

void BM_Prefill(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const bool seer = state.range(1) != 0;
  CpuForwardOptions options;
  options.context = tokens;
  if (seer) {
    options.attention = AttentionMethod::seer;
    options.gates = random_gates();
    options.selection.density = 0.1;
  }
  LlamaCpu model(weights(), options);
  const std::vector<int32_t> ids = token_ids(tokens);
  for (auto _ : state) {
    model.reset();
    model.forward(ids, tokens - 1, [](int64_t, std::span<const float> logits) { benchmark::DoNotOptimize(logits[0]); });
  }
  state.SetLabel(seer ? "seer, top-k density 0.1" : "dense");
  state.counters["tokens/s"] = benchmark::Counter(double(tokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["density"] = model.last_density();
}
BENCHMARK(BM_Prefill)->ArgsProduct({{2048, 8192}, {0, 1}})->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

void BM_Decode(benchmark::State& state) {
  const int64_t prompt = state.range(0), steps = 64;
  CpuForwardOptions options;
  options.context = prompt + steps;
  LlamaCpu model(weights(), options);
  const std::vector<int32_t> ids = token_ids(prompt + steps);
  for (auto _ : state) {
    state.PauseTiming();
    model.reset();
    model.prefill(std::span(ids).first(size_t(prompt)));
    state.ResumeTiming();
    for (int64_t s = 0; s < steps; ++s) benchmark::DoNotOptimize(model.decode(ids[size_t(prompt + s)])[0]);
  }
  state.counters["tokens/s"] = benchmark::Counter(double(steps), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Decode)->Arg(512)->Arg(4096)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace seer

BENCHMARK_MAIN();
