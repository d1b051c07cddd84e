// AdamW on the device (train/adamw.h is the update and its CPU reference): the gates' weights,
// moments and gradients stay on the GPU, so a training step moves only its losses to the host.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>

#include "cuda/device_buffer.h"
#include "train/adamw.h"

namespace seer::cuda {

// One tensor of an update: device arrays of n floats each, learning at the step's lr × lr_scale.
struct AdamWTensor {
  float* w;
  float* g;  // zeroed by the update
  float* m;
  float* v;
  int64_t n;
  double lr_scale;
};

// The tensors one launch updates, described once (their arrays do not move) and kept on the device.
class DeviceAdamW {
 public:
  DeviceAdamW() = default;
  explicit DeviceAdamW(std::span<const AdamWTensor> tensors);
  // adamw_update (train/adamw.h) on every element of every tensor, in double as on the CPU.
  void step(const AdamWStep& s, cudaStream_t stream) const;

 private:
  DeviceBuffer<AdamWTensor> tensors_;
  int64_t largest_ = 0;
};

}  // namespace seer::cuda
