// Tensor parallelism's split (model/tensor_shard.h) on the CPU: the built-in model cut into 2 and 3
// shards (its 3 KV heads unevenly, 1 + 2), each shard's forward on its own thread, the residual
// updates summed across the threads after W_o and W_down, gives the one-device logits: dense, with
// SeerAttention (gates cut the same way, both W_k layouts), and decoding through the shards' KV
// caches. The GPU runs the same split with NCCL (tests/cuda/test_tensor_parallel_cuda.cpp).
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <cmath>
#include <thread>

#include "builtin_model.h"
#include "model/forward_cpu.h"
#include "model/tensor_shard.h"
#include "reference.h"
#include "test_support.h"

namespace seer {
namespace {

// Partial sums in another order round differently (float32 throughout).
constexpr double kTolerance = 5e-4;

// Sums one buffer per thread over `ranks` threads, in place, adding in rank order (so every
// rank gets the same bits): the in-process counterpart of an all-reduce. A thread that fails
// calls fail(): the others then throw at their next reduction instead of waiting for it for ever.
class ThreadAllReduce {
 public:
  explicit ThreadAllReduce(int ranks) : slots_(size_t(ranks)), sync_(ranks) {}
  void operator()(int rank, std::span<float> x) {
    slots_[size_t(rank)] = x;
    sync_.arrive_and_wait();
    if (failed_) throw Error("another rank failed");
    if (rank == 0) {
      sum_.assign(x.begin(), x.end());
      for (size_t r = 1; r < slots_.size(); ++r)
        for (size_t i = 0; i < x.size(); ++i) sum_[i] += slots_[r][i];
    }
    sync_.arrive_and_wait();
    std::copy(sum_.begin(), sum_.end(), x.begin());
    sync_.arrive_and_wait();  // nobody overwrites sum_ before every rank has read it
  }
  void fail() {
    failed_ = true;
    sync_.arrive_and_drop();
  }

 private:
  std::vector<std::span<float>> slots_;
  std::vector<float> sum_;
  std::barrier<> sync_;
  std::atomic<bool> failed_{false};
};

// Logits of every prompt position, then of `decoded` tokens decoded after it.
struct ForwardRun {
  std::vector<std::vector<float>> logits;
  double density = 0;
};

ForwardRun run_model(const LlamaWeights& weights, const CpuForwardOptions& options, std::span<const int32_t> prompt,
              std::span<const int32_t> decoded) {
  LlamaCpu model(weights, options);
  ForwardRun run;
  model.forward(prompt, 0,
                [&](int64_t, std::span<const float> row) { run.logits.emplace_back(row.begin(), row.end()); });
  run.density = model.last_density();
  for (int32_t t : decoded) {
    const std::span<const float> row = model.decode(t);
    run.logits.emplace_back(row.begin(), row.end());
  }
  return run;
}

// Rank 0's run of the model split over `ranks` threads (every rank's logits are the same sums).
ForwardRun run_split(const LlamaWeights& weights, int ranks, CpuForwardOptions options,
              std::span<const GateWeights<float>> gates, std::span<const int32_t> prompt,
              std::span<const int32_t> decoded) {
  ThreadAllReduce reduce(ranks);
  std::vector<ForwardRun> runs(static_cast<size_t>(ranks));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        const TensorShard shard = tensor_shard(weights.config, r, ranks);
        const LlamaWeights part = shard_weights(weights, shard);
        std::vector<GateWeights<float>> part_gates;
        for (const GateWeights<float>& g : gates) part_gates.push_back(shard_gate(g, shard));
        CpuForwardOptions o = options;
        o.gates = part_gates;
        o.rank = r;
        o.all_reduce = [&reduce, r](std::span<float> x) { reduce(r, x); };
        runs[size_t(r)] = run_model(part, o, prompt, decoded);
      } catch (...) {
        errors[size_t(r)] = std::current_exception();
        reduce.fail();
      }
    });
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  for (int r = 1; r < ranks; ++r) EXPECT_EQ(runs[size_t(r)].logits, runs[0].logits) << "rank " << r;
  return runs[0];
}

double max_diff(const ForwardRun& a, const ForwardRun& b) {
  EXPECT_EQ(a.logits.size(), b.logits.size());
  double worst = 0;
  for (size_t p = 0; p < a.logits.size() && p < b.logits.size(); ++p) {
    EXPECT_EQ(a.logits[p].size(), b.logits[p].size());
    worst = std::max(worst, test::max_abs_error(a.logits[p], b.logits[p]));
  }
  return worst;
}

