// CUDA error checks that throw seer::Error with the call and its message.
#pragma once
#include <cuda_runtime_api.h>

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

// The current device's multiprocessor count, looked up once per process (seer runs on one GPU).
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
