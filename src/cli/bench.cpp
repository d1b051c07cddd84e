// `seer bench`: the CUDA attention kernels timed on the GPU with CUDA events (median of repeats),
// dense vs ground truth vs block-sparse on the same inputs; each ratio to dense against dense timed
// alternately with the kernel (EventTimer::paired_median_ms). The ground truth, block-sparse and the
// whole SeerAttention step are also timed alone, back to back after a warm-up, as the anchors' peers
// were (shared/docs/anchors.md): the H200 runs at its power cap, so a kernel's clocks depend on what
// runs beside it (block-sparse draws more power than dense and takes 2-4% longer alone;
// bench/RESULTS.md, "Block-sparse runs at the power cap"). The gate and selection parts are timed
// back to back only. bench/gpu/run_device.sh runs it beside PyTorch's SDPA (bench/gpu/sdpa_peer.py)
// in one job.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <vector>

#include "cli/commands.h"
#include "cuda/attention_cuda.h"
#include "cuda/gate_cuda.h"
#include "cuda/random_fill.h"

namespace seer::cli {
namespace {

constexpr int kBlockSize = cuda::kBlock;

struct BenchOptions {
  std::vector<int64_t> lengths{8192, 32768, 131072};
  int q_heads = 32, kv_heads = 8, head_dim = 128;
  std::vector<double> densities{0.1, 0.5};
  std::string dtype = "bf16";
  std::vector<std::string> kernels{"dense", "gt", "sparse", "gate"};
  double seconds_per_kernel = 1.0;
  bool json = false;
};

class EventTimer {
 public:
  EventTimer() {
    SEER_CUDA_CHECK(cudaEventCreate(&start_));
    SEER_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  // Median milliseconds of `fn` over repeats chosen to fill about `budget_s`, after two warm-ups.
  template <typename Fn>
  double median_ms(Fn&& fn, double budget_s) {
    const double first = time_once(fn);
    time_once(fn);
    std::vector<double> times(size_t(repeats_for(budget_s, first)));
    for (double& t : times) t = time_once(fn);
    return median(times);
  }
  // Medians of `a` and `b` timed alternately, so that both see the same clocks and temperature: the
  // H200 runs these kernels at its 700 W power cap, where the SM clock wanders between about 1.6 and
  // 1.9 GHz (bench/RESULTS.md), enough to move a ratio of medians taken one after the other by 10%.
  template <typename A, typename B>
  std::pair<double, double> paired_median_ms(A&& a, B&& b, double budget_s) {
    const double first = time_once(a) + time_once(b);
    time_once(a), time_once(b);
    std::vector<double> ta(size_t(repeats_for(budget_s, first))), tb(ta.size());
    for (size_t r = 0; r < ta.size(); ++r) ta[r] = time_once(a), tb[r] = time_once(b);
    return {median(ta), median(tb)};
  }
  // Runs `fn` untimed for about `seconds` (at most 1000 runs, as sdpa_peer.py warms cuDNN): the GPU
  // leaves its idle clocks and reaches its power cap before anything is timed.
  template <typename Fn>
  void warm_up(Fn&& fn, double seconds) {
    const double first = time_once(fn);
    for (int r = repeats_for(seconds, first, 1000); r > 0; --r) time_once(fn);
  }

 private:
  static int repeats_for(double budget_s, double ms, int most = 100) {
    return std::clamp(int(budget_s * 1e3 / std::max(ms, 1e-3)), 3, most);
  }
  static double median(std::vector<double> times) {
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    return times[times.size() / 2];
  }
  template <typename Fn>
  double time_once(Fn&& fn) {
    SEER_CUDA_CHECK(cudaEventRecord(start_));
    fn();
    SEER_CUDA_CHECK(cudaEventRecord(stop_));
    SEER_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    SEER_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms;
  }
  cudaEvent_t start_, stop_;
};

// Random causal block mask that always keeps the diagonal, with about `density` of the causal blocks.
BlockMask random_causal_mask(const BlockLayout& layout, double density, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const double nb = double(layout.blocks[0]);
  const double keep = std::clamp((density * nb * (nb + 1) / 2 - nb) / std::max(1.0, nb * (nb - 1) / 2), 0.0, 1.0);
  std::bernoulli_distribution coin(keep);
  BlockMask mask{layout.block, layout.heads, {0}, {}};
  for (int h = 0; h < layout.heads; ++h)
    for (int64_t i = 0; i < layout.blocks[0]; ++i) {
      for (int32_t j = 0; j < i; ++j)
        if (coin(rng)) mask.indices.push_back(j);
      mask.indices.push_back(int32_t(i));
      mask.indptr.push_back(int64_t(mask.indices.size()));
    }
  return mask;
}

void run_bench(const BenchOptions& o) {
  const HeadDims dims{o.q_heads, o.kv_heads, o.head_dim};
  dims.validate();
  SEER_CHECK(o.dtype == "bf16" || o.dtype == "fp16", "--dtype must be bf16 or fp16, got ", o.dtype);
  const cuda::DType dtype = o.dtype == "bf16" ? cuda::DType::bf16 : cuda::DType::f16;
  cudaDeviceProp prop{};
  SEER_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  nlohmann::json report = {{"gpu", prop.name}, {"q_heads", o.q_heads}, {"kv_heads", o.kv_heads},
                           {"head_dim", o.head_dim}, {"dtype", o.dtype}, {"results", nlohmann::json::array()}};
  EventTimer timer;
  const auto has = [&](const char* k) { return std::find(o.kernels.begin(), o.kernels.end(), k) != o.kernels.end(); };
  for (const int64_t n : o.lengths) {
    const Sequences seqs = Sequences::single(n);
    const cuda::DeviceLayout layout = cuda::DeviceLayout::create(seqs, o.q_heads);
    cuda::DeviceBuffer<uint16_t> q(size_t(n * o.q_heads * o.head_dim)), k(size_t(n * o.kv_heads * o.head_dim)),
        v(k.size()), out(q.size());
    cuda::DeviceBuffer<float> lse(size_t(n * o.q_heads));
    cuda::fill_random(q.data(), int64_t(q.size()), dtype, 1, 1.0f, nullptr);
    cuda::fill_random(k.data(), int64_t(k.size()), dtype, 2, 1.0f, nullptr);
    cuda::fill_random(v.data(), int64_t(v.size()), dtype, 3, 1.0f, nullptr);
    const cuda::AttentionArgs args{q.data(), k.data(), v.data(), out.data(), lse.data(), dtype, dims};
    const double flops = 4.0 * o.q_heads * double(n) * double(n) / 2 * o.head_dim;
    const auto dense = [&] { cuda::dense_forward(args, layout, nullptr); };
    // dense_ms: the dense kernel's median in the same alternating run (0 without dense); alone_ms:
    // the kernel's median run back to back (time_alone), none (null in the JSON) if not timed so.
    auto record = [&](const std::string& kernel, double density, double ms, double dense_ms,
                      std::optional<double> alone_ms) {
      report["results"].push_back({{"kernel", kernel}, {"tokens", n}, {"density", density}, {"ms", ms},
                                   {"dense_equivalent_tflops", flops / ms / 1e9}, {"dense_ms", dense_ms},
                                   {"speedup_vs_dense", dense_ms > 0 ? dense_ms / ms : 0.0},
                                   {"ms_alone", alone_ms ? nlohmann::json(*alone_ms) : nlohmann::json()}});
    };
    // Times fn, and dense alternately with it when dense is benchmarked: {fn's ms, dense's ms}.
    const auto time_against_dense = [&](auto&& fn) -> std::pair<double, double> {
      if (!has("dense")) return {timer.median_ms(fn, o.seconds_per_kernel), 0.0};
      const auto [dense_ms, ms] = timer.paired_median_ms(dense, fn, o.seconds_per_kernel);
      return {ms, dense_ms};
    };
    // fn's median back to back, once it has run alone for a while (its own clocks, not dense's);
    // without dense, time_against_dense already timed it so: its `ms`.
    const auto time_alone = [&](auto&& fn, double ms) {
      if (!has("dense")) return ms;
      timer.warm_up(fn, 0.3);
      return timer.median_ms(fn, o.seconds_per_kernel);
    };
    double dense_row_ms = 0;
    if (has("dense")) {
      timer.warm_up(dense, 0.3);
      dense_row_ms = timer.median_ms(dense, o.seconds_per_kernel);
      record("dense", 1.0, dense_row_ms, dense_row_ms, dense_row_ms);
    }
    if (has("gt")) {
      cuda::DeviceBuffer<float> gt(size_t(layout.host.map_elements())), scratch(size_t(layout.scratch_elements));
      const auto gt_forward = [&] { cuda::ground_truth_forward(args, layout, gt.data(), scratch.data(), nullptr); };
      const auto [ms, dense_ms] = time_against_dense(gt_forward);
      record("ground_truth", 1.0, ms, dense_ms, time_alone(gt_forward, ms));
    }
    if (has("sparse"))
      for (const double density : o.densities) {
        const BlockMask mask = random_causal_mask(layout.host, density, 11);
        const cuda::DeviceMask dmask = cuda::DeviceMask::upload(mask, layout.host);
        const auto sparse_forward = [&] { cuda::block_sparse_forward(args, layout, dmask, nullptr); };
        const auto [ms, dense_ms] = time_against_dense(sparse_forward);
        record("block_sparse", mask_density(mask, layout.host), ms, dense_ms, time_alone(sparse_forward, ms));
      }
    if (has("gate")) {
      // AttnGate (random weights), top-k selection at the first density and top-p (seer's default
      // selection, the radix select weighted by mass) on its logits, then the whole SeerAttention
      // step: gate, top-k selection and block-sparse attention on the gate's mask.
      const GateConfig config{dims, o.head_dim, kBlockSize};
      const cuda::DeviceGate gate = cuda::DeviceGate::upload(GateWeights<float>::random(config, 5),
                                                             RopeConfig{.theta = 500000.0}, layout.max_blocks);
      cuda::GateWorkspace gate_work = cuda::GateWorkspace::create(layout, config);
      cuda::SelectionWorkspace select_work = cuda::SelectionWorkspace::create(layout, o.q_heads);
      cuda::DeviceMask mask = cuda::DeviceMask::with_capacity(layout.total_rows * o.q_heads, layout.host.causal_pairs());
      cuda::DeviceBuffer<float> logits(size_t(layout.host.map_elements()));
      const SelectionOptions select{.density = o.densities.front()};
      const auto run_gate = [&] {
        cuda::gate_forward(q.data(), k.data(), dtype, layout, gate, gate_work, logits.data(), nullptr);
      };
      const auto run_select = [&](const SelectionOptions& s) {
        cuda::select_blocks(logits.data(), layout, o.q_heads, s, select_work, mask, nullptr);
      };
      const auto gate_and_select = [&] {
        run_gate();
        run_select(select);
      };
      const auto kept = [&] { return double(mask.kept_blocks(nullptr)) / double(layout.host.causal_pairs()); };
      // The parts on their own, back to back (each ratio against the dense row), for where the time
      // goes; then the units a forward runs, gate and selection together, timed against dense.
      // Alternating a part with dense would time it with its inputs evicted from L2 by dense, which
      // a forward does not do.
      const SelectionOptions top_p{.method = SelectionOptions::Method::top_p, .mass = kDefaultMass};
      const double gate_ms = timer.median_ms(run_gate, o.seconds_per_kernel);
      record("gate", 1.0, gate_ms, dense_row_ms, gate_ms);
      const double select_ms = timer.median_ms([&] { run_select(select); }, o.seconds_per_kernel);
      record("select", kept(), select_ms, dense_row_ms, select_ms);
      const double top_p_ms = timer.median_ms([&] { run_select(top_p); }, o.seconds_per_kernel);
      record("select top-p", kept(), top_p_ms, dense_row_ms, top_p_ms);
      const auto [top_p_all_ms, top_p_dense_ms] = time_against_dense([&] {
        run_gate();
        run_select(top_p);
      });
      record("gate+top-p", kept(), top_p_all_ms, top_p_dense_ms, std::nullopt);
      const auto [select_all_ms, select_dense_ms] = time_against_dense(gate_and_select);
      const double density = kept();
      record("gate+select", density, select_all_ms, select_dense_ms, std::nullopt);
      const auto seer_forward = [&] {
        gate_and_select();
        cuda::block_sparse_forward(args, layout, mask, nullptr);
      };
      const auto [seer_ms, seer_dense_ms] = time_against_dense(seer_forward);
      record("seer (all)", density, seer_ms, seer_dense_ms, time_alone(seer_forward, seer_ms));
    }
    SEER_CUDA_CHECK(cudaDeviceSynchronize());
  }
  if (o.json) {
    std::cout << report.dump(2) << "\n";
    return;
  }
  std::printf("seer bench: %s, %d/%d heads, head dim %d, %s, causal, batch 1\n", prop.name, o.q_heads, o.kv_heads,
              o.head_dim, o.dtype.c_str());
  std::printf("%-14s %8s %8s %10s %10s %9s %10s\n", "kernel", "tokens", "density", "ms", "TFLOP/s*", "vs dense",
              "ms alone");
  for (const auto& r : report["results"]) {
    char alone_text[32] = "-";
    if (!r["ms_alone"].is_null()) std::snprintf(alone_text, sizeof alone_text, "%.3f", r["ms_alone"].get<double>());
    std::printf("%-14s %8lld %8.3f %10.3f %10.1f %9.2f %10s\n", r["kernel"].get<std::string>().c_str(),
                (long long)r["tokens"].get<int64_t>(), r["density"].get<double>(), r["ms"].get<double>(),
                r["dense_equivalent_tflops"].get<double>(), r["speedup_vs_dense"].get<double>(), alone_text);
  }
  std::printf("* dense-equivalent: 4*H*N^2*d/2 FLOPs over the time, whatever the density. With dense timed, ms\n"
              "  and vs dense of gt, block_sparse and the gate+ rows and seer (all): alternately with dense; the\n"
              "  gate and select rows: back to back. ms alone: back to back after a warm-up (its own clocks)\n");
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "time the CUDA attention kernels on the GPU");
  cmd->add_option("--lengths", o->lengths, "sequence lengths")->delimiter(',');
  cmd->add_option("--q-heads", o->q_heads, "query heads")->check(CLI::Range(1, 256));
  cmd->add_option("--kv-heads", o->kv_heads, "key/value heads")->check(CLI::Range(1, 256));
  cmd->add_option("--head-dim", o->head_dim, "head dimension (64 or 128)")->check(CLI::IsMember({64, 128}));
  cmd->add_option("--densities", o->densities, "block densities for the sparse kernel")->delimiter(',');
  cmd->add_option("--dtype", o->dtype, "bf16 or fp16")->check(CLI::IsMember({"bf16", "fp16"}));
  cmd->add_option("--kernels", o->kernels, "kernels to time: dense, gt, sparse, gate")->delimiter(',');
  cmd->add_option("--seconds", o->seconds_per_kernel, "time budget per kernel and shape");
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace seer::cli
