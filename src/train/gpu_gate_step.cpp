#include "train/gpu_gate_step.h"

#include "core/error.h"

namespace seer {
namespace {

// A gate layer's tensors by kind, in Variant's order: W_k, W_q (empty without it), the block bias
// (empty without it).
constexpr std::vector<float> GateWeights<float>::*kHostTensor[] = {&GateWeights<float>::wk, &GateWeights<float>::wq,
                                                                    &GateWeights<float>::bias};
constexpr cuda::DeviceBuffer<float> cuda::DeviceGate::*kDeviceTensor[] = {&cuda::DeviceGate::wk,
                                                                           &cuda::DeviceGate::wq,
                                                                           &cuda::DeviceGate::bias};
constexpr size_t kKinds = 3;
constexpr size_t kBiasKind = 2;

size_t kind_size(const GateConfig& g, size_t kind) {
  return size_t(kind == 0 ? g.wk_size() : kind == 1 ? g.wq_size() : g.bias_size());
}

}  // namespace

GpuGateStep::GpuGateStep(std::vector<GateTrainer*> trainers, const LlamaConfig& config, cuda::LlamaRuntime& runtime,
                         const cuda::Communicator* data_parallel)
    : runtime_(runtime), data_parallel_(data_parallel) {
  SEER_CHECK(!trainers.empty(), "gate training: no gates to train");
  for (GateTrainer* trainer : trainers) {
    SEER_CHECK(trainer != nullptr, "gate training: null trainer");
    SEER_CHECK(trainer->options().target_pooling == trainers.front()->options().target_pooling,
               "gates trained on one forward must share its ground truth's pooling");
    const std::vector<GateWeights<float>>& weights = trainer->weights();
    SEER_CHECK(int(weights.size()) == config.layers, "gate training: ", weights.size(), " gates for a model of ",
               config.layers, " layers");
    const GateConfig& gc = weights.front().config;
    for (const GateWeights<float>& w : weights)  // the gradient and moment buffers are [layers][one size]
      SEER_CHECK(w.wk.size() == weights.front().wk.size() && w.wq.size() == weights.front().wq.size() &&
                     w.bias.size() == weights.front().bias.size(),
                 "gate training on the GPU: every layer's gate must have one shape");
    const cuda::DeviceLayout& layout = runtime.layout();
    const TrainOptions& options = trainer->options();
    Variant v{trainer,
              {},
              cuda::GateWorkspace::create(layout, gc),
              cuda::GateGradWorkspace::create(layout, gc, options.skip_fraction, options.tail),
              cuda::DeviceBuffer<float>(size_t(layout.host.map_elements())),
              {},
              {},
              {},
              cuda::DeviceBuffer<float>(options.target_power != 1.0 ? size_t(layout.host.map_elements()) : 0),
              cuda::DeviceBuffer<double>(weights.size()),
              {},
              std::vector<double>(weights.size()),
              std::nullopt};
    for (const GateWeights<float>& w : weights)
      v.gates.push_back(cuda::DeviceGate::upload(w, config.rope, layout.max_blocks));
    std::vector<cuda::AdamWTensor> tensors;
    for (size_t kind = 0; kind < kKinds; ++kind) {
      const size_t size = kind_size(gc, kind);
      for (auto* buffers : {&v.grad, &v.exp_avg, &v.exp_avg_sq})
        (*buffers)[kind] = cuda::DeviceBuffer<float>(weights.size() * size);
      if (size == 0) continue;
      for (size_t l = 0; l < weights.size(); ++l)
        tensors.push_back({(v.gates[l].*kDeviceTensor[kind]).data(), v.grad[kind].data() + l * size,
                           v.exp_avg[kind].data() + l * size, v.exp_avg_sq[kind].data() + l * size, int64_t(size),
                           kind == kBiasKind ? options.bias_lr_scale : 1.0});
    }
    v.adamw = cuda::DeviceAdamW(tensors);
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
  float* grad[kKinds];
  for (size_t kind = 0; kind < kKinds; ++kind)
    grad[kind] = kind_size(g, kind) ? v.grad[kind].data() + l * kind_size(g, kind) : nullptr;
  cuda::gate_loss_backward(v.logits.data(), target, *c.layout, v.gates[l], v.work, float(options.loss_scale),
                           v.grad_work, v.kl.data() + l, grad[0], grad[1], grad[2], stream);
}

void GpuGateStep::upload_state(Variant& v) {
  const GateTrainer& t = *v.trainer;
  const GateConfig& g = v.gates.front().config;
  const auto upload = [&](const std::vector<float>& from, float* to) {
    if (!from.empty())
      SEER_CUDA_CHECK(cudaMemcpyAsync(to, from.data(), from.size() * sizeof(float), cudaMemcpyHostToDevice,
                                      runtime_.stream()));
  };
  for (size_t l = 0; l < v.gates.size(); ++l)
    for (size_t kind = 0; kind < kKinds; ++kind) {
      const size_t at = l * kind_size(g, kind);
      upload(t.weights()[l].*kHostTensor[kind], (v.gates[l].*kDeviceTensor[kind]).data());
      upload(t.exp_avg()[l].*kHostTensor[kind], v.exp_avg[kind].data() + at);
      upload(t.exp_avg_sq()[l].*kHostTensor[kind], v.exp_avg_sq[kind].data() + at);
    }
  // The host vectors may change once this returns (the trainer's next state).
  SEER_CUDA_CHECK(cudaStreamSynchronize(runtime_.stream()));
}

void GpuGateStep::sync_host() {
  SEER_CUDA_CHECK(cudaStreamSynchronize(runtime_.stream()));
  for (Variant& v : variants_) {
    if (v.device_version != v.trainer->state_version()) {
      check_not_stepped_elsewhere(v);
      continue;  // the trainer's own state is the newer (a resume): the next step uploads it
    }
    if (v.trainer->host_state_current()) continue;  // the two are the same
    const GateConfig& g = v.gates.front().config;
    std::vector<GateWeights<float>> weights, exp_avg, exp_avg_sq;
    for (size_t l = 0; l < v.gates.size(); ++l) {
      for (auto* layers : {&weights, &exp_avg, &exp_avg_sq}) layers->push_back(GateWeights<float>::zeros(g));
      for (size_t kind = 0; kind < kKinds; ++kind) {
        const size_t size = kind_size(g, kind), at = l * size;
        const auto download = [&](const float* from, std::vector<float>& to) {
          if (size) SEER_CUDA_CHECK(cudaMemcpy(to.data(), from, size * sizeof(float), cudaMemcpyDeviceToHost));
        };
        download((v.gates[l].*kDeviceTensor[kind]).data(), weights[l].*kHostTensor[kind]);
        download(v.exp_avg[kind].data() + at, exp_avg[l].*kHostTensor[kind]);
        download(v.exp_avg_sq[kind].data() + at, exp_avg_sq[l].*kHostTensor[kind]);
      }
    }
    v.trainer->set_state(std::move(weights), std::move(exp_avg), std::move(exp_avg_sq));
    v.device_version = v.trainer->state_version();
  }
}

void GpuGateStep::check_not_stepped_elsewhere(const Variant& v) const {
  SEER_CHECK(v.trainer->host_state_current(), "gate training: a trainer at step ", v.trainer->step(),
             " was stepped by another GpuGateStep, whose device holds its weights");
}

std::vector<double> GpuGateStep::run(std::span<const int32_t> tokens) {
  const cudaStream_t stream = runtime_.stream();
  for (Variant& v : variants_) {
    if (v.device_version != v.trainer->state_version()) {  // the first step here, or after a resume
      check_not_stepped_elsewhere(v);
      upload_state(v);
      v.device_version = v.trainer->state_version();
    }
    SEER_CUDA_CHECK(cudaMemsetAsync(v.kl.data(), 0, v.kl.size() * sizeof(double), stream));
  }
  runtime_.forward(tokens, forward_);
  for (Variant& v : variants_) {
    if (data_parallel_) {  // every rank's gradient and loss, averaged: all take the same step
      for (size_t kind = 0; kind < kKinds; ++kind)
        data_parallel_->all_reduce_mean(v.grad[kind].data(), int64_t(v.grad[kind].size()), stream);
      data_parallel_->all_reduce_mean(v.kl.data(), int64_t(v.kl.size()), stream);
    }
    v.adamw.step(v.trainer->adamw_step(), stream);
    SEER_CUDA_CHECK(cudaMemcpyAsync(v.host_kl.data(), v.kl.data(), v.kl.size() * sizeof(double),
                                    cudaMemcpyDeviceToHost, stream));
  }
  SEER_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> losses;
  for (Variant& v : variants_) {
    for (size_t l = 0; l < v.gates.size(); ++l) v.trainer->add_layer_kl(int(l), v.host_kl[l]);
    losses.push_back(v.trainer->finish_step_updated_elsewhere());
    v.device_version = v.trainer->state_version();
  }
  return losses;
}

}  // namespace seer
