// Collectives between the GPUs of one process, through NCCL, one thread per GPU.
//
// NCCL is loaded when the first group of two or more ranks is made (dlopen of libnccl.so.2, found
// through the usual library path), so that seer starts and runs on one GPU where NCCL is absent.
// NVLink multicast (NVLS) stays off: CommunicatorGroup sets NCCL_NVLS_ENABLE=0 unless the
// environment already says otherwise.
#pragma once
#include <cuda_runtime_api.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace seer::cuda {

// One rank's end of a group: collectives are enqueued on the caller's stream, on the rank's GPU,
// and every rank must make the same calls in the same order. After the group was aborted they
// throw.
class Communicator {
 public:
  int rank() const { return rank_; }
  int ranks() const { return ranks_; }
  // In place, over every rank: the sum, or the mean.
  void all_reduce_sum(float* data, int64_t count, cudaStream_t stream) const;
  void all_reduce_mean(float* data, int64_t count, cudaStream_t stream) const;
  void all_reduce_mean(double* data, int64_t count, cudaStream_t stream) const;

 private:
  friend class CommunicatorGroup;
  void* comm_ = nullptr;  // ncclComm_t
  int rank_ = 0, ranks_ = 1;
  const std::atomic<bool>* aborted_ = nullptr;  // the group's
};

// Rank r on GPU r, for r in [0, ranks). Throws when the process sees fewer GPUs or NCCL cannot be
// loaded or initialized.
class CommunicatorGroup {
 public:
  explicit CommunicatorGroup(int ranks);
  ~CommunicatorGroup();
  CommunicatorGroup(const CommunicatorGroup&) = delete;
  CommunicatorGroup& operator=(const CommunicatorGroup&) = delete;

  int ranks() const { return int(ranks_.size()); }
  const Communicator& rank(int r) const { return ranks_[size_t(r)]; }
  // Aborts every rank's pending collectives (after one rank failed, the others would wait for it
  // for ever), from any thread, as a watchdog would; later collectives throw. The group is
  // unusable afterwards.
  void abort();
  // "NCCL 2.28.9", as loaded.
  static std::string version();

 private:
  std::vector<Communicator> ranks_;
  std::atomic<bool> aborted_{false};
};

// One persistent thread per rank, GPU `rank` current on it, so that a call (a decode step, say)
// costs a wake-up rather than starting threads. With one rank there is no thread: work runs on the
// caller's, GPU 0 current.
class RankThreads {
 public:
  explicit RankThreads(int ranks);
  ~RankThreads();
  RankThreads(const RankThreads&) = delete;
  RankThreads& operator=(const RankThreads&) = delete;

  // Runs work(rank) for every rank and returns when all have returned. The first error is
  // rethrown; after an error the group (when given) is aborted, so that ranks waiting in a
  // collective return too. One call at a time.
  void run(const std::function<void(int rank)>& work, CommunicatorGroup* group = nullptr);

 private:
  void serve(int rank);
  int ranks_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* work_ = nullptr;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
};

// RankThreads(ranks).run(work, group): threads started for this one call.
void run_on_ranks(int ranks, const std::function<void(int rank)>& work, CommunicatorGroup* group = nullptr);

// GPUs this process can see.
int device_count();

}  // namespace seer::cuda
