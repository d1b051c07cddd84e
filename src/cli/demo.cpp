// `seer demo`: every SeerAttention operator on a synthetic long sequence, with what each did.
//
// The inputs are random with planted structure so that attention is sparse the way real attention
// is: a few "heavy" key tokens (sinks and scattered hitters) that queries align with, plus locality
// from a slowly drifting component. The untrained gate and the ground-truth oracle then choose
// blocks, block-sparse attention runs on them, and each result is compared with dense attention.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <omp.h>
#include <random>
#include <vector>

#include "attention/attention_cpu.h"
#include "cli/commands.h"
#include "core/bf16.h"
#include "gate/attn_gate.h"
#include "gate/selection.h"

namespace seer::cli {
namespace {

struct DemoOptions {
  int64_t tokens = 8192;
  int q_heads = 9, kv_heads = 3, head_dim = 64;
  double density = 0.1;
  uint64_t seed = 1;
  bool json = false;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// q, k, v [T, H, d] in bf16: gaussian noise, a drifting shared direction (locality), and heavy keys.
struct SyntheticInputs {
  std::vector<bf16> q, k, v;
};

SyntheticInputs make_inputs(const DemoOptions& o) {
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  const int d = o.head_dim;
  SyntheticInputs in;
  in.q.resize(size_t(o.tokens * o.q_heads * d));
  in.k.resize(size_t(o.tokens * o.kv_heads * d));
  in.v.resize(in.k.size());
  std::vector<float> heavy(size_t(o.kv_heads * d)), drift(size_t(o.kv_heads * d));
  for (float& x : heavy) x = normal(rng);
  for (float& x : drift) x = normal(rng);
  const int group = o.q_heads / o.kv_heads;
  for (int64_t t = 0; t < o.tokens; ++t) {
    const bool is_heavy = t < 4 || uniform(rng) < 0.003f;
    for (int h = 0; h < o.kv_heads; ++h) {
      for (int c = 0; c < d; ++c) {
        float& dr = drift[size_t(h * d + c)];
        dr = 0.995f * dr + 0.1f * normal(rng);
        const float key = 0.5f * normal(rng) + 0.6f * dr + (is_heavy ? 1.5f * heavy[size_t(h * d + c)] : 0.0f);
        in.k[size_t((t * o.kv_heads + h) * d + c)] = bf16(key);
        in.v[size_t((t * o.kv_heads + h) * d + c)] = bf16(normal(rng));
        for (int g = 0; g < group; ++g) {
          const float query = 0.5f * normal(rng) + 0.6f * dr + 0.8f * heavy[size_t(h * d + c)];
          in.q[size_t((t * o.q_heads + h * group + g) * d + c)] = bf16(query);
        }
      }
    }
  }
  return in;
}

double relative_error(const std::vector<float>& x, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t n = 0; n < x.size(); ++n) {
    num += (double(x[n]) - ref[n]) * (double(x[n]) - ref[n]);
    den += double(ref[n]) * ref[n];
  }
  return std::sqrt(num / den);
}

void run_demo(const DemoOptions& o) {
  const HeadDims dims{o.q_heads, o.kv_heads, o.head_dim};
  dims.validate();
  const Sequences seqs = Sequences::single(o.tokens);
  const SyntheticInputs in = make_inputs(o);
  const std::span<const bf16> q(in.q), k(in.k), v(in.v);
  const BlockLayout layout(seqs, 64, o.q_heads);
  std::vector<float> dense_out(in.q.size()), lse(size_t(o.tokens * o.q_heads));
  std::vector<float> out(in.q.size()), gt(size_t(layout.map_elements()));

  nlohmann::json report = {{"tokens", o.tokens}, {"q_heads", o.q_heads}, {"kv_heads", o.kv_heads},
                           {"head_dim", o.head_dim}, {"block", 64}, {"requested_density", o.density},
                           {"threads", omp_get_max_threads()}, {"methods", nlohmann::json::array()}};
  auto record = [&](const std::string& name, double density, double error, double secs) {
    report["methods"].push_back({{"method", name}, {"density", density}, {"rel_error_vs_dense", error},
                                 {"seconds", secs}});
  };

  auto start = std::chrono::steady_clock::now();
  dense_attention_cpu<bf16>(q, k, v, seqs, dims, dense_out, lse);
  record("dense", 1.0, 0.0, seconds_since(start));

  start = std::chrono::steady_clock::now();
  ground_truth_attention_cpu<bf16>(q, k, v, seqs, dims, 64, out, lse, gt);
  record("dense + ground truth", 1.0, relative_error(out, dense_out), seconds_since(start));

  const SelectionOptions select{.density = o.density};
  const auto run_sparse = [&](const std::string& name, std::span<const float> logits, double select_secs) {
    const BlockMask mask = select_blocks(logits, layout, select);
    std::fill(out.begin(), out.end(), std::nanf(""));
    const auto t0 = std::chrono::steady_clock::now();
    block_sparse_attention_cpu<bf16>(q, k, v, seqs, dims, mask, out, lse);
    record(name, mask_density(mask, layout), relative_error(out, dense_out), select_secs + seconds_since(t0));
  };

  // Oracle: top-k of the ground truth itself (log keeps the order; the upper bound for any gate).
  std::vector<float> oracle(gt.size());
  for (size_t n = 0; n < gt.size(); ++n) oracle[n] = std::log(gt[n]);
  run_sparse("block-sparse, oracle top-k", oracle, 0.0);

  const GateConfig gate_cfg{dims, o.head_dim, 64};
  const GateWeights<float> gate = GateWeights<float>::random(gate_cfg, o.seed);
  const Rope rope(RopeConfig{.theta = 100000.0}, o.head_dim);
  std::vector<float> logits(size_t(layout.map_elements()));
  start = std::chrono::steady_clock::now();
  gate_forward<float, bf16>(q, k, seqs, gate, rope, logits);
  run_sparse("block-sparse, untrained gate top-k", logits, seconds_since(start));

  std::vector<double> gt64(gt.begin(), gt.end()), logits64(logits.begin(), logits.end());
  report["untrained_gate_kl"] = gate_kl_loss<double>(logits64, gt64, layout, 0.25, {});

  if (o.json) {
    std::cout << report.dump(2) << "\n";
    return;
  }
  std::printf("seer demo: %lld tokens, %d/%d heads, head dim %d, block 64, %d threads, bf16 inputs\n",
              (long long)o.tokens, o.q_heads, o.kv_heads, o.head_dim, omp_get_max_threads());
  std::printf("%-38s %9s %14s %10s\n", "method", "density", "rel err/dense", "time [s]");
  for (const auto& m : report["methods"])
    std::printf("%-38s %9.4f %14.3e %10.3f\n", m["method"].get<std::string>().c_str(), m["density"].get<double>(),
                m["rel_error_vs_dense"].get<double>(), m["seconds"].get<double>());
  std::printf("KL(ground truth || untrained gate) = %.4f (training drives this down)\n",
              report["untrained_gate_kl"].get<double>());
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto options = std::make_shared<DemoOptions>();
  CLI::App* cmd = app.add_subcommand("demo", "run every operator on a synthetic long sequence and report");
  cmd->add_option("--tokens", options->tokens, "sequence length")->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--q-heads", options->q_heads, "query heads")->check(CLI::Range(1, 256));
  cmd->add_option("--kv-heads", options->kv_heads, "key/value heads")->check(CLI::Range(1, 256));
  cmd->add_option("--head-dim", options->head_dim, "head dimension")->check(CLI::Range(2, 512));
  cmd->add_option("--density", options->density, "block density to select")->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--seed", options->seed, "random seed");
  cmd->add_flag("--json", options->json, "print a JSON report");
  cmd->callback([options] { run_demo(*options); });
}

}  // namespace seer::cli
