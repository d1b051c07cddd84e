#include "train/gpu_gate_step.h"

#include "core/error.h"

namespace seer {

GpuGateStep::GpuGateStep(GateTrainer& trainer, const LlamaConfig& config, cuda::LlamaRuntime& runtime)
    : trainer_(trainer),
      runtime_(runtime),
      work_(cuda::GateWorkspace::create(runtime.layout(), trainer.weights().front().config)),
      grad_work_(cuda::GateGradWorkspace::create(runtime.layout(), trainer.weights().front().config,
                                                 trainer.options().skip_fraction, trainer.options().tail)) {
  const std::vector<GateWeights<float>>& weights = trainer.weights();
  SEER_CHECK(int(weights.size()) == config.layers, "gate training: ", weights.size(), " gates for a model of ",
             config.layers, " layers");
  for (const GateWeights<float>& w : weights)
    gates_.push_back(cuda::DeviceGate::upload(w, config.rope, runtime.layout().max_blocks));
  const GateConfig& gc = weights.front().config;
  const size_t layers = weights.size();
  logits_ = cuda::DeviceBuffer<float>(size_t(runtime.layout().host.map_elements()));
  if (trainer.options().target_power != 1.0) target_ = cuda::DeviceBuffer<float>(logits_.size());
  dwk_ = cuda::DeviceBuffer<float>(layers * size_t(gc.wk_size()));
  dwq_ = cuda::DeviceBuffer<float>(layers * size_t(gc.wq_size()));
  dbias_ = cuda::DeviceBuffer<float>(layers * size_t(gc.bias_size()));
  kl_ = cuda::DeviceBuffer<double>(layers);
  host_dwk_.resize(dwk_.size());
  host_dwq_.resize(dwq_.size());
  host_dbias_.resize(dbias_.size());
  host_kl_.resize(layers);

  forward_.mode = cuda::AttentionMode::ground_truth;
  forward_.gt_pooling = trainer.options().target_pooling;
  forward_.on_layer = [this](const cuda::LayerCapture& c) {
    const size_t l = size_t(c.layer);
    const GateConfig& g = gates_[l].config;
    const cudaStream_t stream = runtime_.stream();
    cuda::gate_forward(c.q_pre, c.k_pre, cuda::DType::bf16, *c.layout, gates_[l], work_, logits_.data(), stream);
    const float* target = c.gt;
    if (trainer_.options().target_power != 1.0) {
      cuda::power_normalize_rows(c.gt, target_.data(), *c.layout, g.heads.q_heads,
                                 float(trainer_.options().target_power), stream);
      target = target_.data();
    }
    cuda::gate_loss_backward(logits_.data(), target, *c.layout, gates_[l], work_, float(trainer_.options().loss_scale),
                             grad_work_, kl_.data() + l, dwk_.data() + l * size_t(g.wk_size()),
                             g.has_q_proj() ? dwq_.data() + l * size_t(g.wq_size()) : nullptr,
                             g.has_block_bias ? dbias_.data() + l * size_t(g.bias_size()) : nullptr, stream);
  };
}

void GpuGateStep::upload_weights() {
  const std::vector<GateWeights<float>>& weights = trainer_.weights();
  for (size_t l = 0; l < gates_.size(); ++l) {
    SEER_CUDA_CHECK(cudaMemcpyAsync(gates_[l].wk.data(), weights[l].wk.data(), weights[l].wk.size() * sizeof(float),
                                    cudaMemcpyHostToDevice, runtime_.stream()));
    if (!weights[l].wq.empty())
      SEER_CUDA_CHECK(cudaMemcpyAsync(gates_[l].wq.data(), weights[l].wq.data(),
                                      weights[l].wq.size() * sizeof(float), cudaMemcpyHostToDevice, runtime_.stream()));
    if (!weights[l].bias.empty())
      SEER_CUDA_CHECK(cudaMemcpyAsync(gates_[l].bias.data(), weights[l].bias.data(),
                                      weights[l].bias.size() * sizeof(float), cudaMemcpyHostToDevice,
                                      runtime_.stream()));
  }
}

double GpuGateStep::run(std::span<const int32_t> tokens) {
  const cudaStream_t stream = runtime_.stream();
  upload_weights();  // the trainer's weights may have changed since construction (resume) or the last step
  SEER_CUDA_CHECK(cudaMemsetAsync(kl_.data(), 0, kl_.size() * sizeof(double), stream));
  runtime_.forward(tokens, forward_);
  SEER_CUDA_CHECK(cudaMemcpyAsync(host_dwk_.data(), dwk_.data(), dwk_.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                  stream));
  if (dwq_.size())
    SEER_CUDA_CHECK(cudaMemcpyAsync(host_dwq_.data(), dwq_.data(), dwq_.size() * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream));
  if (dbias_.size())
    SEER_CUDA_CHECK(cudaMemcpyAsync(host_dbias_.data(), dbias_.data(), dbias_.size() * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream));
  SEER_CUDA_CHECK(cudaMemcpyAsync(host_kl_.data(), kl_.data(), kl_.size() * sizeof(double), cudaMemcpyDeviceToHost,
                                  stream));
  SEER_CUDA_CHECK(cudaStreamSynchronize(stream));
  const GateConfig& g = gates_.front().config;
  for (size_t l = 0; l < gates_.size(); ++l)
    trainer_.add_layer_gradient(int(l), host_kl_[l],
                                std::span(host_dwk_).subspan(l * size_t(g.wk_size()), size_t(g.wk_size())),
                                std::span(host_dwq_).subspan(l * size_t(g.wq_size()), size_t(g.wq_size())),
                                std::span(host_dbias_).subspan(l * size_t(g.bias_size()), size_t(g.bias_size())));
  return trainer_.finish_step();
}

}  // namespace seer
