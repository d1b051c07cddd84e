// Owning device allocation (cudaMalloc), move-only. Allocations happen when plans are built,
// never on the per-call hot path.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "cuda/cuda_check.h"

namespace seer::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : count_(count) {
    if (count == 0) return;
    const cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&data_), count * sizeof(T));
    if (status != cudaSuccess) {
      cudaGetLastError();  // clear the (non-sticky) error so later calls are unaffected
      if (status != cudaErrorMemoryAllocation)
        fail("cannot allocate GPU memory: ", cudaGetErrorString(status), " (is there a CUDA GPU?)");
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      fail("out of GPU memory: cannot allocate ", count * sizeof(T) / (1 << 20), " MiB (", free_bytes / (1 << 20),
           " MiB free of ", total_bytes / (1 << 20), " MiB)");
    }
  }
  // Complete on return: a copy from pageable memory may still be in flight when cudaMemcpy returns,
  // and the work that reads the buffer may run on a non-blocking stream, which does not wait for
  // the default stream.
  static DeviceBuffer upload(std::span<const T> host) {
    DeviceBuffer buffer(host.size());
    if (!host.empty()) {
      SEER_CUDA_CHECK(cudaMemcpy(buffer.data_, host.data(), host.size_bytes(), cudaMemcpyHostToDevice));
      SEER_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    }
    return buffer;
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    if (count_) SEER_CUDA_CHECK(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(count_, other.count_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (data_) cudaFree(data_);
  }

  T* data() const { return data_; }
  size_t size() const { return count_; }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace seer::cuda
