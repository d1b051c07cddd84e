// `seer calibrate`: per-layer block budgets for a set of trained gates (gate/budget.h). On
// calibration text (the training books, never the evaluation ones) it measures, for each layer alone
// sparse and each candidate top-p mass, the kept density and the extra NLL per token; then for each
// target density it picks one mass per layer minimizing the summed extra NLL within the budget,
// checks the pick with every layer sparse at once (steering the real density to the target) against
// a uniform mass of about the same density, and writes the gates again with the budgets in their
// metadata. Runs on the GPU.
//
// The budgets buy perplexity, not retrieval: on the built-in model they starve a few layers that
// perplexity hardly needs and pass-key retrieval does (bench/ACCURACY.md). A retrieval term in the
// objective (the answer NLL of synthetic pass-key prompts) was tried and measured too noisy to steer
// by at any affordable number of prompts; so `--attn seer` keeps a uniform mass by default.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "cuda/llama_cuda.h"
#include "gate/budget.h"
#include "model/gates.h"
#include "model/llama_loader.h"
#include "train/token_corpus.h"

namespace seer::cli {
namespace {

struct CalibrateOptions {
  std::string model, gates, out;
  std::vector<std::string> data{"../shared/corpus/train"};
  int64_t context = 8192, windows = 8;
  std::vector<double> densities{0.1, 0.2, 0.3, 0.5};
  std::vector<double> masses{0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0};
  bool sink = kDefaultKeepSink;
  int local_blocks = kDefaultLocalBlocks;
  bool json = false;
};

void run(const CalibrateOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const std::string path = resolve_model_path(o.model);
  const std::string gates_path = resolve_gates_path(o.gates, path);
  const std::string out = o.out.empty() ? gates_path : o.out;
  const LlamaWeights weights = load_llama(path);
  const LlamaConfig& c = weights.config;
  const Tokenizer tokenizer = load_llama_tokenizer(path);
  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(weights);
  cuda::LlamaRuntime runtime(model, Sequences::single(o.context));
  const cuda::DeviceLayout& layout = runtime.layout();
  const int hq = c.q_heads;
  std::vector<cuda::DeviceGate> gates;
  for (const GateWeights<float>& g : load_gates(gates_path, c))
    gates.push_back(cuda::DeviceGate::upload(g, c.rope, layout.max_blocks));
  const std::vector<std::vector<int32_t>> windows = text_windows(o.data, tokenizer, o.context, 1, o.windows);

  cuda::GateWorkspace gate_work = cuda::GateWorkspace::create(layout, gates.front().config);
  cuda::SelectionWorkspace select_work = cuda::SelectionWorkspace::create(layout, hq);
  cuda::DeviceMask mask = cuda::DeviceMask::with_capacity(layout.total_rows * hq, layout.host.causal_pairs());
  cuda::DeviceMask every_block = cuda::DeviceMask::with_capacity(layout.total_rows * hq, layout.host.causal_pairs());
  cuda::DeviceBuffer<float> map(size_t(layout.host.map_elements()));
  SEER_CUDA_CHECK(cudaMemsetAsync(map.data(), 0, map.size() * sizeof(float), runtime.stream()));
  cuda::select_blocks(map.data(), layout, hq, {.density = 1.0}, select_work, every_block, runtime.stream());

  // One forward per window with SeerAttention at `selection` in the layers `sparse` says, the other
  // layers attending to every causal block: the NLL per token, and each sparse layer's kept density.
  struct Score {
    double nll = 0;
    std::vector<double> layer_density;
  };
  const auto score = [&](const SelectionOptions& selection, const std::function<bool(int)>& sparse) {
    Score r;
    r.layer_density.assign(size_t(c.layers), 0.0);
    for (const std::vector<int32_t>& tokens : windows) {
      cuda::ForwardOptions options;
      options.mode = cuda::AttentionMode::custom_mask;
      options.all_logits = true;
      options.mask_for_layer = [&](const cuda::LayerCapture& cap) -> const cuda::DeviceMask& {
        if (!sparse(cap.layer)) return every_block;
        cuda::gate_forward(cap.q_pre, cap.k_pre, cuda::DType::bf16, layout, gates[size_t(cap.layer)], gate_work,
                           map.data(), runtime.stream());
        cuda::select_blocks(map.data(), layout, hq, selection.for_layer(cap.layer), select_work, mask,
                            runtime.stream());
        r.layer_density[size_t(cap.layer)] +=
            double(mask.kept_blocks(runtime.stream())) / double(layout.host.causal_pairs()) / double(windows.size());
        return mask;
      };
      runtime.forward(tokens, options);
      const std::vector<float> nll = runtime.next_token_nll(tokens);
      for (size_t t = 0; t + 1 < nll.size(); ++t) r.nll += nll[t] / double(windows.size() * (tokens.size() - 1));
    }
    return r;
  };
  const auto mean = [](const std::vector<double>& v) {
    double m = 0;
    for (const double x : v) m += x / double(v.size());
    return m;
  };
  const SelectionOptions base{.method = SelectionOptions::Method::top_p, .keep_sink = o.sink,
                              .local_blocks = o.local_blocks};
  const Score dense = score(base, [](int) { return false; });

  std::vector<LayerCurve> curves(size_t(c.layers));
  const size_t total = size_t(c.layers) * o.masses.size();
  for (int l = 0; l < c.layers; ++l)
    for (const double mass : o.masses) {
      SelectionOptions sel = base;
      sel.mass = mass;
      const Score s = score(sel, [l](int layer) { return layer == l; });
      LayerCurve& curve = curves[size_t(l)];
      curve.mass.push_back(mass);
      curve.density.push_back(s.layer_density[size_t(l)]);
      curve.delta_nll.push_back(s.nll - dense.nll);
      const size_t done = size_t(l) * o.masses.size() + curve.mass.size();
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::fprintf(stderr, "\rcalibrate: layer %d/%d, mass %.2f, %zu/%zu, %.0f s", l + 1, c.layers, mass, done, total,
                   elapsed);
    }
  std::fprintf(stderr, "\n");

  // Budgets already in the gates for other densities stay when they were calibrated the same way.
  GateBudgets budgets = load_gate_budgets(gates_path, c.layers);
  if (budgets.keep_sink != o.sink || budgets.local_blocks != o.local_blocks || budgets.context != o.context) {
    if (!budgets.layer_mass.empty())
      std::fprintf(stderr, "calibrate: replacing the gates' budgets (other forced blocks or context)\n");
    budgets = GateBudgets{.keep_sink = o.sink, .local_blocks = o.local_blocks, .context = o.context};
  }
  std::ostringstream what;
  what << windows.size() << " windows of " << o.context << " tokens (the first of each of the first "
       << windows.size() << " files) from";
  for (const std::string& d : o.data) what << " " << d;
  budgets.calibration = what.str();
  nlohmann::json report = {{"gates", gates_path},
                           {"out", out},
                           {"windows", windows.size()},
                           {"context", o.context},
                           {"dense_ppl", std::exp(dense.nll)},
                           {"targets", nlohmann::json::array()},
                           {"curves", nlohmann::json::array()}};
  for (int l = 0; l < c.layers; ++l)
    report["curves"].push_back({{"layer", l},
                                {"mass", curves[size_t(l)].mass},
                                {"density", curves[size_t(l)].density},
                                {"delta_nll", curves[size_t(l)].delta_nll}});
  for (const double target : o.densities) {
    // The layers' densities interact (a sparse layer changes what the next one sees), so the mean
    // density of the pick, measured with every layer sparse, is steered to the target by rescaling
    // the target handed to the knapsack.
    double aim = target;
    LayerBudget budget;
    Score all;
    double real = 0;
    for (int round = 0; round < 4; ++round) {
      const LayerBudget pick = allocate_layer_budget(curves, aim);
      if (!pick.feasible) break;  // keep the last feasible pick, if any
      budget = pick;
      SelectionOptions calibrated = base;
      calibrated.layer_mass = budget.mass;
      all = score(calibrated, [](int) { return true; });
      real = mean(all.layer_density);
      if (std::abs(real - target) <= 0.02 * target || real <= 0) break;
      aim = std::min(1.0, aim * target / real);
    }
    if (budget.mass.empty()) {
      std::fprintf(stderr, "calibrate: no mass of the grid gets the mean density down to %g; add smaller --masses\n",
                   target);
      report["targets"].push_back({{"density", target}, {"infeasible", true}});
      continue;
    }
    // The uniform mass whose single-layer densities average nearest the same density, for comparison.
    size_t nearest = 0;
    double nearest_gap = 1e30;
    for (size_t m = 0; m < o.masses.size(); ++m) {
      double d = 0;
      for (const LayerCurve& curve : curves) d += curve.density[m] / double(c.layers);
      if (std::abs(d - real) < nearest_gap) nearest_gap = std::abs(d - real), nearest = m;
    }
    SelectionOptions uniform = base;
    uniform.mass = o.masses[nearest];
    const Score u = score(uniform, [](int) { return true; });
    budgets.layer_mass[target] = budget.mass;
    report["targets"].push_back({{"density", target},
                                 {"masses", budget.mass},
                                 {"real_density", real},
                                 {"ppl", std::exp(all.nll)},
                                 {"uniform_mass", o.masses[nearest]},
                                 {"uniform_density", mean(u.layer_density)},
                                 {"uniform_ppl", std::exp(u.nll)}});
  }
  save_gate_budgets(gates_path, out, budgets);
  report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (o.json) {
    std::cout << report.dump(2) << "\n";
    return;
  }
  std::printf("seer calibrate: %s -> %s\n%zu windows of %lld tokens, dense PPL %.4f, %.0f s\n", gates_path.c_str(),
              out.c_str(), windows.size(), (long long)o.context, report["dense_ppl"].get<double>(),
              report["seconds"].get<double>());
  std::printf("%-8s %-8s %-10s | uniform: %-6s %-8s %-10s\n", "target", "density", "PPL", "mass", "density", "PPL");
  for (const auto& t : report["targets"]) {
    if (t.contains("infeasible")) {
      std::printf("%-8.2f infeasible with these masses\n", t["density"].get<double>());
      continue;
    }
    std::printf("%-8.2f %-8.3f %-10.4f |          %-6.2f %-8.3f %-10.4f\n", t["density"].get<double>(),
                t["real_density"].get<double>(), t["ppl"].get<double>(), t["uniform_mass"].get<double>(),
                t["uniform_density"].get<double>(), t["uniform_ppl"].get<double>());
  }
  std::printf("per-layer masses:\n");
  for (const auto& t : report["targets"]) {
    if (t.contains("infeasible")) continue;
    std::printf("  %.2f:", t["density"].get<double>());
    for (const double m : t["masses"].get<std::vector<double>>()) std::printf(" %.2f", m);
    std::printf("\n");
  }
}

}  // namespace

void add_calibrate_command(CLI::App& app) {
  auto o = std::make_shared<CalibrateOptions>();
  CLI::App* cmd = app.add_subcommand("calibrate", "per-layer block budgets for trained gates (GPU)");
  cmd->add_option("--model", o->model, "GGUF file or Hugging Face directory (default: the built-in model)");
  cmd->add_option("--gates", o->gates, "trained gates (default: the shipped gates of the built-in model)");
  cmd->add_option("--out", o->out, "write the gates with their budgets here (default: over --gates)");
  cmd->add_option("--data", o->data, "calibration text files or folders (not the evaluation text)")->delimiter(',');
  cmd->add_option("--context", o->context, "tokens per window")->check(CLI::Range(int64_t(128), int64_t(1) << 20));
  cmd->add_option("--windows", o->windows, "windows, the first of each file")->check(CLI::Range(1, 10000));
  cmd->add_option("--densities", o->densities, "target mean densities")
      ->delimiter(',')
      ->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--masses", o->masses, "candidate top-p masses per layer")
      ->delimiter(',')
      ->check(CLI::Range(1e-6, 1.0));
  cmd->add_flag("--sink,!--no-sink", o->sink, "always keep the first key block, the attention sink (default: on)");
  cmd->add_option("--local-blocks", o->local_blocks, "key blocks kept up to the diagonal (default: 3)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o] { run(*o); });
}

}  // namespace seer::cli
