#include "train/gpu_gate_step.h"

#include "core/error.h"

namespace seer {

GpuGateStep::GpuGateStep(std::vector<GateTrainer*> trainers, const LlamaConfig& config, cuda::LlamaRuntime& runtime)
    : runtime_(runtime) {
  SEER_CHECK(!trainers.empty(), "gate training: no gates to train");
  for (GateTrainer* trainer : trainers) {
    SEER_CHECK(trainer != nullptr, "gate training: null trainer");
    SEER_CHECK(trainer->options().target_pooling == trainers.front()->options().target_pooling,
               "gates trained on one forward must share its ground truth's pooling");
    const std::vector<GateWeights<float>>& weights = trainer->weights();
    SEER_CHECK(int(weights.size()) == config.layers, "gate training: ", weights.size(), " gates for a model of ",
               config.layers, " layers");
    const GateConfig& gc = weights.front().config;
    const cuda::DeviceLayout& layout = runtime.layout();
    Variant v{trainer,
              {},
              cuda::GateWorkspace::create(layout, gc),
              cuda::GateGradWorkspace::create(layout, gc, trainer->options().skip_fraction, trainer->options().tail),
              cuda::DeviceBuffer<float>(size_t(layout.host.map_elements())),
              cuda::DeviceBuffer<float>(weights.size() * size_t(gc.wk_size())),
              cuda::DeviceBuffer<float>(weights.size() * size_t(gc.wq_size())),
              cuda::DeviceBuffer<float>(weights.size() * size_t(gc.bias_size())),
              cuda::DeviceBuffer<float>(trainer->options().target_power != 1.0 ? size_t(layout.host.map_elements())
                                                                                 : 0),
              cuda::DeviceBuffer<double>(weights.size()),
              {},
              {},
              {},
              {}};
    for (const GateWeights<float>& w : weights)
      v.gates.push_back(cuda::DeviceGate::upload(w, config.rope, layout.max_blocks));
    v.host_dwk.resize(v.dwk.size());
    v.host_dwq.resize(v.dwq.size());
    v.host_dbias.resize(v.dbias.size());
    v.host_kl.resize(weights.size());
    variants_.push_back(std::move(v));
  }
  forward_.mode = cuda::AttentionMode::ground_truth;
  forward_.gt_pooling = trainers.front()->options().target_pooling;
  forward_.on_layer = [this](const cuda::LayerCapture& c) {
    for (Variant& v : variants_) layer_loss(v, c);
  };
}

void GpuGateStep::layer_loss(Variant& v, const cuda::LayerCapture& c) {
  const size_t l = size_t(c.layer);
  const GateConfig& g = v.gates[l].config;
  const TrainOptions& options = v.trainer->options();
  const cudaStream_t stream = runtime_.stream();
  cuda::gate_forward(c.q_pre, c.k_pre, cuda::DType::bf16, *c.layout, v.gates[l], v.work, v.logits.data(), stream);
  const float* target = c.gt;
  if (options.target_power != 1.0) {
    cuda::power_normalize_rows(c.gt, v.target.data(), *c.layout, g.heads.q_heads, float(options.target_power), stream);
    target = v.target.data();
  }
  cuda::gate_loss_backward(v.logits.data(), target, *c.layout, v.gates[l], v.work, float(options.loss_scale),
                           v.grad_work, v.kl.data() + l, v.dwk.data() + l * size_t(g.wk_size()),
                           g.has_q_proj() ? v.dwq.data() + l * size_t(g.wq_size()) : nullptr,
                           g.has_block_bias ? v.dbias.data() + l * size_t(g.bias_size()) : nullptr, stream);
}

void GpuGateStep::upload_weights(Variant& v) {
  const std::vector<GateWeights<float>>& weights = v.trainer->weights();
  const auto upload = [&](const std::vector<float>& from, cuda::DeviceBuffer<float>& to) {
    if (!from.empty())
      SEER_CUDA_CHECK(cudaMemcpyAsync(to.data(), from.data(), from.size() * sizeof(float), cudaMemcpyHostToDevice,
                                      runtime_.stream()));
  };
  for (size_t l = 0; l < v.gates.size(); ++l) {
    upload(weights[l].wk, v.gates[l].wk);
    upload(weights[l].wq, v.gates[l].wq);
    upload(weights[l].bias, v.gates[l].bias);
  }
}

std::vector<double> GpuGateStep::run(std::span<const int32_t> tokens) {
  const cudaStream_t stream = runtime_.stream();
  for (Variant& v : variants_) {
    upload_weights(v);  // the trainer's weights may have changed since construction (resume) or the last step
    SEER_CUDA_CHECK(cudaMemsetAsync(v.kl.data(), 0, v.kl.size() * sizeof(double), stream));
  }
  runtime_.forward(tokens, forward_);
  const auto download = [&](const cuda::DeviceBuffer<float>& from, std::vector<float>& to) {
    if (from.size())
      SEER_CUDA_CHECK(
          cudaMemcpyAsync(to.data(), from.data(), from.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
  };
  for (Variant& v : variants_) {
    download(v.dwk, v.host_dwk);
    download(v.dwq, v.host_dwq);
    download(v.dbias, v.host_dbias);
    SEER_CUDA_CHECK(cudaMemcpyAsync(v.host_kl.data(), v.kl.data(), v.kl.size() * sizeof(double),
                                    cudaMemcpyDeviceToHost, stream));
  }
  SEER_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> losses;
  for (Variant& v : variants_) {
    const GateConfig& g = v.gates.front().config;
    for (size_t l = 0; l < v.gates.size(); ++l)
      v.trainer->add_layer_gradient(
          int(l), v.host_kl[l], std::span(v.host_dwk).subspan(l * size_t(g.wk_size()), size_t(g.wk_size())),
          std::span(v.host_dwq).subspan(l * size_t(g.wq_size()), size_t(g.wq_size())),
          std::span(v.host_dbias).subspan(l * size_t(g.bias_size()), size_t(g.bias_size())));
    losses.push_back(v.trainer->finish_step());
  }
  return losses;
}

}  // namespace seer