std::vector<int32_t> passage(size_t count) {
  const std::vector<int32_t> ids = test::numpy_reference()["passage"]["ids"].get<std::vector<int32_t>>();
  return {ids.begin(), ids.begin() + std::ptrdiff_t(count)};
}

TEST(TensorShard, SplitsHeadsByGroupAndFeaturesIntoTiles) {
  LlamaConfig c;
  c.architecture = "llama";
  c.layers = 1;
  c.hidden = 64;
  c.q_heads = 9;
  c.kv_heads = 3;
  c.head_dim = 64;
  c.intermediate = 1536;
  c.vocab = 10;
  const TensorShard a = tensor_shard(c, 0, 2), b = tensor_shard(c, 1, 2);
  EXPECT_EQ(a.kv_begin, 0);
  EXPECT_EQ(a.kv_end, 1);
  EXPECT_EQ(b.kv_begin, 1);
  EXPECT_EQ(b.kv_end, 3);
  EXPECT_EQ(a.q_end, 3);  // whole GQA groups
  EXPECT_EQ(b.q_begin, 3);
  EXPECT_EQ(b.q_end, 9);
  EXPECT_EQ(a.inter_end, 768);
  EXPECT_EQ(b.inter_end, 1536);
  for (int r = 0; r < 3; ++r) {  // 24 tiles of 64 over 3 ranks
    const TensorShard s = tensor_shard(c, r, 3);
    EXPECT_EQ(s.inter_begin, 512 * r);
    EXPECT_EQ(s.kv_heads(), 1);
    EXPECT_EQ(shard_config(c, s).q_heads, 3);
  }
  c.intermediate = 100;  // not a multiple of 64: feature by feature
  EXPECT_EQ(tensor_shard(c, 1, 3).inter_begin, 33);
  EXPECT_EQ(tensor_shard(c, 2, 3).inter_end, 100);
  test::expect_error([&] { tensor_shard(c, 0, 4); }, {"cannot be split over 4 GPUs", "3 KV heads"});
  test::expect_error([&] { tensor_shard(c, 2, 2); }, {"rank 2 outside [0, 2)"});
  test::expect_error([&] { tensor_shard(c, 0, 0); }, {"over 0 GPUs"});
}

TEST(TensorShard, ShardsOfTheBuiltInModelGiveItsLogits) {
  SEER_REQUIRE_BUILTIN_MODEL(weights);
  const std::vector<int32_t> ids = passage(200);
  const std::span<const int32_t> prompt = std::span(ids).first(190), decoded = std::span(ids).subspan(190);
  CpuForwardOptions options;
  options.context = 200;
  const ForwardRun reference = run_model(*weights, options, prompt, decoded);
  for (const int ranks : {2, 3}) {
    const double diff = max_diff(run_split(*weights, ranks, options, {}, prompt, decoded), reference);
    std::cout << "[ tensor parallel ] " << ranks << " ranks, dense: max |logit diff| " << diff << "\n";
    EXPECT_LT(diff, kTolerance) << ranks << " ranks";
  }
}

TEST(TensorShard, ShardedGatesSelectEachHeadsBlocks) {
  SEER_REQUIRE_BUILTIN_MODEL(weights);
  const LlamaConfig& c = weights->config;
  const std::vector<int32_t> ids = passage(300);
  CpuForwardOptions options;
  options.context = 300;
  options.attention = AttentionMethod::seer;
  options.selection.density = 0.3;
  // d_g = d (W_k per query head) and d_g = 8 (W_q beside a per-KV-head W_k, as the shipped gates).
  for (const int gate_dim : {c.head_dim, 8}) {
    std::vector<GateWeights<float>> gates;
    for (int l = 0; l < c.layers; ++l)
      gates.push_back(GateWeights<float>::random(GateConfig{{c.q_heads, c.kv_heads, c.head_dim}, gate_dim, 64}, 3 + l));
    CpuForwardOptions one = options;
    one.gates = gates;
    const ForwardRun reference = run_model(*weights, one, ids, {});
    ASSERT_LT(reference.density, 0.6);  // sparse: a wrong head's gate would change the logits
    const double diff = max_diff(run_split(*weights, 3, options, gates, ids, {}), reference);
    std::cout << "[ tensor parallel ] 3 ranks, SeerAttention d_g " << gate_dim << ": max |logit diff| " << diff
              << "\n";
    EXPECT_LT(diff, kTolerance) << "d_g " << gate_dim;
  }
  // A gate cut for the wrong heads would be caught by its shape.
  GateWeights<float> gate = GateWeights<float>::random(GateConfig{{3, 1, 64}, 64, 64}, 1);
  test::expect_error([&] { shard_gate(gate, tensor_shard(c, 1, 2)); }, {"other head counts"});
}

}  // namespace
}  // namespace seer
