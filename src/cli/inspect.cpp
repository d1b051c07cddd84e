// `seer inspect`: the pictures a user looks at to trust the sparsity. For a chosen layer and head,
// side by side: the gate's block probabilities (softmax over key blocks), the ground truth
// (row-normalized pooled attention, pooled as the gates were trained: attention/gt_pooling.h), and
// the blocks top-k selection keeps; plus a layers × heads chart of the density each head gets under
// threshold selection (the gate's own, per-head sparsity). Runs the model on the GPU.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/commands.h"
#include "core/png.h"
#include "cuda/llama_cuda.h"
#include "model/gates.h"
#include "model/llama_loader.h"

namespace seer::cli {
namespace {

struct InspectOptions {
  std::string model, gates, text = "data/dev/pride-and-prejudice.txt", out_dir = "inspect";
  int64_t tokens = 4096;
  int layer = -1, head = 0;  // layer -1: the middle layer
  double density = 0.1;
  double chart_threshold = 5e-3;  // top-k gives every head the same density; a threshold does not
};

// Maps t in [0, 1] to a dark-blue -> teal -> yellow ramp (viridis-like).
void color(double t, uint8_t& r, uint8_t& g, uint8_t& b) {
  t = std::clamp(t, 0.0, 1.0);
  r = uint8_t(255 * std::clamp(-0.3 + 1.6 * t * t, 0.0, 1.0));
  g = uint8_t(255 * std::clamp(0.05 + 0.85 * t, 0.0, 1.0));
  b = uint8_t(255 * std::clamp(0.35 + 0.6 * t - 0.85 * t * t, 0.0, 1.0));
}

// Draws an nb x nb map (values in [0, 1], NaN = not causal, white) at `scale` pixels per block.
void draw_map(Image& img, int x0, const std::vector<double>& map, int64_t nb, int scale) {
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t j = 0; j < nb; ++j) {
      const double v = map[size_t(i * nb + j)];
      uint8_t r = 255, g = 255, b = 255;
      if (!std::isnan(v)) color(v, r, g, b);
      for (int dy = 0; dy < scale; ++dy)
        for (int dx = 0; dx < scale; ++dx) img.set(x0 + int(j) * scale + dx, int(i) * scale + dy, r, g, b);
    }
}

// Probabilities on a log scale from 1e-4 to 1, so that small but kept blocks stay visible.
double log_scale(double p) { return p <= 0 ? 0.0 : std::clamp(1.0 + std::log10(p) / 4.0, 0.0, 1.0); }

void run(const InspectOptions& o) {
  const std::string path = resolve_model_path(o.model);
  const LlamaWeights weights = load_llama(path);
  const LlamaConfig& c = weights.config;
  const Tokenizer tokenizer = load_llama_tokenizer(path);
  std::ifstream in(o.text, std::ios::binary);
  SEER_CHECK(in.good(), "cannot read '", o.text, "'");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<int32_t> ids = tokenizer.encode(text, true);
  SEER_CHECK(int64_t(ids.size()) >= o.tokens, o.text, " has ", ids.size(), " tokens, fewer than --tokens ", o.tokens);
  ids.resize(size_t(o.tokens));
  const int layer = o.layer < 0 ? c.layers / 2 : o.layer;
  SEER_CHECK(layer < c.layers && o.head >= 0 && o.head < c.q_heads, "--layer/--head outside the model (", c.layers,
             " layers, ", c.q_heads, " heads)");

  const std::string gates_path = resolve_gates_path(o.gates, path);
  const std::vector<GateWeights<float>> trained = load_gates(gates_path, c);
  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(weights);
  cuda::LlamaRuntime runtime(model, Sequences::single(o.tokens));
  const cuda::DeviceLayout& layout = runtime.layout();
  const int64_t nb = layout.max_blocks;
  std::vector<cuda::DeviceGate> gates;
  for (const auto& g : trained) gates.push_back(cuda::DeviceGate::upload(g, c.rope, nb));
  cuda::GateWorkspace gate_work = cuda::GateWorkspace::create(layout, trained.front().config);
  cuda::SelectionWorkspace select_work = cuda::SelectionWorkspace::create(layout, c.q_heads);
  cuda::DeviceMask mask = cuda::DeviceMask::with_capacity(layout.total_rows * c.q_heads, layout.host.causal_pairs());
  cuda::DeviceBuffer<float> logits(size_t(layout.host.map_elements()));
  const SelectionOptions selection{.density = o.density};
  const SelectionOptions threshold{.method = SelectionOptions::Method::threshold, .threshold = o.chart_threshold};
  std::vector<double> head_density(size_t(c.layers * c.q_heads));
  std::vector<double> gate_map, gt_map, kept(size_t(nb * nb), NAN);

  cuda::ForwardOptions forward;
  forward.mode = cuda::AttentionMode::ground_truth;
  forward.gt_pooling = gates_target_pooling(gates_path);  // the map the gates learned to imitate
  forward.on_layer = [&](const cuda::LayerCapture& cap) {
    const cudaStream_t s = runtime.stream();
    cuda::gate_forward(cap.q_pre, cap.k_pre, cuda::DType::bf16, layout, gates[size_t(cap.layer)], gate_work,
                       logits.data(), s);
    cuda::select_blocks(logits.data(), layout, c.q_heads, threshold, select_work, mask, s);
    SEER_CUDA_CHECK(cudaStreamSynchronize(s));
    const std::vector<int32_t> per_head = mask.indptr.download();
    for (int h = 0; h < c.q_heads; ++h)
      head_density[size_t(cap.layer * c.q_heads + h)] =
          double(per_head[size_t((h + 1) * nb)] - per_head[size_t(h * nb)]) / double(nb * (nb + 1) / 2);
    if (cap.layer != layer) return;
    cuda::select_blocks(logits.data(), layout, c.q_heads, selection, select_work, mask, s);
    SEER_CUDA_CHECK(cudaStreamSynchronize(s));
    const std::vector<int32_t> indptr = mask.indptr.download();
    const std::vector<float> l = logits.download();
    std::vector<float> g(l.size());
    SEER_CUDA_CHECK(cudaMemcpy(g.data(), cap.gt, g.size() * 4, cudaMemcpyDeviceToHost));
    const std::vector<int32_t> indices = mask.indices.download();
    gate_map.assign(size_t(nb * nb), NAN);
    gt_map.assign(size_t(nb * nb), NAN);
    for (int64_t i = 0; i < nb; ++i) {
      const float* row = l.data() + (int64_t(o.head) * nb + i) * nb;
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j <= i; ++j) m = std::max(m, double(row[j]));
      for (int64_t j = 0; j <= i; ++j) sum += std::exp(row[j] - m);
      for (int64_t j = 0; j <= i; ++j) {
        gate_map[size_t(i * nb + j)] = log_scale(std::exp(row[j] - m) / sum);
        gt_map[size_t(i * nb + j)] = log_scale(g[size_t((int64_t(o.head) * nb + i) * nb + j)]);
        kept[size_t(i * nb + j)] = 0.0;
      }
      const int64_t r = int64_t(o.head) * nb + i;
      for (int32_t e = indptr[size_t(r)]; e < indptr[size_t(r) + 1]; ++e) kept[size_t(i * nb + indices[size_t(e)])] = 1.0;
    }
  };
  runtime.forward(ids, forward);
  SEER_CUDA_CHECK(cudaStreamSynchronize(runtime.stream()));

