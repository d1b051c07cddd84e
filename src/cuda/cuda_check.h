// CUDA error checks that throw seer::Error with the call and its message.
#pragma once
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>

#include "core/error.h"

#define SEER_CUDA_CHECK(call)                                                                      \
  do {                                                                                             \
    const cudaError_t seer_status_ = (call);                                                       \
    if (seer_status_ != cudaSuccess)                                                               \
      ::seer::fail("CUDA error at ", __FILE__, ":", __LINE__, ": ", #call, ": ",                  \
                   cudaGetErrorString(seer_status_));                                              \
  } while (0)

// After a kernel launch: catches bad launch configurations immediately (not asynchronous faults).
#define SEER_CUDA_CHECK_LAUNCH() SEER_CUDA_CHECK(cudaGetLastError())

namespace seer::cuda {

// Runs `configure` on the current GPU unless it already ran there for this call site, whose
// `configured` holds one bit per GPU: kernel attributes (cudaFuncSetAttribute) are per device, and
// a process may drive several (cuda/tensor_parallel.h). Two threads on one GPU may both run it;
// configuring is idempotent.
template <typename Configure>
void once_per_device(std::atomic<uint64_t>& configured, Configure configure) {
  int device = 0;
  SEER_CUDA_CHECK(cudaGetDevice(&device));
  SEER_CHECK(device < 64, "GPU ", device, ": seer drives GPUs 0 to 63");
  const uint64_t bit = uint64_t(1) << device;
  if (configured.load(std::memory_order_acquire) & bit) return;
  configure();
  configured.fetch_or(bit, std::memory_order_release);
}

// The current device's multiprocessor count, looked up once per process: seer's several-GPU runs
// assume the GPUs of one machine are alike (as on the H200 machines it runs on).
inline int sm_count() {
  static const int count = [] {
    int device = 0, sms = 0;
    SEER_CUDA_CHECK(cudaGetDevice(&device));
    SEER_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
  }();
  return count;
}

}  // namespace seer::cuda
