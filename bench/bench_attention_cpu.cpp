// CPU operators at long context: dense vs ground truth vs block-sparse (same inputs), and the gate.
// Run: build/bench/bench_attention_cpu --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <random>

#include "attention/attention_cpu.h"
#include "core/bf16.h"
#include "gate/attn_gate.h"
#include "gate/selection.h"

namespace seer {
namespace {

// The built-in model's attention shape (SmolLM2-135M: 9 query / 3 KV heads, head dim 64), bf16.
struct Problem {
  Sequences seqs;
  HeadDims dims{9, 3, 64};
  std::vector<bf16> q, k, v;
  std::vector<float> out, lse;
  explicit Problem(int64_t tokens) : seqs(Sequences::single(tokens)) {
    std::mt19937_64 rng(7);
    std::normal_distribution<float> normal;
    for (auto* x : {&q, &k, &v}) x->resize(size_t(tokens * (x == &q ? 9 : 3) * 64));
    for (auto* x : {&q, &k, &v})
      for (bf16& e : *x) e = bf16(normal(rng));
    out.resize(q.size());
    lse.resize(size_t(tokens * 9));
  }
};

void BM_Dense(benchmark::State& state) {
  Problem p(state.range(0));
  for (auto _ : state)
    dense_attention_cpu<bf16>(std::span<const bf16>(p.q), p.k, p.v, p.seqs, p.dims, p.out, p.lse);
  const double flops = 4.0 * 9 * double(state.range(0)) * double(state.range(0)) / 2 * 64;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_GroundTruth(benchmark::State& state) {
  Problem p(state.range(0));
  const BlockLayout layout(p.seqs, 64, 9);
  std::vector<float> gt(size_t(layout.map_elements()));
  for (auto _ : state)
    ground_truth_attention_cpu<bf16>(std::span<const bf16>(p.q), p.k, p.v, p.seqs, p.dims, 64, p.out, p.lse, gt);
}

// Block-sparse attention on a top-k mask of random logits at density range(1)/100.
void BM_BlockSparse(benchmark::State& state) {
  Problem p(state.range(0));
  const BlockLayout layout(p.seqs, 64, 9);
  std::vector<float> logits(size_t(layout.map_elements()));
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal;
  for (float& x : logits) x = normal(rng);
  const BlockMask mask = select_blocks(logits, layout, {.density = double(state.range(1)) / 100});
  for (auto _ : state)
    block_sparse_attention_cpu<bf16>(std::span<const bf16>(p.q), p.k, p.v, p.seqs, p.dims, mask, p.out, p.lse);
  state.counters["density"] = mask_density(mask, layout);
}

void BM_GateAndSelect(benchmark::State& state) {
  Problem p(state.range(0));
  const BlockLayout layout(p.seqs, 64, 9);
  const GateWeights<float> w = GateWeights<float>::random({p.dims, 64, 64}, 1);
  const Rope rope(RopeConfig{.theta = 100000}, 64);
  std::vector<float> logits(size_t(layout.map_elements()));
  for (auto _ : state) {
    gate_forward<float, bf16>(std::span<const bf16>(p.q), p.k, p.seqs, w, rope, logits);
    benchmark::DoNotOptimize(select_blocks(logits, layout, {.density = 0.1}));
  }
}

BENCHMARK(BM_Dense)->Arg(2048)->Arg(8192)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GroundTruth)->Arg(2048)->Arg(8192)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BlockSparse)->Args({2048, 10})->Args({8192, 10})->Args({8192, 30})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GateAndSelect)->Arg(8192)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace seer

BENCHMARK_MAIN();
