// A Llama model split over GPUs 0..ranks-1 of this process (model/tensor_shard.h), with the NCCL
// group that joins the parts. Work runs through run(): one thread per rank with its GPU current,
// each making the single-GPU calls (LlamaRuntime, LlamaDecoder, DeviceKvCache) on its own part and
// with its own communicator; the all-reduces inside the forward keep the ranks in step. With one
// rank it is the single-GPU model, run on the caller's thread, through the same code.
#pragma once
#include <functional>
#include <iostream>
#include <memory>
#include <vector>

#include "cuda/communicator.h"
#include "cuda/gate_cuda.h"
#include "cuda/llama_cuda.h"

namespace seer::cuda {

class TensorParallelLlama {
 public:
  // The parts of `weights` (host), each uploaded by its rank's thread. Throws when the machine has
  // fewer GPUs, the model fewer KV heads than ranks, or a part does not fit.
  TensorParallelLlama(const LlamaWeights& weights, int ranks);
  // The parts of DeviceLlama::synthetic(config, seed): the same values as the one-GPU model's.
  TensorParallelLlama(const LlamaConfig& config, uint64_t seed, int ranks);
  ~TensorParallelLlama();  // each part is freed on its own GPU
  TensorParallelLlama(const TensorParallelLlama&) = delete;
  TensorParallelLlama& operator=(const TensorParallelLlama&) = delete;

  int ranks() const { return int(parts_.size()); }
  const LlamaConfig& config() const { return config_; }  // the whole model's
  const DeviceLlama& part(int rank) const { return parts_[size_t(rank)]; }
  const Communicator* communicator(int rank) const { return &group_.rank(rank); }
  int64_t parameter_count() const;  // over all parts, the replicated ones once

  // Runs work(rank) for every rank on its own (persistent) thread, GPU `rank` current, and returns
  // when all have; rethrows the first error (the group aborted first, so no rank waits for ever;
  // the model is unusable after that). Objects made inside (runtimes, caches) belong to that rank's
  // GPU and should be freed inside run() too.
  void run(const std::function<void(int rank)>& work);

  // Destroys each rank's element of `per_rank` (runtimes, caches, gates: one per rank) on that
  // rank's thread, its GPU current. It never throws, so destructors may call it: an error (only
  // after an earlier one) is reported on stderr.
  template <typename T>
  void release(std::vector<T>& per_rank) noexcept;

  // The rank's parts of one gate per layer, on its GPU (call from inside run()).
  std::vector<DeviceGate> upload_gates(int rank, const std::vector<GateWeights<float>>& gates,
                                       int64_t max_blocks) const;

 private:
  explicit TensorParallelLlama(const LlamaConfig& config, int ranks);
  LlamaConfig config_;  // checked first: a split that cannot be made starts no NCCL group
  CommunicatorGroup group_;
  RankThreads threads_;
  std::vector<DeviceLlama> parts_;
};

template <typename T>
void TensorParallelLlama::release(std::vector<T>& per_rank) noexcept {
  try {
    run([&](int r) { [[maybe_unused]] const T gone = std::move(per_rank[size_t(r)]); });
  } catch (const std::exception& e) {
    std::cerr << "seer: freeing GPU state failed: " << e.what() << "\n";
  }
}

}  // namespace seer::cuda