  std::filesystem::create_directories(o.out_dir);
  const int scale = std::max(1, int(512 / nb)), gap = 16, side = int(nb) * scale;
  Image maps(3 * side + 2 * gap, side);
  draw_map(maps, 0, gate_map, nb, scale);
  draw_map(maps, side + gap, gt_map, nb, scale);
  draw_map(maps, 2 * (side + gap), kept, nb, scale);
  const std::string maps_path = o.out_dir + "/layer" + std::to_string(layer) + "_head" + std::to_string(o.head) + ".png";
  write_png(maps_path, maps);

  const int cell = 24;
  Image chart(c.q_heads * cell, c.layers * cell);
  double lo = 1, hi = 0;
  for (double d : head_density) lo = std::min(lo, d), hi = std::max(hi, d);
  for (int l = 0; l < c.layers; ++l)
    for (int h = 0; h < c.q_heads; ++h) {
      uint8_t r, g, b;
      color((head_density[size_t(l * c.q_heads + h)] - lo) / std::max(hi - lo, 1e-9), r, g, b);
      for (int dy = 1; dy < cell; ++dy)
        for (int dx = 1; dx < cell; ++dx) chart.set(h * cell + dx, l * cell + dy, r, g, b);
    }
  write_png(o.out_dir + "/density.png", chart);

  std::printf("seer inspect: %s, %lld tokens (%lld blocks), top-k density %.2f\n", o.text.c_str(),
              (long long)o.tokens, (long long)nb, o.density);
  std::printf("%s: layer %d head %d — gate probabilities | ground truth (%s) | kept blocks (log colour scale "
              "1e-4..1)\n",
              maps_path.c_str(), layer, o.head, gt_pooling_name(forward.gt_pooling));
  std::printf("%s/density.png: layers (rows) x heads (columns), density with threshold %g: %.3f (dark) .. %.3f (yellow)\n",
              o.out_dir.c_str(), o.chart_threshold, lo, hi);
  std::printf("per-layer density at threshold %g (mean over heads):", o.chart_threshold);
  for (int l = 0; l < c.layers; ++l) {
    double sum = 0;
    for (int h = 0; h < c.q_heads; ++h) sum += head_density[size_t(l * c.q_heads + h)];
    std::printf(" %.3f", sum / c.q_heads);
  }
  std::printf("\n");
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand("inspect", "heatmaps of gate, ground truth and selected blocks (GPU)");
  cmd->add_option("--model", o->model, "GGUF file or Hugging Face directory (default: the built-in model)");
  cmd->add_option("--gates", o->gates, "gate weights (default: the shipped gates of the built-in model)");
  cmd->add_option("--text", o->text, "text to run");
  cmd->add_option("--tokens", o->tokens, "tokens of the text to use")->check(CLI::Range(int64_t(64), int64_t(1) << 20));
  cmd->add_option("--layer", o->layer, "layer to draw (default: the middle one)");
  cmd->add_option("--head", o->head, "query head to draw");
  cmd->add_option("--density", o->density, "top-k density")->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--chart-threshold", o->chart_threshold, "threshold selection for the per-head density chart")
      ->check(CLI::Range(0.0, 0.999));
  cmd->add_option("--out-dir", o->out_dir, "where the PNGs go");
  cmd->callback([o] { run(*o); });
}

}  // namespace seer::cli
