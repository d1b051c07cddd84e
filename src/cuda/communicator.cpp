#include "cuda/communicator.h"

#include <dlfcn.h>
#include <nccl.h>

#include <cstdlib>

#include "cuda/cuda_check.h"

namespace seer::cuda {
namespace {

// The NCCL entry points seer uses, resolved from libnccl.so.2 once.
struct Nccl {
  decltype(&ncclCommInitAll) comm_init_all = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclCommAbort) comm_abort = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  decltype(&ncclGetVersion) get_version = nullptr;

  static const Nccl& get() {
    static const Nccl nccl = [] {
      void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
      if (!lib)
        fail("running on several GPUs needs NCCL, and libnccl.so.2 could not be loaded (", dlerror(),
             "): install NCCL or add its folder to LD_LIBRARY_PATH");
      Nccl n;
      const auto resolve = [lib](auto& fn, const char* name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
        if (!fn) fail("libnccl.so.2 lacks ", name, " (NCCL 2.10 or newer is needed)");
      };
      resolve(n.comm_init_all, "ncclCommInitAll");
      resolve(n.comm_destroy, "ncclCommDestroy");
      resolve(n.comm_abort, "ncclCommAbort");
      resolve(n.all_reduce, "ncclAllReduce");
      resolve(n.error_string, "ncclGetErrorString");
      resolve(n.get_version, "ncclGetVersion");
      return n;
    }();
    return nccl;
  }
};

void check(ncclResult_t status, const char* what) {
  if (status != ncclSuccess) fail("NCCL ", what, " failed: ", Nccl::get().error_string(status));
}

void all_reduce(const Communicator& c, void* comm, const std::atomic<bool>* aborted, void* data, int64_t count,
                ncclDataType_t type, ncclRedOp_t op, cudaStream_t stream) {
  if (c.ranks() == 1 || count == 0) return;
  SEER_CHECK(!aborted->load(), "the GPUs' NCCL group was aborted after an error on one of them");
  check(Nccl::get().all_reduce(data, data, size_t(count), type, op, static_cast<ncclComm_t>(comm), stream),
        "all-reduce");
}

// GPUs 0..ranks-1 exist.
void check_gpus(int ranks) {
  SEER_CHECK(ranks >= 1, "the number of GPUs must be positive, got ", ranks);
  const int devices = device_count();
  SEER_CHECK(ranks <= devices, ranks, ranks == 1 ? " GPU" : " GPUs", " asked for, this machine has ", devices,
             devices == 0 ? " (no CUDA GPU found)" : "");
}

}  // namespace

void Communicator::all_reduce_sum(float* data, int64_t count, cudaStream_t stream) const {
  all_reduce(*this, comm_, aborted_, data, count, ncclFloat32, ncclSum, stream);
}
void Communicator::all_reduce_mean(float* data, int64_t count, cudaStream_t stream) const {
  all_reduce(*this, comm_, aborted_, data, count, ncclFloat32, ncclAvg, stream);
}
void Communicator::all_reduce_mean(double* data, int64_t count, cudaStream_t stream) const {
  all_reduce(*this, comm_, aborted_, data, count, ncclFloat64, ncclAvg, stream);
}

CommunicatorGroup::CommunicatorGroup(int ranks) {
  check_gpus(ranks);
  ranks_.resize(size_t(ranks));
  for (int r = 0; r < ranks; ++r) {
    ranks_[size_t(r)].rank_ = r;
    ranks_[size_t(r)].ranks_ = ranks;
    ranks_[size_t(r)].aborted_ = &aborted_;
  }
  if (ranks == 1) return;  // collectives over one rank are no-ops: NCCL is not needed
  // NVLink multicast can take a shared host's GPUs out of service; leave it off unless told.
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  std::vector<ncclComm_t> comms(static_cast<size_t>(ranks));
  std::vector<int> devs(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) devs[size_t(r)] = r;
  check(Nccl::get().comm_init_all(comms.data(), ranks, devs.data()), "initialization");
  for (int r = 0; r < ranks; ++r) ranks_[size_t(r)].comm_ = comms[size_t(r)];
}

CommunicatorGroup::~CommunicatorGroup() {
  if (aborted_) return;
  for (Communicator& c : ranks_)
    if (c.comm_) Nccl::get().comm_destroy(static_cast<ncclComm_t>(c.comm_));
}

void CommunicatorGroup::abort() {
  if (aborted_.exchange(true)) return;
  for (Communicator& c : ranks_)
    if (c.comm_) Nccl::get().comm_abort(static_cast<ncclComm_t>(c.comm_));
}

std::string CommunicatorGroup::version() {
  int v = 0;
  check(Nccl::get().get_version(&v), "version query");
  // NCCL_VERSION(X, Y, Z) is X * 10000 + Y * 100 + Z from 2.9 on.
  return "NCCL " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

RankThreads::RankThreads(int ranks) : ranks_(ranks) {
  check_gpus(ranks);
  if (ranks > 1)
    for (int r = 0; r < ranks; ++r) threads_.emplace_back([this, r] { serve(r); });
}

RankThreads::~RankThreads() {
  {
    const std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void RankThreads::serve(int rank) {
  uint64_t seen = 0;
  for (;;) {
    std::unique_lock lock(mutex_);
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    const std::function<void(int)>& work = *work_;
    lock.unlock();
    std::exception_ptr error;
    try {
      SEER_CUDA_CHECK(cudaSetDevice(rank));
      work(rank);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    const bool first_error = error && !error_;
    if (first_error) error_ = error;
    if (--pending_ == 0 || first_error) done_.notify_all();
  }
}

void RankThreads::run(const std::function<void(int rank)>& work, CommunicatorGroup* group) {
  if (ranks_ == 1) {  // on the caller's thread: one GPU needs no threads
    SEER_CUDA_CHECK(cudaSetDevice(0));
    work(0);
    return;
  }
  std::unique_lock lock(mutex_);
  work_ = &work;
  error_ = nullptr;
  pending_ = ranks_;
  ++generation_;
  wake_.notify_all();
  // The first error aborts the group at once: the other ranks may be waiting for the failed one
  // in a collective, and would never return.
  bool aborted = false;
  for (;;) {
    done_.wait(lock, [&] { return pending_ == 0 || (error_ && group && !aborted); });
    if (pending_ == 0) break;
    aborted = true;
    lock.unlock();
    group->abort();
    lock.lock();
  }
  if (error_) std::rethrow_exception(error_);
}

void run_on_ranks(int ranks, const std::function<void(int rank)>& work, CommunicatorGroup* group) {
  RankThreads(ranks).run(work, group);
}

int device_count() {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace seer::cuda
