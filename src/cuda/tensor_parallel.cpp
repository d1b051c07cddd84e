#include "cuda/tensor_parallel.h"

namespace seer::cuda {

namespace {

const LlamaConfig& splittable(const LlamaConfig& config, int ranks) {
  tensor_shard(config, 0, ranks);  // throws for a split that cannot be made
  return config;
}

}  // namespace

TensorParallelLlama::TensorParallelLlama(const LlamaConfig& config, int ranks)
    : config_(splittable(config, ranks)), group_(ranks), threads_(ranks), parts_(size_t(ranks)) {}

TensorParallelLlama::TensorParallelLlama(const LlamaWeights& weights, int ranks)
    : TensorParallelLlama(weights.config, ranks) {
  run([&](int r) { parts_[size_t(r)] = DeviceLlama::upload(weights, tensor_shard(weights.config, r, ranks)); });
}

TensorParallelLlama::TensorParallelLlama(const LlamaConfig& config, uint64_t seed, int ranks)
    : TensorParallelLlama(config, ranks) {
  run([&](int r) { parts_[size_t(r)] = DeviceLlama::synthetic(config, seed, tensor_shard(config, r, ranks)); });
}

TensorParallelLlama::~TensorParallelLlama() { release(parts_); }

int64_t TensorParallelLlama::parameter_count() const {
  int64_t n = 0;
  for (const DeviceLlama& p : parts_) n += p.parameter_count();
  // embedding, LM head, final and per-layer norms are on every rank
  const DeviceLlama& p = parts_.front();
  int64_t replicated = int64_t(p.embed.size() + p.lm_head.size() + p.final_norm.size());
  for (const DeviceLlama::Layer& l : p.layers) replicated += int64_t(l.attn_norm.size() + l.ffn_norm.size());
  return n - (ranks() - 1) * replicated;
}

void TensorParallelLlama::run(const std::function<void(int rank)>& work) { threads_.run(work, &group_); }

std::vector<DeviceGate> TensorParallelLlama::upload_gates(int rank, const std::vector<GateWeights<float>>& gates,
                                                          int64_t max_blocks) const {
  const TensorShard& shard = parts_[size_t(rank)].shard;
  std::vector<DeviceGate> out;
  for (const GateWeights<float>& g : gates)
    out.push_back(DeviceGate::upload(ranks() == 1 ? g : shard_gate(g, shard), config_.rope, max_blocks));
  return out;
}

}  // namespace seer::cuda
